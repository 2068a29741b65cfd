"""Compositions of the steps: the pipeline, demo, compare, reproduce, folds, paper tables."""
