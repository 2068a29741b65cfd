"""Operating thresholds with a guarantee: conformal risk control and Learn-then-Test.

The empirical picker of :mod:`softseg.inference.thresholds` finds the threshold at which the
calibration cases meet a target on average; on new images the target can be missed, and
nothing says how often. The two procedures here say it (../shared/SPEC.md, "Risk control
for operating thresholds"):

* **False-negative rate, conformal risk control** (Angelopoulos, Bates, Fisch, Lei and
  Schuster, ICLR 2024). The per-image loss L_i(t) is the false-negative rate of ``p >= t``
  averaged over the image's raters: for rater r with foreground F_r, |F_r ∩ {p < t}| / |F_r|;
  a rater who drew nothing misses nothing (loss 0), so an image whose raters all drew
  nothing has loss 0. L_i is in [0, B] with B = 1 and can only grow as t rises. With n
  calibration images exchangeable with the new one,
  ``t̂ = max{t : n/(n+1) · R̂_n(t) + B/(n+1) <= α}`` (R̂_n the mean calibration loss)
  guarantees E[L_new(t̂)] <= α: the expected false-negative rate of the next image, over the
  draw of the calibration set and of that image.
* **False-discovery rate, Learn-then-Test** (Angelopoulos, Bates, Candès, Jordan and Lei,
  2021). The per-image loss is the fraction of ``p >= t`` outside rater r's foreground,
  averaged over the raters (no pixel predicted: no false discovery, loss 0). It is not
  monotone in t, so each candidate threshold is tested: the Hoeffding–Bentkus p-value of
  H0: R(t) > α (Bates, Angelopoulos, Lei, Malik and Jordan, 2021, for losses in [0, 1]), and
  fixed-sequence testing from the most confident threshold down, stopping at the first
  H0 not rejected at level δ, controls the family-wise error: with probability at least
  1 − δ over the calibration set, every threshold kept has R(t) <= α. Of those, the lowest
  (the one finding the most) is chosen.

The risk is the expectation over new images exchangeable with the calibration images: drawn
from the same distribution (same scanner, protocol, hospital, population, raters). Neither
guarantee holds for images from elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.stats import binom

from softseg.errors import SoftsegError

RISKS = ("fnr", "fdr")
LOSS_BOUND = 1.0  # B: both losses are rates in [0, 1]


@dataclass(frozen=True)
class RiskControl:
    """The threshold a risk-control procedure chose and what it promises.

    ``risk`` "fnr" or "fdr"; ``alpha`` the risk level; ``delta`` the error probability of
    Learn-then-Test (None for conformal risk control, whose guarantee is in expectation);
    ``n`` calibration images; ``threshold`` the chosen t; ``calibration_risk`` the mean
    calibration loss at t; ``bound`` CRC's n/(n+1)·R̂ + B/(n+1) at t, or LTT's p-value at t.
    """

    risk: str
    alpha: float
    delta: float | None
    n: int
    threshold: float
    calibration_risk: float
    bound: float

    def entry(self) -> dict:
        """What ``threshold.json`` records of it per task."""
        return {"calibration_risk": round(self.calibration_risk, 6), "bound": round(self.bound, 6),
                "n": self.n, "guarantee": self.guarantee}

    @property
    def guarantee(self) -> str:
        if self.delta is None:
            return (f"E[false-negative rate of the next image] <= {self.alpha:g} (conformal risk control, "
                    f"n = {self.n}, for images exchangeable with the calibration images)")
        return (f"P(expected false-discovery rate <= {self.alpha:g}) >= {1 - self.delta:g} over the "
                f"calibration set (Learn-then-Test, Hoeffding-Bentkus p-values, fixed-sequence "
                f"testing, n = {self.n}, for images exchangeable with the calibration images)")


def control(risk: str, losses: np.ndarray, thresholds: np.ndarray, alpha: float | None,
            delta: float | None = None) -> RiskControl:
    """The procedure of ``risk``: conformal risk control for "fnr", Learn-then-Test (at
    ``delta``) for "fdr"."""
    if alpha is None:
        raise SoftsegError(f"--risk {risk} needs --alpha, the risk level (e.g. 0.1)")
    if risk == "fnr":
        return crc_threshold(losses, thresholds, alpha)
    return ltt_threshold(losses, thresholds, alpha, delta)


def risk_summary(risk: str, alpha: float, delta: float | None, n: int, n_tasks: int) -> dict:
    """What ``threshold.json`` states of a guarantee: the loss, the procedure, and what holds
    jointly over several tasks (multi-class: one threshold per foreground class)."""
    if risk == "fnr":
        loss = ("false-negative rate of p >= t per image, averaged over the image's raters (a rater "
                "with no foreground contributes 0)")
        procedure = "conformal risk control: t = max{t : n/(n+1) R(t) + B/(n+1) <= alpha}, B = 1"
        jointly = ("each task's expected FNR <= alpha, so their mean is too; the chance that some task "
                   "misses more on one image is not bounded")
    else:
        loss = ("false-discovery rate of p >= t per image, averaged over the image's raters (0 where "
                "nothing is predicted)")
        procedure = ("Learn-then-Test: Hoeffding-Bentkus p-values, fixed-sequence testing from t = 0.99 "
                     "down at level delta, the lowest threshold rejected")
        jointly = f"all {n_tasks} task(s) at once with probability >= {1 - n_tasks * delta:g} (union bound)"
    return {"risk": risk, "alpha": float(alpha), "delta": None if delta is None else float(delta), "n": n,
            "loss_bound": LOSS_BOUND,
            "loss": loss, "procedure": procedure, "jointly": jointly if n_tasks > 1 else None,
            "exchangeability": "the guarantee covers new images drawn like the calibration images "
                               "(same scanner, protocol, site and raters), not images from elsewhere"}


def count_at_least(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """How many of ``values`` are ``>= t`` for each of the increasing ``levels``, int64: sorted
    once, each level found by binary search (exact comparisons at the values' own precision, as
    :mod:`softseg.evaluation.metrics` makes them: cast ``levels`` to that dtype first)."""
    values = np.sort(np.ravel(values))
    return len(values) - np.searchsorted(values, levels, side="left")


def _checked(prob: np.ndarray, masks: np.ndarray, thresholds: np.ndarray):
    prob = np.asarray(prob)
    if not np.issubdtype(prob.dtype, np.floating):
        prob = prob.astype(np.float64)
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != prob.ndim + 1 or masks.shape[1:] != prob.shape or masks.shape[0] < 1:
        raise SoftsegError(f"expected rater masks (R, *{prob.shape}) for a map {prob.shape}, found {masks.shape}")
    return prob, masks, np.asarray(thresholds, dtype=np.float64).astype(prob.dtype)


def false_negative_rates(prob: np.ndarray, masks: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The loss of conformal risk control for one image: per threshold t, the false-negative
    rate of ``prob >= t`` averaged over the raters ``masks`` (R, *spatial) bool; a rater with
    no foreground contributes 0. float64 in [0, 1], non-decreasing in t."""
    prob, masks, levels = _checked(prob, masks, thresholds)
    loss = np.zeros(len(levels))
    for mask in masks:
        size = int(mask.sum())
        if size:
            loss += (size - count_at_least(prob[mask], levels)) / size
    return loss / len(masks)


