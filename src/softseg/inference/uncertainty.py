"""Uncertainty maps of a prediction: entropy, mutual information and expected entropy.

Pure functions of probability maps, per pixel, in **nats** (natural logarithm). For an
ensemble of M models (the seeds ``softseg predict`` averages) with maps p_1 … p_M and their
mean p̄ (the probability map written)::

    entropy             H[p̄]                          all the uncertainty of the written map
    expected entropy    (1/M) Σ_m H[p_m]               aleatoric: what each model itself is unsure of
    mutual information  H[p̄] − (1/M) Σ_m H[p_m]       epistemic: how much the models disagree

so that entropy = mutual information + expected entropy at every pixel (the decomposition
of Houlsby et al. 2011 (BALD) and Depeweg et al. 2018). The mutual information is >= 0
(H is concave) and 0 exactly when the models agree; with one model it is 0 by definition and
the expected entropy is the entropy, so only the entropy is written.

Conventions:

- Binary tasks (a sigmoid per task): the Bernoulli entropy ``-p ln p - (1 - p) ln(1 - p)``
  of each task's map, in [0, ln 2] (ln 2 ≈ 0.693 at p = 0.5).
- Multi-class runs (a softmax over C classes, background included): the categorical entropy
  ``-Σ_c p_c ln p_c`` over the classes, one map per case for all classes, in [0, ln C].
- ``0 ln 0 = 0``; maps are clipped to [0, 1] first (float rounding), results to [0, ln K]
  (K = 2 or C) and the mutual information to >= 0; computed in float64, returned float32.

Files (beside the probability maps, see :mod:`softseg.inference.outputs`):
``<task>_entropy``, ``<task>_mi``, ``<task>_expected_entropy`` per binary task, and
``classes_entropy``, ``classes_mi``, ``classes_expected_entropy`` for a multi-class run;
float32 NIfTI in nats, or 16-bit PNG holding ``round(value / ln K * 65535)`` (the maximum ln K
is recorded in predictions.json, so nothing is clipped and the value can be read back).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from softseg.data import io
from softseg.errors import SoftsegError

ENTROPY, MUTUAL_INFORMATION, EXPECTED_ENTROPY = io.UNCERTAINTY_MAPS
# The stem of a multi-class run's maps: one per case over all its classes (classes_entropy.png).
ALL_CLASSES = "classes"
UNIT = "nats"


def max_entropy(n_outcomes: int) -> float:
    """The largest entropy of a distribution over ``n_outcomes`` (ln K nats): ln 2 for a
    binary task, ln C for C classes."""
    return math.log(n_outcomes)


def _plogp(p: np.ndarray) -> np.ndarray:
    """``p ln p`` with ``0 ln 0 = 0``, without warnings."""
    return p * np.log(np.where(p > 0.0, p, 1.0))


def _entropy64(p: np.ndarray, categorical: bool) -> np.ndarray:
    """Unclipped float64 entropy of float64 ``p`` (classes on axis 0 when categorical)."""
    p = np.clip(p, 0.0, 1.0)
    if categorical:
        return 0.0 - _plogp(p).sum(axis=0)  # 0.0 - x: no -0.0 where p is certain
    return 0.0 - (_plogp(p) + _plogp(1.0 - p))


def _outcomes(shape: tuple[int, ...], categorical: bool, what: str) -> int:
    """K of a map of ``shape``: 2 for Bernoulli maps, the classes on axis 0 otherwise."""
    if not categorical:
        return 2
    if len(shape) < 1 or shape[0] < 2:
        raise SoftsegError(f"{what} of shape {shape}: expected classes on axis 0 (at least 2), "
                           "a softmax's maps (C, *spatial)")
    return shape[0]


def entropy(p: np.ndarray, categorical: bool = False) -> np.ndarray:
    """Per-pixel entropy of probability maps, in nats.

    Binary (``categorical=False``): ``p`` any shape, each value a Bernoulli probability;
    returns ``-p ln p - (1 - p) ln(1 - p)``, same shape, in [0, ln 2]. Categorical: ``p`` is
    ``(C, *spatial)``, a distribution over C classes along axis 0 (a softmax's maps, summing
    to 1); returns ``-Σ_c p_c ln p_c``, shape ``(*spatial)``, in [0, ln C]. ``0 ln 0 = 0``;
    values are clipped to [0, 1] first. float32.
    """
    p = np.asarray(p, dtype=np.float64)
    top = max_entropy(_outcomes(p.shape, categorical, "probability maps"))
    return np.clip(_entropy64(p, categorical), 0.0, top).astype(np.float32)


def _per_model(per_model: np.ndarray, categorical: bool) -> tuple[np.ndarray, float]:
    per_model = np.asarray(per_model, dtype=np.float64)
    if per_model.ndim < 1 or per_model.shape[0] < 1:
        raise SoftsegError(f"per-model maps of shape {per_model.shape}: expected (M, ...) with M >= 1 "
                           "models on axis 0")
    return per_model, max_entropy(_outcomes(per_model.shape[1:], categorical, "each model's maps"))


def _decomposition(per_model: np.ndarray, categorical: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 (entropy of the mean, mutual information, expected entropy), clipped."""
    per_model, top = _per_model(per_model, categorical)
    total = np.clip(_entropy64(per_model.mean(axis=0), categorical), 0.0, top)
    expected = np.clip(np.mean([_entropy64(m, categorical) for m in per_model], axis=0), 0.0, top)
    # >= 0 by Jensen's inequality; float rounding can leave -1e-16 where the models agree
    return total, np.clip(total - expected, 0.0, top), expected


