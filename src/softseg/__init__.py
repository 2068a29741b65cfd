"""softseg: segmentation from multi-rater soft labels, one calibrated probability map per image."""

__version__ = "0.1.0"