def false_discovery_rates(prob: np.ndarray, masks: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The loss of Learn-then-Test for one image: per threshold t, the fraction of
    ``prob >= t`` outside each rater's foreground, averaged over the raters; 0 where nothing
    is predicted. float64 in [0, 1], not monotone in t."""
    prob, masks, levels = _checked(prob, masks, thresholds)
    predicted = count_at_least(prob, levels)
    loss = np.zeros(len(levels))
    for mask in masks:
        true = count_at_least(prob[mask], levels)
        loss += np.where(predicted > 0, (predicted - true) / np.maximum(predicted, 1), 0.0)
    return loss / len(masks)


def crc_threshold(losses: np.ndarray, thresholds: np.ndarray, alpha: float,
                  bound: float = LOSS_BOUND) -> RiskControl:
    """Conformal risk control over the grid ``thresholds`` (increasing) for ``losses`` (n, T),
    each row non-decreasing in t: the largest t whose corrected mean loss
    ``n/(n+1) · R̂(t) + B/(n+1)`` is at most ``alpha`` (and so is every lower t's).

    Raises SoftsegError when ``alpha`` cannot be met: n < B/α − 1 (then only t = 0, no
    threshold at all, would meet it) or no threshold of the grid meets it."""
    losses, thresholds = _checked_losses(losses, thresholds)
    _check_alpha(alpha)
    n = len(losses)
    if bound / (n + 1) > alpha:
        need = math.ceil(bound / alpha - 1)
        raise SoftsegError(
            f"{n} calibration image(s) are too few for alpha {alpha:g}: conformal risk control needs "
            f"B/(n+1) <= alpha, n >= {need}; with fewer the only threshold it can guarantee is 0 "
            f"(everything foreground); use more calibration cases or a larger --alpha"
        )
    mean = losses.mean(axis=0)
    corrected = n / (n + 1) * mean + bound / (n + 1)
    # the feasible thresholds: the prefix of the grid where the corrected risk stays <= alpha
    # (the whole prefix: a loss sampled on a grid is monotone, but rounding must not skip a gap)
    index = _prefix_end(corrected <= alpha + 1e-12)
    if index is None:
        raise SoftsegError(
            f"no threshold in {thresholds[0]:g}..{thresholds[-1]:g} keeps the corrected false-negative "
            f"rate <= {alpha:g} (at {thresholds[0]:g} it is {corrected[0]:.4f} over {n} images); "
            "use a larger --alpha or more calibration cases"
        )
    return RiskControl("fnr", float(alpha), None, n, float(thresholds[index]), float(mean[index]),
                       float(corrected[index]))


def hoeffding_bentkus_pvalue(risk: float | np.ndarray, n: int, alpha: float) -> np.ndarray:
    """The Hoeffding–Bentkus p-value of H0: R > alpha given the mean ``risk`` of n losses in
    [0, 1]: ``min(exp(-n·h(min(R̂, α), α)), e·P(Binomial(n, α) <= ceil(n·R̂)))`` with
    ``h(a, b) = a log(a/b) + (1 − a) log((1 − a)/(1 − b))``. Elementwise; in (0, 1]."""
    r = np.asarray(risk, dtype=np.float64)
    a = np.minimum(r, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(a > 0, a * np.log(a / alpha), 0.0) + (1 - a) * np.log((1 - a) / (1 - alpha))
    hoeffding = np.exp(-n * h)
    bentkus = math.e * binom.cdf(np.ceil(n * r - 1e-9), n, alpha)
    return np.minimum(np.minimum(hoeffding, bentkus), 1.0)


def ltt_threshold(losses: np.ndarray, thresholds: np.ndarray, alpha: float, delta: float) -> RiskControl:
    """Learn-then-Test over the grid ``thresholds`` (increasing) for ``losses`` (n, T) in
    [0, 1]: Hoeffding–Bentkus p-values, fixed-sequence testing from the highest threshold
    down at level ``delta``; the lowest threshold rejected before the first non-rejection.

    Raises SoftsegError when not even the highest threshold can be shown to meet ``alpha``."""
    losses, thresholds = _checked_losses(losses, thresholds)
    _check_alpha(alpha)
    if not (0.0 < delta < 1.0):
        raise SoftsegError(f"--delta must be in (0, 1), got {delta}")
    n = len(losses)
    mean = losses.mean(axis=0)
    pvalues = hoeffding_bentkus_pvalue(mean, n, alpha)
    chosen = _suffix_start(pvalues <= delta)  # tested from the most confident threshold down
    if chosen is None:
        top = len(thresholds) - 1
        raise SoftsegError(
            f"no threshold can be shown to keep the false-discovery rate <= {alpha:g} with "
            f"probability {1 - delta:g}: at {thresholds[top]:g} the mean calibration FDR is "
            f"{mean[top]:.4f} over {n} images (p-value {pvalues[top]:.3g} > delta {delta:g}); use a "
            "larger --alpha or --delta, or more calibration cases"
        )
    return RiskControl("fdr", float(alpha), float(delta), n, float(thresholds[chosen]),
                       float(mean[chosen]), float(pvalues[chosen]))


def empirical_threshold(losses: np.ndarray, thresholds: np.ndarray, alpha: float) -> float:
    """What the mean alone would pick for a loss that grows with t (FNR), for comparison: the
    largest t of the grid prefix whose mean calibration loss is <= ``alpha`` (no correction;
    no guarantee). NaN if none."""
    index = _prefix_end(np.asarray(losses, dtype=np.float64).mean(axis=0) <= alpha + 1e-12)
    return math.nan if index is None else float(np.asarray(thresholds)[index])


def empirical_threshold_from_top(losses: np.ndarray, thresholds: np.ndarray, alpha: float) -> float:
    """The same for a loss that is not monotone (FDR), walking as Learn-then-Test does: from
    the most confident threshold down while the mean calibration loss stays <= ``alpha``; the
    lowest such t (no correction; no guarantee). NaN if the top one fails."""
    index = _suffix_start(np.asarray(losses, dtype=np.float64).mean(axis=0) <= alpha)
    return math.nan if index is None else float(np.asarray(thresholds)[index])


def _prefix_end(ok: np.ndarray) -> int | None:
    """The last index of the leading run of True in ``ok``; None if ``ok[0]`` is False."""
    run = np.cumprod(ok).astype(bool)
    return int(np.flatnonzero(run)[-1]) if run.any() else None


def _suffix_start(ok: np.ndarray) -> int | None:
    """The first index of the trailing run of True in ``ok``; None if ``ok[-1]`` is False."""
    end = _prefix_end(ok[::-1])
    return None if end is None else len(ok) - 1 - end


def _checked_losses(losses: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``losses`` (n, T) of n >= 1 images on the grid ``thresholds`` (T,)."""
    losses = np.asarray(losses, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if losses.ndim != 2 or losses.shape[1] != len(thresholds) or not len(losses):
        raise SoftsegError(f"expected losses (n, {len(thresholds)}) of n >= 1 images, found {losses.shape}")
    return losses, thresholds


def losses_of(risk: str, maps: Sequence[np.ndarray], masks: Sequence[np.ndarray],
              thresholds: np.ndarray) -> np.ndarray:
    """``(n, T)`` losses of ``risk`` ("fnr" or "fdr") for n maps and their rater masks."""
    if risk not in RISKS:
        raise SoftsegError(f"unknown risk {risk!r}; expected one of {', '.join(RISKS)}")
    one = false_negative_rates if risk == "fnr" else false_discovery_rates
    return np.stack([one(p, m, thresholds) for p, m in zip(maps, masks)])


def _check_alpha(alpha: float) -> None:
    if not (0.0 < alpha < 1.0):
        raise SoftsegError(f"--alpha must be in (0, 1), got {alpha}")
