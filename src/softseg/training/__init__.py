"""Configuration -> run folder: augmentation, batches, losses, the loop, DDP (the model itself is softseg.model)."""
