"""Overlap counts of thresholded maps, all thresholds at once (private to metrics.py).

A map binarised at ``>= t`` for every ``t`` of an increasing threshold vector is described
by one small integer per pixel: its *bin*, the number of thresholds it reaches. A pixel is
foreground at threshold ``k`` (0-based) exactly when ``bin > k``. Counting the joint
(prediction bin, ground-truth bin) histogram once gives every confusion matrix by cumulative
sums, so 9 (or 99) thresholds cost one pass over the image instead of 9 (or 99).
"""

from __future__ import annotations

import numpy as np

from softseg.errors import SoftsegError


def as_map(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as a float32/float64 array, checked to lie in [0, 1] (no NaN).

    Float64 stays float64; everything else (float32, float16, integers, bool) becomes float32.
    Keeping the map's own precision matters for ties: a float32 soft label 7/10 is
    0.69999999 and must still count as ``>= 0.7``, so thresholds are cast to the map's dtype
    before comparing (see :func:`threshold_bins`).
    """
    array = np.asarray(values)
    if array.dtype != np.float64:
        array = array.astype(np.float32, copy=False)
    if array.size == 0:
        raise SoftsegError(f"{name}: expected a non-empty array, got shape {array.shape}")
    low, high = float(array.min()), float(array.max())
    if not (low >= 0.0 and high <= 1.0):  # also false for NaN, which min/max propagate
        raise SoftsegError(
            f"{name}: expected values in [0, 1] without NaN, found min {low} and max {high}; "
            "pass probabilities (after the sigmoid), not logits or percentages"
        )
    return array


def check_same_shape(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    if a.shape != b.shape:
        raise SoftsegError(
            f"{names[0]} shape {a.shape} != {names[1]} shape {b.shape}; "
            "both must cover the same pixels (same spatial axes, same order)"
        )


def threshold_bins(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per pixel, how many thresholds the value reaches (``value >= t``), as flat uint8.

    ``values`` lie in [0, 1]; ``thresholds`` must be increasing (at most 255 of them). They
    are cast to ``values.dtype`` first so that ``k/A`` stored at float32 precision ties
    with ``t`` stored at the same precision.
    """
    thr = np.asarray(thresholds).astype(values.dtype)
    flat = values.ravel()
    n = thr.size + 1
    if n <= 256 and np.array_equal(thresholds, np.arange(1, n) / n):
        # Equal steps j/n: floor(v * n) is the count up to one step of rounding either
        # way; two look-ups fix it. ~10x faster than a binary search per pixel.
        bins = np.minimum((flat * flat.dtype.type(n)).astype(np.uint8), n - 1)
        edges = np.concatenate([[-np.inf], thr, [np.inf]]).astype(values.dtype)
        bins += flat >= edges[bins + 1]
        bins -= flat < edges[bins]
        return bins
    # searchsorted(side="right") counts thresholds <= value, i.e. value >= t, exactly.
    return np.searchsorted(thr, flat, side="right").astype(np.uint8)


def joint_histogram(pred_bins: np.ndarray, gt_bins: np.ndarray, n_thresholds: int) -> np.ndarray:
    """``(n + 1, n + 1)`` int64 counts of pixels per (prediction bin, ground-truth bin)."""
    n = n_thresholds + 1
    return np.bincount(pred_bins.astype(np.intp) * n + gt_bins, minlength=n * n).reshape(n, n)


def counts_from_joint(joint: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, predicted positives and true positives per threshold.

    Returns ``(tp, pred_pos, gt_pos)``, each ``(n_thresholds,)`` int64, where threshold ``k``
    (0-based) means "bin > k" on both maps.
    """
    # suffix[i, j] = number of pixels with pred bin >= i and gt bin >= j.
    suffix = joint[::-1, ::-1].cumsum(axis=0).cumsum(axis=1)[::-1, ::-1]
    k = np.arange(1, joint.shape[0])
    return suffix[k, k], suffix[k, 0], suffix[0, k]


def threshold_counts(
    pred_bins: np.ndarray, gt_bins: np.ndarray, n_thresholds: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``counts_from_joint`` of the joint histogram of two bin maps."""
    return counts_from_joint(joint_histogram(pred_bins, gt_bins, n_thresholds))


def overlap_ratios(
    tp: np.ndarray, pred_pos: np.ndarray, gt_pos: np.ndarray
) -> dict[str, np.ndarray]:
    """Dice, IoU, precision and recall from counts, with the empty-mask rules of metrics.py.

    Both empty -> all four are 1. Prediction empty, truth not -> precision 0 (no predicted
    pixel is correct; the limit of 0/0 is taken as a miss, not a success). Truth empty,
    prediction not -> recall 0. Dice and IoU are 0 when exactly one is empty.
    """
    tp = np.asarray(tp, dtype=np.float64)
    pred_pos = np.asarray(pred_pos, dtype=np.float64)
    gt_pos = np.asarray(gt_pos, dtype=np.float64)
    both_empty = (pred_pos == 0) & (gt_pos == 0)
    union = pred_pos + gt_pos - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        dice = np.where(both_empty, 1.0, 2.0 * tp / (pred_pos + gt_pos))
        iou = np.where(both_empty, 1.0, tp / union)
        precision = np.where(both_empty, 1.0, np.where(pred_pos == 0, 0.0, tp / pred_pos))
        recall = np.where(both_empty, 1.0, np.where(gt_pos == 0, 0.0, tp / gt_pos))
    return {"dice": dice, "iou": iou, "precision": precision, "recall": recall}


def _popcount_rows(words: np.ndarray) -> np.ndarray:
    """Number of set bits per row of a 2-D unsigned integer array."""
    if hasattr(np, "bitwise_count"):  # NumPy >= 2.0
        return np.bitwise_count(words).sum(axis=-1, dtype=np.int64)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    as_bytes = words.view(np.uint8)
    return table[as_bytes].sum(axis=-1, dtype=np.int64)


def pairwise_intersections(masks: np.ndarray) -> np.ndarray:
    """``(M, M)`` int64 matrix of |m_i ∩ m_j| for ``(M, *spatial)`` bool masks.

    The diagonal holds mask sizes. Masks are bit-packed (64 pixels per word) after cropping
    to the box of their union, so each pair costs one AND and one popcount per word.
    """
    from softseg.evaluation._surface import bounding_box

    n_masks = masks.shape[0]
    box = bounding_box(masks.any(axis=0))
    if box is None:
        return np.zeros((n_masks, n_masks), dtype=np.int64)
    flat = masks[(slice(None), *box)].reshape(n_masks, -1)
    packed = np.packbits(flat, axis=1)
    pad = (-packed.shape[1]) % 8
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    words = np.ascontiguousarray(packed).view(np.uint64)
    result = np.zeros((n_masks, n_masks), dtype=np.int64)
    for i in range(n_masks):
        counts = _popcount_rows(words[i] & words[i:])
        result[i, i:] = counts
        result[i:, i] = counts
    return result
