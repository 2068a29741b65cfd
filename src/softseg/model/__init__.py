"""The model core every step shares: configuration, networks (2D smp, 3D MONAI), checkpoints, model input preparation, precision and device, the run's mode and its output head."""
