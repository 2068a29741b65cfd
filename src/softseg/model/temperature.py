"""The temperature of temperature scaling: its objective, its fit, and what a fit records.

The math of :mod:`softseg.inference.calibration` (which describes the method and the file it
writes), kept with the model because each output head (:mod:`softseg.model.heads`) fits its
temperature its own way: one T per task against the soft labels (sigmoid), or one T for the
softmax against the raters' class distributions.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit

from softseg.errors import SoftsegError
from softseg.evaluation.metrics import calibration

# The search interval of T. Beyond it the logits carry (almost) no information or the fit is
# degenerate; a fit that ends on a bound is reported (``at_bound``) and logged.
T_MIN, T_MAX = 1e-2, 1e2


def soft_cross_entropy(logits: np.ndarray, soft: np.ndarray, temperature: float = 1.0) -> float:
    """Mean soft binary cross-entropy (nats) of ``sigmoid(logits / temperature)`` against ``soft``.

    ``logits`` and ``soft`` share any shape; ``soft`` in [0, 1]. Computed stably in float64 as
    ``softplus(z / T) - g z / T`` per pixel.
    """
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    g = np.asarray(soft, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - g * z))


def fit_temperature(logits: np.ndarray, soft: np.ndarray) -> float:
    """The T in [T_MIN, T_MAX] minimising :func:`soft_cross_entropy` of ``logits`` and ``soft``.

    ``logits``: any-shape floats (all pixels of all cases, pooled); ``soft``: the soft labels
    in [0, 1], same shape. Raises SoftsegError for empty or mismatched input.
    """
    z = np.asarray(logits, dtype=np.float64).ravel()
    g = np.asarray(soft, dtype=np.float64).ravel()
    if z.size == 0 or z.shape != g.shape:
        raise SoftsegError(
            f"temperature fit: expected logits and soft labels of one non-empty shape, got "
            f"{np.shape(logits)} and {np.shape(soft)}"
        )
    if not (np.isfinite(z).all() and g.min() >= 0.0 and g.max() <= 1.0):
        raise SoftsegError("temperature fit: logits must be finite and soft labels in [0, 1]")
    gz = float(np.mean(g * z))  # the linear term does not depend on the search

    def loss(log_t: float) -> float:
        a = math.exp(-log_t)
        return float(np.mean(np.logaddexp(0.0, a * z))) - a * gz

    # Why a bounded Brent search over log T rather than Newton steps: CE is convex in
    # a = 1/T (its second derivative is mean(sigmoid'(a z) z^2) >= 0) and a = exp(-log T) is
    # monotone, so CE is unimodal in log T and the search finds the global minimum on the
    # interval from function values alone, with no step that could leave T > 0 or overshoot
    # on nearly flat losses (Newton in a needs safeguards for both). Log T makes the interval
    # symmetric (T and 1/T are equally far from 1) and the tolerance relative: 1e-7 in log T
    # is a relative error of 1e-7 in T. About 30 passes over the pixels.
    result = minimize_scalar(loss, bounds=(math.log(T_MIN), math.log(T_MAX)), method="bounded",
                             options={"xatol": 1e-7})
    return float(math.exp(result.x))


def class_cross_entropy(logits: np.ndarray, dist: np.ndarray, temperature: float = 1.0) -> float:
    """Mean soft cross-entropy (nats) of ``softmax(logits / T)`` over the class axis 0 against
    the class distributions ``dist`` (same ``(C, N)`` shape): ``logsumexp(z / T) - sum_c g_c z_c / T``."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    g = np.asarray(dist, dtype=np.float64)
    return float(np.mean(_logsumexp(z) - (g * z).sum(axis=0)))


def _logsumexp(z: np.ndarray) -> np.ndarray:
    top = z.max(axis=0)
    return top + np.log(np.exp(z - top).sum(axis=0))


def fit_temperature_classes(logits: np.ndarray, dist: np.ndarray) -> float:
    """The one T in [T_MIN, T_MAX] of a multi-class run's softmax minimising
    :func:`class_cross_entropy` (``(C, N)`` logits and class distributions, pixels pooled).
    Convex in 1/T like the binary case (a log-sum-exp of a linear map minus a linear term), so
    the same bounded search over log T finds the global minimum."""
    z = np.asarray(logits, dtype=np.float64)
    g = np.asarray(dist, dtype=np.float64)
    if z.size == 0 or z.shape != g.shape or z.ndim != 2:
        raise SoftsegError(f"temperature fit: expected (C, N) logits and distributions, got {z.shape} and {g.shape}")
    result = minimize_scalar(lambda log_t: class_cross_entropy(z, g, math.exp(log_t)),
                             bounds=(math.log(T_MIN), math.log(T_MAX)), method="bounded",
                             options={"xatol": 1e-7})
    return float(math.exp(result.x))


def _at_bound(t: float) -> bool:
    return not (T_MIN * 1.001 < t < T_MAX / 1.001)


def fitted_entry(z: np.ndarray, g: np.ndarray) -> dict:
    """One task's fit of a sigmoid head: T on the pooled logits ``z`` and soft labels ``g``
    (1D), the pixel count, and soft CE, ECE and Brier score before and after."""
    t = fit_temperature(z, g)
    at_bound = _at_bound(t)
    before = calibration(expit(z.astype(np.float64)), g)
    after = calibration(expit(z.astype(np.float64) / t), g)
    return {
        "temperature": t,
        "n_pixels": int(z.size),
        "soft_ce_before": soft_cross_entropy(z, g),
        "soft_ce_after": soft_cross_entropy(z, g, t),
        "ece_before": before["ece"],
        "ece_after": after["ece"],
        "brier_before": before["brier"],
        "brier_after": after["brier"],
        "at_bound": at_bound,
    }


def fitted_class_entries(z: np.ndarray, g: np.ndarray, classes: Sequence[str]) -> dict[str, dict]:
    """The fit of a softmax head: one T on ``(C, N)`` logits and class distributions; each
    foreground class's entry holds it, with that class's ECE and Brier score before and after
    (its map against its soft label) and the softmax's CE."""
    t = fit_temperature_classes(z, g)
    at_bound = _at_bound(t)
    before, after = np.exp(z - _logsumexp(z)), np.exp(z / t - _logsumexp(z / t))
    fitted = {}
    for index, task in enumerate(classes[1:], start=1):
        cal_before, cal_after = calibration(before[index], g[index]), calibration(after[index], g[index])
        fitted[task] = {
            "temperature": t, "shared_by_classes": True, "n_pixels": int(z.shape[1]),
            "soft_ce_before": class_cross_entropy(z, g), "soft_ce_after": class_cross_entropy(z, g, t),
            "ece_before": cal_before["ece"], "ece_after": cal_after["ece"],
            "brier_before": cal_before["brier"], "brier_after": cal_after["brier"], "at_bound": at_bound,
        }
    return fitted
