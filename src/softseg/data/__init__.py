"""Files on disk -> cases -> soft labels: file formats, dataset layouts, soft labels, the checker, synthetic data."""
