"""Metrics of the paper (Tables 2 and 3), the QUBIQ score and calibration, as pure functions.

Conventions (SPEC.md, "Metrics and their conventions"), stated once here and pinned by
tests/test_metrics.py:

- Thresholds are ``THRESHOLDS = np.arange(1, 10) / 10`` (exactly 0.1 ... 0.9); a map is
  binarised with ``map >= t``. The comparison is made at the map's own floating precision
  (thresholds cast to float32 for float32 maps, float64 maps stay float64), so that a soft
  label k/A stored as float32 ties with ``t`` exactly when k/A = t (float32 7/10 is
  0.69999999 and still counts as >= 0.7).
- Masks are bool arrays of any dimension (2D, 3D); two masks compared must share a shape.
- Both masks empty: Dice = IoU = precision = recall = 1, HD95 = 0.
- Prediction empty, truth not: precision = 0 (no predicted pixel is correct), recall = 0.
  Truth empty, prediction not: recall = 0, precision = 0. Dice = IoU = 0 in both cases.
- HD95: border pixels (mask XOR its erosion by the cross element, outside the image is
  background), exact Euclidean distance scaled by ``spacing`` (one value per axis, in the
  array's axis order; default 1) from each border pixel to the nearest border pixel of the
  other mask, 95th percentile with linear interpolation per direction, and the MAXIMUM of
  the two directions (MONAI / MetricsReloaded / surface-distance; medpy pools both
  directions and comes out lower). Exactly one mask empty: undefined, returned as NaN
  (status ``"one_empty"``); never dropped or zeroed.
- Table 3 distances, prediction binarised at 0.5: d(x, y) = 1 - IoU(x, y), d(empty, empty) = 0;
  D²_GED = 2 E_y[d(y, ŷ)] - E_{y≠y'}[d(y, y')] over the raters y and distinct rater pairs.
- Calibration against the soft label g: ``n_bins`` equal-width bins of the predicted
  probability p (bin i holds i/n <= p < (i+1)/n, the last bin also holds p = 1, edges
  compared like thresholds); ECE = sum over bins of (pixels in bin / all pixels) *
  |mean p - mean g|, the "accuracy" of a bin being its mean soft label; Brier = mean (p - g)².
  All pixels of the image count, background included.
- Multi-class calibration, over all C classes (background included) of a softmax prediction
  p against the class distribution g (both ``(C, *spatial)``, each pixel summing to 1):
  class-wise ECE = (1/C) sum_c ECE(p_c, g_c), each class binned as above (Metrics
  Reloaded's cwECE, Kumar et al. 2019, with the soft label as the reference); multi-class
  Brier = mean over pixels of sum_c (p_c - g_c)², in [0, 2] (Metrics Reloaded's BS).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from softseg.evaluation._overlap import (
    as_map,
    check_same_shape,
    counts_from_joint,
    joint_histogram,
    overlap_ratios,
    pairwise_intersections,
    threshold_bins,
    threshold_counts,
)
from softseg.evaluation._surface import border as _border
from softseg.evaluation._surface import nested_hd95
from softseg.errors import SoftsegError

THRESHOLDS = np.arange(1, 10) / 10
FINE_THRESHOLDS = np.arange(1, 100) / 100
HD95_STATUSES = ("ok", "both_empty", "one_empty")
ECE_BINS = 10


def _as_mask(mask: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.dtype != np.bool_:
        raise SoftsegError(
            f"{name}: expected a bool mask, got dtype {array.dtype}; binarise it first "
            "(e.g. prob >= 0.5)"
        )
    return array


def _as_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim or not all(np.isfinite(s) and s > 0 for s in values):
        raise SoftsegError(
            f"spacing {values}: expected {ndim} positive finite values, one per spatial axis "
            "of the mask, in the array's axis order"
        )
    return values


def _mask_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    pred = _as_mask(pred, "prediction")
    truth = _as_mask(truth, "truth")
    check_same_shape(pred, truth, ("prediction", "truth"))
    tp = int(np.count_nonzero(pred & truth))
    return tp, int(np.count_nonzero(pred)), int(np.count_nonzero(truth))


def _ratio(name: str, pred: np.ndarray, truth: np.ndarray) -> float:
    return float(overlap_ratios(*_mask_counts(pred, truth))[name])


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice 2|P∩T| / (|P| + |T|) of two bool masks of the same shape; 1 if both are empty."""
    return _ratio("dice", pred, truth)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """IoU |P∩T| / |P∪T| of two bool masks of the same shape; 1 if both are empty."""
    return _ratio("iou", pred, truth)


