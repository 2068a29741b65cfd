"""Metrics of the paper (Tables 2 and 3), the QUBIQ score and calibration, as pure functions.

Conventions (SPEC.md, "Metrics and their conventions"):

- Thresholds are ``THRESHOLDS = np.arange(1, 10) / 10`` (exactly 0.1 ... 0.9); a map is
  binarised with ``map >= t``. The comparison is made at the map's own floating precision
  (thresholds cast to float32 for float32 maps), so that a soft label k/A stored as float32
  ties with ``t`` exactly when k/A = t mathematically (float32 7/10 is 0.69999999 and still
  counts as >= 0.7).
- Both masks empty: Dice = IoU = precision = recall = 1.
- Prediction empty, truth not: precision = 0 (no predicted pixel is correct); truth empty,
  prediction not: recall = 0; Dice = IoU = 0 whenever exactly one mask is empty.
"""

from __future__ import annotations

import numpy as np

from softseg._overlap import as_map, check_same_shape, overlap_ratios, threshold_bins, threshold_counts

THRESHOLDS = np.arange(1, 10) / 10


def qubiq_score(prob: np.ndarray, soft: np.ndarray) -> float:
    """QUBIQ score: mean over t in 0.1 ... 0.9 of Dice(prob >= t, soft >= t).

    ``prob`` and ``soft`` are maps of the same shape (2D or 3D, any float dtype) with values
    in [0, 1]. At a threshold where both binarised masks are empty Dice counts as 1, where
    exactly one is empty as 0. Raises :class:`SoftsegError` on a shape mismatch or on values
    outside [0, 1] / NaN.
    """
    prob = as_map(prob, "prediction")
    soft = as_map(soft, "soft label")
    check_same_shape(prob, soft, ("prediction", "soft label"))
    tp, pred_pos, gt_pos = threshold_counts(
        threshold_bins(prob, THRESHOLDS), threshold_bins(soft, THRESHOLDS), len(THRESHOLDS)
    )
    return float(overlap_ratios(tp, pred_pos, gt_pos)["dice"].mean())
