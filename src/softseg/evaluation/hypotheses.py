"""Hypotheses: sets of segmentations scored the way the LIDC benchmark scores them.

The Probabilistic U-Net line of work (Kohl et al. 2018; PHiSeg; SSN; MoSE) judges a model by
N sampled segmentations ŝ_1 ... ŝ_N against the raters' masks y_1 ... y_M:

* d(a, b) = 1 − IoU(a, b), with d(∅, ∅) = 0 and d = 1 when exactly one mask is empty;
* D²_GED = 2 mean_{i,j} d(ŝ_i, y_j) − mean_{i,i′} d(ŝ_i, ŝ_i′) − mean_{j,j′} d(y_j, y_j′), the
  self-terms over all N² and M² pairs **including i = i′** (their code's convention; the
  zero diagonal is counted). The middle term is the samples' diversity;
* HM-IoU: the raters tiled to N (N a multiple of M; otherwise both sets replicated to
  lcm(N, M)), the optimal one-to-one matching under cost 1 − IoU (Hungarian,
  ``scipy.optimize.linear_sum_assignment``), the mean IoU of the matched pairs.

A deterministic model has one map, not samples. Its hypotheses here are **level sets** of
that map: hypothesis k is ``p >= u_k`` with one level u_k in (0, 1) per hypothesis for the
whole image. With u uniform on (0, 1), P(pixel in hypothesis) = P(u <= p) = p: each pixel's
marginal is exactly the map. The hypotheses are nested, spatially coherent, and a structure
with probability q appears in a share q of them. Levels are stratified, u_k = (k − ½)/N (the
default: no Monte Carlo noise, and N = 1 gives the map at 0.5), or seeded uniform draws. For a
multi-class map the same level picks a class per pixel by the inverse of the class CDF taken
from the last class down (background last), so that P(class c) = p_c and the binary case is
``p >= u`` again.

Plain numpy and scipy; nothing here reads files (:mod:`softseg.evaluation.sampled` does).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment

from softseg.errors import SoftsegError

SCHEMES = ("stratified", "uniform")
# pixels per block of the intersection products: exact in float32 (counts below 2^24) and a
# bounded working set for volumes
_BLOCK = 1 << 20


def levels(n: int, scheme: str = "stratified", seed: int = 0) -> np.ndarray:
    """``n`` levels in (0, 1), ascending: stratified (k − ½)/n, or ``n`` uniform draws of a
    generator seeded with ``seed`` (sorted)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SoftsegError(f"hypotheses: expected a count of at least 1, got {n!r}")
    if scheme == "stratified":
        return (np.arange(n, dtype=np.float64) + 0.5) / n
    if scheme == "uniform":
        return np.sort(np.random.default_rng(seed).uniform(0.0, 1.0, n))
    raise SoftsegError(f"hypotheses: unknown level scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")


def level_set_masks(prob: np.ndarray, n: int, scheme: str = "stratified", seed: int = 0) -> np.ndarray:
    """``n`` hypotheses ``prob >= u_k`` of one binary map ``(*spatial)``: bool ``(n, *spatial)``,
    nested (hypothesis k contains hypothesis k + 1; levels ascending). The map is compared at
    its own precision, like every threshold in softseg."""
    prob = np.asarray(prob)
    u = levels(n, scheme, seed).astype(prob.dtype if prob.dtype.kind == "f" else np.float64)
    return prob[None] >= u.reshape(-1, *([1] * prob.ndim))