def precision(pred: np.ndarray, truth: np.ndarray) -> float:
    """|P∩T| / |P|; 1 if both are empty, 0 if only the prediction is empty."""
    return _ratio("precision", pred, truth)


def recall(pred: np.ndarray, truth: np.ndarray) -> float:
    """|P∩T| / |T|; 1 if both are empty, 0 if only the truth is empty."""
    return _ratio("recall", pred, truth)


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """Symmetric 95th-percentile Hausdorff distance of two bool masks, in spacing units.

    0 if both masks are empty or identical, NaN if exactly one is empty (undefined). See the
    module docstring for the border, distance and percentile conventions.
    """
    tp, pred_pos, gt_pos = _mask_counts(pred, truth)
    step = _as_spacing(spacing, np.ndim(pred))
    counts = (np.array([tp]), np.array([pred_pos]), np.array([gt_pos]))
    return float(
        nested_hd95(
            np.asarray(pred, np.uint8), np.asarray(truth, np.uint8), *counts, spacing=step
        )[0]
    )


def border(mask: np.ndarray) -> np.ndarray:
    """Border pixels of a bool mask (2D or 3D): mask XOR its erosion by the cross element.

    Pixels outside the array count as background, so foreground on the array edge is border.
    """
    return _border(_as_mask(mask, "mask"))


def hd95_status(pred_pos: np.ndarray, gt_pos: np.ndarray) -> np.ndarray:
    """Per threshold ``"ok"``, ``"both_empty"`` (HD95 = 0) or ``"one_empty"`` (HD95 NaN)."""
    pred_empty, gt_empty = np.asarray(pred_pos) == 0, np.asarray(gt_pos) == 0
    return np.where(
        pred_empty & gt_empty, "both_empty", np.where(pred_empty | gt_empty, "one_empty", "ok")
    )


def _quantised(prob: np.ndarray, soft: np.ndarray, thresholds: np.ndarray):
    prob = as_map(prob, "prediction")
    soft = as_map(soft, "soft label")
    check_same_shape(prob, soft, ("prediction", "soft label"))
    pred_bins = threshold_bins(prob, thresholds)
    gt_bins = threshold_bins(soft, thresholds)
    return prob, soft, pred_bins, gt_bins


def qubiq_score(prob: np.ndarray, soft: np.ndarray) -> float:
    """QUBIQ score: mean over t in 0.1 ... 0.9 of Dice(prob >= t, soft >= t).

    ``prob`` and ``soft`` are maps of the same shape (2D or 3D, any float dtype) with values
    in [0, 1]. At a threshold where both binarised masks are empty Dice counts as 1, where
    exactly one is empty as 0. Raises :class:`SoftsegError` on a shape mismatch or on values
    outside [0, 1] / NaN.
    """
    _, _, pred_bins, gt_bins = _quantised(prob, soft, THRESHOLDS)
    counts = threshold_counts(pred_bins, gt_bins, len(THRESHOLDS))
    return float(overlap_ratios(*counts)["dice"].mean())


