"""Evaluation result -> one self-contained HTML file; renders numbers, computes none."""