def expected_entropy(per_model: np.ndarray, categorical: bool = False) -> np.ndarray:
    """Mean over models of each model's entropy (the aleatoric part), in nats.

    ``per_model`` is ``(M, *map)``: M models' maps stacked on axis 0, each map as
    :func:`entropy` takes it (``(*spatial)`` or ``(T, *spatial)`` Bernoulli maps, or
    ``(C, *spatial)`` with ``categorical``). Returns the shape of one model's entropy,
    float32, in [0, ln K].
    """
    return _decomposition(per_model, categorical)[2].astype(np.float32)


def mutual_information(per_model: np.ndarray, categorical: bool = False) -> np.ndarray:
    """Mutual information between the prediction and the model (the epistemic part), in nats:
    the entropy of the models' mean map minus their :func:`expected_entropy`.

    ``per_model`` as for :func:`expected_entropy`. 0 where the models agree (and for one
    model); ln 2 where two binary models say 0 and 1. float32, in [0, ln K].
    """
    return _decomposition(per_model, categorical)[1].astype(np.float32)


def uncertainty_maps(per_model: np.ndarray, categorical: bool = False) -> dict[str, np.ndarray]:
    """The maps written for one case: ``{"entropy", "mi", "expected_entropy"}`` float32 in
    nats, the entropy being that of the models' mean map; ``{"entropy"}`` alone for one
    model (M = 1: the mutual information is 0, the expected entropy the entropy).

    ``per_model`` as for :func:`expected_entropy`; entropy = mi + expected_entropy at every
    pixel up to float32 rounding.
    """
    total, information, expected = _decomposition(per_model, categorical)
    if np.asarray(per_model).shape[0] == 1:
        return {ENTROPY: total.astype(np.float32)}
    return {ENTROPY: total.astype(np.float32), MUTUAL_INFORMATION: information.astype(np.float32),
            EXPECTED_ENTROPY: expected.astype(np.float32)}


def uncertainty_file(name: str, kind: str, suffix: str) -> str:
    """The file name of a map: ``<name>_<kind><suffix>`` (``task01_mi.png``,
    ``classes_entropy.nii.gz``); ``name`` a task or :data:`ALL_CLASSES`."""
    return f"{name}_{kind}{suffix}"


def uncertainty_record(n_models: int, names: Sequence[str], n_outcomes: int,
                       categorical: bool = False) -> dict[str, Any]:
    """What predictions.json says of the uncertainty maps written: the unit, the number of
    models, the kinds written, which entropy, per map stem (``names``: the tasks, or
    ``["classes"]``) the maximum ln K (``n_outcomes`` = K) a PNG's 65535 stands for, and what
    the maps mean."""
    kinds = [ENTROPY] if n_models == 1 else [ENTROPY, MUTUAL_INFORMATION, EXPECTED_ENTROPY]
    return {
        "unit": UNIT,
        "models": n_models,
        "maps": kinds,
        "entropy": f"categorical over the {n_outcomes} classes" if categorical else "Bernoulli, per task",
        "max_nats": {name: max_entropy(n_outcomes) for name in names},
        "png_value": "round(value / max_nats * 65535)",
        "decomposition": ("one model: the mutual information is 0 by definition and the expected "
                          "entropy equals the entropy; only the entropy is written" if n_models == 1
                          else "entropy = mi + expected_entropy per pixel; mi: the models' disagreement "
                          "(epistemic), expected_entropy: their own uncertainty (aleatoric)"),
    }