def threshold_curves(
    prob: np.ndarray, soft: np.ndarray, thresholds: np.ndarray = FINE_THRESHOLDS
) -> dict[str, np.ndarray]:
    """Precision, recall, Dice and IoU of ``prob >= t`` against ``soft >= t`` for every t.

    ``thresholds`` must be increasing (default 0.01 ... 0.99). Returns ``(len(thresholds),)``
    float64 arrays under "dice", "iou", "precision", "recall", with the empty-mask rules of
    the module docstring, plus int64 counts "tp", "pred_pos", "gt_pos". One joint histogram
    of threshold bins serves every threshold.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0 or np.any(np.diff(thresholds) <= 0):
        raise SoftsegError(f"thresholds {thresholds}: expected a non-empty increasing 1-D sequence")
    _, _, pred_bins, gt_bins = _quantised(prob, soft, thresholds)
    tp, pred_pos, gt_pos = threshold_counts(pred_bins, gt_bins, len(thresholds))
    ratios = overlap_ratios(tp, pred_pos, gt_pos)
    return {**ratios, "tp": tp, "pred_pos": pred_pos, "gt_pos": gt_pos}


def _calibration_from_bins(
    prob: np.ndarray, soft: np.ndarray, bins: np.ndarray, n_bins: int
) -> dict:
    p = prob.ravel()
    gap = p.astype(np.float64) - soft.ravel()  # per pixel p - g, in float64
    counts = np.bincount(bins, minlength=n_bins)
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    sum_gap = np.bincount(bins, weights=gap, minlength=n_bins)  # = count * (mean p - mean g)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_p = np.where(counts > 0, sum_p / counts, np.nan)
        mean_g = np.where(counts > 0, (sum_p - sum_gap) / counts, np.nan)
    return {
        "ece": float(np.abs(sum_gap).sum() / p.size),
        "brier": float(gap @ gap / p.size),
        "n_bins": n_bins,
        "reliability": {
            "bin_edges": (np.arange(n_bins + 1) / n_bins).tolist(),
            "count": counts.astype(np.int64),
            "mean_pred": mean_p,
            "mean_soft": mean_g,
        },
    }


def calibration(prob: np.ndarray, soft: np.ndarray, n_bins: int = ECE_BINS) -> dict:
    """Expected calibration error, Brier score and reliability data against the soft label.

    Returns ``{"ece", "brier", "n_bins", "reliability": {"bin_edges" (n_bins + 1 floats),
    "count" (int64 per bin), "mean_pred", "mean_soft" (float64 per bin, NaN when empty)}}``.
    Binning and the meaning of accuracy (mean soft label) are in the module docstring.
    """
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise SoftsegError(f"n_bins {n_bins!r}: expected a positive integer")
    edges = np.arange(1, n_bins) / n_bins
    prob, soft, bins, _ = _quantised(prob, soft, edges)
    return _calibration_from_bins(prob, soft, bins, n_bins)


def class_calibration(probs: np.ndarray, target: np.ndarray, n_bins: int = ECE_BINS) -> dict:
    """Class-wise ECE and multi-class Brier score of one case (module docstring).

    ``probs`` and ``target`` are ``(C, *spatial)`` maps in [0, 1] with C >= 2 whose classes
    sum to 1 at every pixel within ``1e-3`` (a softmax prediction read back from 16-bit
    files; the class distribution). Returns ``{"classwise_ece", "brier", "ece_by_class"
    (C floats), "reliability" (C per-class dicts as :func:`calibration` gives them)}``.
    """
    probs, target = np.asarray(probs), np.asarray(target)
    if probs.ndim < 2 or probs.shape[0] < 2 or probs.shape != target.shape:
        raise SoftsegError(f"class maps {probs.shape} and class distribution {target.shape}: "
                           "expected the same shape (C, *spatial) with C >= 2")
    for name, maps in (("prediction", probs), ("class distribution", target)):
        off = float(np.abs(maps.sum(axis=0, dtype=np.float64) - 1.0).max())
        if off > 1e-3:
            raise SoftsegError(f"{name}: classes sum to 1 ± {off:.3g} at some pixel; expected "
                               "a distribution over the classes at every pixel (softmax maps)")
    per_class = [calibration(p, g, n_bins) for p, g in zip(probs, target)]
    gap = probs.astype(np.float64) - target
    return {
        "classwise_ece": float(np.mean([c["ece"] for c in per_class])),
        "brier": float(np.vdot(gap, gap) / gap[0].size),
        "ece_by_class": [c["ece"] for c in per_class],
        "reliability": [c["reliability"] for c in per_class],
    }


def rater_metrics(
    prob: np.ndarray, rater_masks: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Table 3 of the paper for one case: the prediction ``prob >= threshold`` against raters.

    ``rater_masks`` is ``(R, *spatial)`` bool, one mask per rater. Returns
    ``ged2`` = 2 E_y[d(y, ŷ)] - E_{y≠y'}[d(y, y')], ``pred_rater_dist`` = E_y[1 - IoU(y, ŷ)],
    ``rater_diversity`` = E_{y≠y'}[1 - IoU(y, y')] over the R(R-1)/2 distinct pairs, and
    ``expected_dice`` = E_y[Dice(y, ŷ)], with d(∅, ∅) = 0 and Dice(∅, ∅) = 1. With a single
    rater there is no pair: ``rater_diversity`` and ``ged2`` are NaN.
    """
    prob = as_map(prob, "prediction")
    masks = _as_mask(rater_masks, "rater masks")
    if masks.ndim != prob.ndim + 1 or masks.shape[1:] != prob.shape or masks.shape[0] < 1:
        raise SoftsegError(
            f"rater masks shape {masks.shape}: expected (R, *{prob.shape}) with R >= 1, "
            "one mask per rater over the prediction's pixels"
        )
    pred = prob >= np.asarray(threshold).astype(prob.dtype)
    inter = pairwise_intersections(np.concatenate([pred[None], masks]))
    return table3_from_intersections(inter)


