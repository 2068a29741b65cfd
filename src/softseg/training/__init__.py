"""Configuration -> run folder: config, model factory, preprocessing and augmentation, batches, the loop, runtime, DDP."""