def level_set_labels(probs: np.ndarray, n: int, scheme: str = "stratified", seed: int = 0) -> np.ndarray:
    """``n`` label-map hypotheses ``(n, *spatial)`` uint8 of a class map ``(C, *spatial)``
    (background first): per pixel the class at level u_k of the CDF accumulated from the last
    class down, so that P(class c) = p_c; two classes give ``p_1 >= u_k``."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim < 2 or probs.shape[0] < 2:
        raise SoftsegError(f"hypotheses: expected class maps (C >= 2, *spatial), got shape {probs.shape}")
    # from the last class down: tail[c] = p_{C-1} + ... + p_c; class c where tail[c+1] < u <= tail[c]
    tail = np.cumsum(probs[::-1], axis=0)[::-1]
    out = np.empty((n, *probs.shape[1:]), dtype=np.uint8)
    for k, u in enumerate(levels(n, scheme, seed)):
        # the number of classes c >= 1 with tail[c] >= u is the class picked (0: background)
        out[k] = (tail[1:] >= u).sum(axis=0)
    return out


def _flat(masks: np.ndarray, what: str) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.dtype != bool:
        if masks.dtype.kind not in "biuf" or not np.isin(masks, (0, 1)).all():
            raise SoftsegError(f"{what}: expected binary masks (0/1 or bool), found dtype {masks.dtype}")
        masks = masks.astype(bool)
    if masks.ndim < 2 or masks.shape[0] < 1:
        raise SoftsegError(f"{what}: expected (N >= 1, *spatial) masks, got shape {masks.shape}")
    return masks.reshape(masks.shape[0], -1)


def iou_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """d = 1 − IoU between every mask of ``a`` ``(N, *spatial)`` and of ``b`` ``(M, *spatial)``:
    ``(N, M)`` float64, 0 where both are empty, 1 where exactly one is."""
    fa, fb = _flat(a, "hypotheses"), _flat(b, "masks")
    if fa.shape[1] != fb.shape[1]:
        raise SoftsegError(f"hypotheses {np.shape(a)} and masks {np.shape(b)} cover different pixels")
    inter = np.zeros((len(fa), len(fb)), dtype=np.int64)
    for start in range(0, fa.shape[1], _BLOCK):
        block_a = fa[:, start:start + _BLOCK].astype(np.float32)
        block_b = fb[:, start:start + _BLOCK].astype(np.float32)
        inter += np.rint(block_a @ block_b.T).astype(np.int64)
    size_a, size_b = fa.sum(axis=1), fb.sum(axis=1)
    union = size_a[:, None] + size_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union == 0, 0.0, 1.0 - inter / np.maximum(union, 1))


def ged_terms(samples: np.ndarray, raters: np.ndarray) -> dict[str, float]:
    """D²_GED of ``samples`` ``(N, *spatial)`` against ``raters`` ``(M, *spatial)`` with the
    self-terms over all pairs, i = i′ included: ``ged``, ``cross`` (mean d(ŝ, y)),
    ``diversity`` (mean d(ŝ, ŝ′)) and ``rater_diversity`` (mean d(y, y′))."""
    return _ged(iou_distances(samples, raters), iou_distances(samples, samples), iou_distances(raters, raters))


def _ged(cross: np.ndarray, within: np.ndarray, raters: np.ndarray) -> dict[str, float]:
    c, s, r = float(cross.mean()), float(within.mean()), float(raters.mean())
    return {"ged": 2.0 * c - s - r, "cross": c, "diversity": s, "rater_diversity": r}


def hungarian_iou(samples: np.ndarray, raters: np.ndarray) -> float:
    """HM-IoU: the raters tiled to the N samples (both replicated to lcm(N, M) when M does
    not divide N), matched one-to-one at the least total 1 − IoU; the mean IoU of the pairs
    (IoU(∅, ∅) = 1)."""
    return _hungarian(iou_distances(samples, raters))


def _hungarian(d: np.ndarray) -> float:
    n, m = d.shape
    size = n if n % m == 0 else math.lcm(n, m)
    tiled = d[np.arange(size) % n][:, np.arange(size) % m]
    rows, cols = linear_sum_assignment(tiled)
    return float(1.0 - tiled[rows, cols].mean())


def sampled_scores(samples: np.ndarray, raters: np.ndarray) -> dict[str, float]:
    """The benchmark's numbers of one hypothesis set: ``ged``, ``diversity`` (both with
    i = i′ kept) and ``hmiou`` (one distance matrix for all three)."""
    cross = iou_distances(samples, raters)
    terms = _ged(cross, iou_distances(samples, samples), iou_distances(raters, raters))
    return {"ged": terms["ged"], "diversity": terms["diversity"], "hmiou": _hungarian(cross)}