def table3_from_intersections(inter: np.ndarray) -> dict[str, float]:
    """Table 3 values from the ``(R + 1, R + 1)`` intersection-count matrix.

    Row/column 0 is the prediction, 1..R the raters; the diagonal holds mask sizes.
    """
    sizes = np.diag(inter).astype(np.float64)
    union = sizes[:, None] + sizes[None, :] - inter
    total = sizes[:, None] + sizes[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou_matrix = np.where(union == 0, 1.0, inter / union)
        dice_matrix = np.where(total == 0, 1.0, 2.0 * inter / total)
    dist = 1.0 - iou_matrix
    n_raters = inter.shape[0] - 1
    pred_rater = float(dist[0, 1:].mean())
    if n_raters >= 2:
        upper = np.triu_indices(n_raters, k=1)
        diversity = float(dist[1:, 1:][upper].mean())
    else:
        diversity = float("nan")
    return {
        "ged2": 2.0 * pred_rater - diversity,
        "pred_rater_dist": pred_rater,
        "rater_diversity": diversity,
        "expected_dice": float(dice_matrix[0, 1:].mean()),
    }


def table2(
    prob: np.ndarray, soft: np.ndarray, spacing: Sequence[float] | None = None
) -> dict[str, np.ndarray]:
    """Table 2 of the paper for one case: ``prob >= t`` against ``soft >= t``, t in THRESHOLDS.

    Returns ``(9,)`` arrays: "threshold", "dice", "iou", "precision", "recall", "hd95" (NaN
    where exactly one mask is empty), "hd95_status" (see :func:`hd95_status`) and
    "gt_area_frac" (pixels of ``soft >= t`` / pixels of the image), plus the int64 counts
    "tp", "pred_pos", "gt_pos". HD95 is in units of ``spacing`` (pixels when None).
    """
    prob, soft, pred_bins, gt_bins = _quantised(prob, soft, THRESHOLDS)
    return _table2_from_bins(pred_bins, gt_bins, prob.shape, _as_spacing(spacing, prob.ndim))


def _table2_from_bins(pred_bins, gt_bins, shape, spacing, counts=None) -> dict[str, np.ndarray]:
    if counts is None:
        counts = threshold_counts(pred_bins, gt_bins, len(THRESHOLDS))
    tp, pred_pos, gt_pos = counts
    ratios = overlap_ratios(tp, pred_pos, gt_pos)
    distances = nested_hd95(
        pred_bins.reshape(shape), gt_bins.reshape(shape), tp, pred_pos, gt_pos, spacing
    )
    return {
        "threshold": THRESHOLDS.copy(),
        **ratios,
        "hd95": distances,
        "hd95_status": hd95_status(pred_pos, gt_pos),
        "gt_area_frac": gt_pos / float(np.prod(shape)),
        "tp": tp,
        "pred_pos": pred_pos,
        "gt_pos": gt_pos,
    }


def case_metrics(
    prob: np.ndarray,
    soft: np.ndarray,
    rater_masks: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    n_bins: int = ECE_BINS,
) -> dict:
    """Every metric of one case and task, sharing one quantisation of both maps.

    ``prob`` and ``soft`` are ``(*spatial)`` maps in [0, 1]; ``rater_masks`` is
    ``(R, *spatial)`` bool or None (agreement-map data: no Table 3). ``spacing`` (one value
    per axis) adds HD95 in physical units next to HD95 in pixels. Returns::

        {"table2": table2(...) with "hd95" in pixels and "hd95_mm" (None without spacing),
         "qubiq": float, "table3": rater_metrics(...) or None,
         "calibration": calibration(...),
         "curves": threshold_curves(...) over FINE_THRESHOLDS with "threshold"}

    The bins of the 99 fine thresholds j/100 give those of the 9 thresholds k/10 by integer
    division (10k/100 and k/10 are the same float), so each map is quantised once.
    """
    prob, soft, fine_pred, fine_gt = _quantised(prob, soft, FINE_THRESHOLDS)
    pred_bins, gt_bins = fine_pred // 10, fine_gt // 10
    # One pass over the pixels: the 10 x 10 joint histogram of the tenths is a block sum of
    # the 100 x 100 one of the hundredths.
    fine_joint = joint_histogram(fine_pred, fine_gt, len(FINE_THRESHOLDS))
    coarse_joint = fine_joint.reshape(10, 10, 10, 10).sum(axis=(1, 3))
    unit = (1.0,) * prob.ndim
    physical = None if spacing is None else _as_spacing(spacing, prob.ndim)
    table = _table2_from_bins(pred_bins, gt_bins, prob.shape, unit,
                              counts_from_joint(coarse_joint))
    table["hd95_mm"] = None
    if physical is not None and physical != unit:
        table["hd95_mm"] = nested_hd95(
            pred_bins.reshape(prob.shape), gt_bins.reshape(prob.shape),
            table["tp"], table["pred_pos"], table["gt_pos"], physical,
        )
    elif physical is not None:
        table["hd95_mm"] = table["hd95"].copy()

    raters = None
    if rater_masks is not None:
        masks = _as_mask(rater_masks, "rater masks")
        if masks.ndim != prob.ndim + 1 or masks.shape[1:] != prob.shape or masks.shape[0] < 1:
            raise SoftsegError(
                f"rater masks shape {masks.shape}: expected (R, *{prob.shape}) with R >= 1"
            )
        # pred_bins >= 5 <=> prob >= 0.5: the Table 3 prediction.
        pred_half = (pred_bins >= 5).reshape(prob.shape)
        raters = table3_from_intersections(
            pairwise_intersections(np.concatenate([pred_half[None], masks]))
        )

    if n_bins == ECE_BINS:  # the 9 thresholds are exactly the inner ECE bin edges
        calib = _calibration_from_bins(prob, soft, pred_bins, n_bins)
    else:
        calib = calibration(prob, soft, n_bins)

    fine_ratios = overlap_ratios(*counts_from_joint(fine_joint))
    curves = {"threshold": FINE_THRESHOLDS.copy(), **fine_ratios}
    return {
        "table2": table,
        "qubiq": float(table["dice"].mean()),
        "table3": raters,
        "calibration": calib,
        "curves": curves,
    }
