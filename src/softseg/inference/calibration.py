"""Temperature scaling (Guo et al. 2017): one scalar T > 0 per run (seed) and task.

Prediction divides the logits by T before the sigmoid, ``p = sigmoid(z / T)``: T > 1 softens
over-confident maps, T < 1 sharpens timid ones. Because ``z / T >= 0`` exactly when
``z >= 0`` the 0.5 mask and the ranking of pixels do not change; only the confidence levels do
(other thresholds, ECE, the soft maps).

What is fitted, for each run and each task of it, on the calibration cases (by default the
run's own validation cases, ``split.json``):

* T minimises the mean soft binary cross-entropy against the soft label g (the fraction of
  raters), over all pixels of all calibration cases pooled::

      CE(T) = mean_pixels -[g log sigmoid(z/T) + (1 - g) log(1 - sigmoid(z/T))]
            = mean_pixels softplus(z/T) - g z/T

  It is at least the mean entropy of g, with equality exactly when ``sigmoid(z/T) = g``
  everywhere, so labels made as ``g = sigmoid(z / T0)`` give back T0.
* On the source grid: the logits z are resized back to each image's own grid (the resize of
  :mod:`softseg.inference.arrays`, applied to the logits, not to probabilities) and compared
  with the soft label there, pixel for pixel, like the evaluation. Prediction then applies
  T on the model's grid and resizes the probabilities back; for a run trained without
  ``--resize`` the two grids are the same, otherwise they differ only by the interpolation.
* One pass per image: no test-time flips (``--tta flip`` averages probabilities made with
  this T), no other seed (each seed of an ensemble is calibrated on its own, and the mean of
  calibrated seeds is what prediction averages).

The file ``RUN/seedN/temperature.json`` is written and read by :mod:`softseg.inference.runs`;
it names the checkpoint it was fitted for, and prediction with another checkpoint is an error.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit
from tqdm import tqdm

from softseg import __version__
from softseg.data.cases import Case, Dataset
from softseg.data.datasets import load_dataset
from softseg.data.labels import class_distribution, soft_label
from softseg.errors import SoftsegError
from softseg.evaluation.metrics import calibration
from softseg.inference import BATCH_SIZE, DEFAULT_CHECKPOINT
from softseg.inference.arrays import predict_source_logits
from softseg.inference.predict import check_run_channels
from softseg.inference.runs import (
    SPLIT_FILE,
    LoadedRun,
    check_can_store_temperature,
    checkpoint_key,
    load_run,
    resolve_runs,
    validation_ids,
    warn_best_on_validation,
    write_temperature_file,
)
from softseg.training.runtime import resolve_device

log = logging.getLogger(__name__)

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


def _source_logits(run: LoadedRun, cases: Sequence[Case], batch_size: int, progress: bool):
    """``(case, logits (K, *spatial) on its own grid)`` for every case, ``batch_size`` images a
    pass, with a progress bar."""
    with tqdm(total=len(cases), desc=f"calibrate {run.run_dir.name}", unit="image", disable=not progress) as bar:
        for start in range(0, len(cases), batch_size):
            batch = cases[start : start + batch_size]
            yield from zip(batch, predict_source_logits(run, [c.image for c in batch], [c.spacing for c in batch]))
            bar.update(len(batch))


def _fit_classes(run: LoadedRun, cases: Sequence[Case], batch_size: int, progress: bool) -> dict[str, dict]:
    """:func:`fit_run` for a multi-class run: one T for its softmax, fitted on the class
    distributions; each foreground class's entry holds it, with that class's ECE and Brier
    score before and after (its map against its soft label) and the softmax's CE."""
    classes = run.config.classes
    logits, dist = [], []
    for case, z in _source_logits(run, cases, batch_size, progress):
        logits.append(z.reshape(len(classes), -1))
        dist.append(class_distribution(case, classes).reshape(len(classes), -1))
    z, g = np.concatenate(logits, axis=1).astype(np.float64), np.concatenate(dist, axis=1)
    t = fit_temperature_classes(z, g)
    at_bound = not (T_MIN * 1.001 < t < T_MAX / 1.001)
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


def _calibration_cases(
    dataset: Dataset, data: Path, run_dir: Path, tasks: Sequence[str],
    split: str | None, case_ids: Sequence[str] | None,
) -> tuple[list[Case], str]:
    """The labelled cases one run is calibrated on and how they were chosen; SoftsegError
    for an empty or unknown selection, a task the dataset lacks, or an unlabelled case."""
    missing_tasks = [task for task in tasks if task not in dataset.tasks]
    if missing_tasks:
        raise SoftsegError(
            f"{data}: no labels of task(s) {', '.join(missing_tasks)} that the run {run_dir} "
            f"predicts (the dataset has {', '.join(dataset.tasks) or 'none'}); calibrate on "
            "the data the run was trained on"
        )
    if split is not None:
        cases, chosen_by = list(dataset.select(split=split).cases), f"split {split}"
        if not cases:
            raise SoftsegError(f"{data}: no cases in split {split!r}; check --split")
    else:
        if case_ids is not None:
            ids, chosen_by = list(case_ids), "--cases"
        else:
            way_out = "pass --split NAME or --cases ID ... to choose the calibration cases"
            ids, chosen_by = validation_ids(run_dir, way_out), f"the run's validation ids ({SPLIT_FILE})"
            if not ids:
                raise SoftsegError(f"{run_dir / SPLIT_FILE}: the run has no validation cases; {way_out}")
        cases = list(dataset.select(case_ids=ids).cases)
        unknown = sorted(set(ids) - {case.case_id for case in cases})
        if unknown:
            raise SoftsegError(
                f"{data}: case(s) {', '.join(unknown[:10])} ({chosen_by}) are not in this dataset; "
                "give the data the run was trained on, or choose other cases"
            )
    unlabelled = [f"{c.case_id} ({t})" for c in cases for t in tasks if not c.is_labelled(t)]
    if unlabelled:
        raise SoftsegError(
            f"{data}: {len(unlabelled)} calibration case/task(s) have no labels: "
            f"{', '.join(unlabelled[:10])}; choose labelled cases (e.g. --split Validation)"
        )
    return cases, chosen_by


def fit_run(
    run: LoadedRun, cases: Sequence[Case], batch_size: int = BATCH_SIZE, progress: bool = True
) -> dict[str, dict]:
    """Per task of the loaded ``run`` (its temperatures, if any, are ignored): T fitted on the
    labelled ``cases``, pixel count, and soft CE, ECE and Brier score before and after."""
    if run.config.classes:
        return _fit_classes(run, cases, batch_size, progress)
    logits: dict[str, list[np.ndarray]] = {task: [] for task in run.tasks}
    soft: dict[str, list[np.ndarray]] = {task: [] for task in run.tasks}
    for case, z in _source_logits(run, cases, batch_size, progress):
        for index, task in enumerate(run.tasks):
            logits[task].append(z[index].ravel())
            soft[task].append(np.asarray(soft_label(case, task), dtype=np.float32).ravel())
    fitted = {}
    for task in run.tasks:
        z, g = np.concatenate(logits[task]), np.concatenate(soft[task])
        t = fit_temperature(z, g)
        at_bound = not (T_MIN * 1.001 < t < T_MAX / 1.001)
        if at_bound:
            log.warning("%s %s: the fitted temperature %.4g is at the end of the search interval "
                        "[%g, %g]; the logits barely depend on the image", run.run_dir, task, t, T_MIN, T_MAX)
        before = calibration(expit(z.astype(np.float64)), g)
        after = calibration(expit(z.astype(np.float64) / t), g)
        fitted[task] = {
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
    return fitted


def calibrate(
    run: str | Path,
    data: str | Path,
    *,
    layout: str = "auto",
    split: str | None = None,
    case_ids: Sequence[str] | None = None,
    checkpoint: str = DEFAULT_CHECKPOINT,
    batch_size: int = BATCH_SIZE,
    device: str | None = "auto",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[Path, dict]:
    """Fit one temperature per task for every run (seed) of ``run`` and write each run's
    ``temperature.json``; returns ``{written path: its content}``.

    Cases: those of ``split``, or ``case_ids``, or (neither given) each run's own validation
    cases from its ``split.json``. Every problem (an existing file without ``overwrite``, no
    cases, an unknown or unlabelled case, a task the dataset lacks, another channel count)
    raises SoftsegError before anything is computed or written.
    """
    if split is not None and case_ids is not None:
        raise SoftsegError("give either --split or --cases, not both")
    if batch_size < 1:
        raise SoftsegError(f"--batch-size must be at least 1, got {batch_size}")
    run_dirs = resolve_runs([run]).run_dirs
    for run_dir in run_dirs:  # before minutes of prediction, not after
        check_can_store_temperature(run_dir, overwrite)
    dataset = load_dataset(data, layout=layout)
    device = resolve_device(device or "auto")
    # the raw logits: a temperature.json already there must not scale what is fitted
    loaded = [load_run(run_dir, checkpoint=checkpoint, device=device, temperature="off")
              for run_dir in run_dirs]
    selections = []
    for one in loaded:
        cases, chosen_by = _calibration_cases(dataset, Path(data), one.run_dir, one.tasks, split, case_ids)
        check_run_channels(cases, one)
        selections.append((cases, chosen_by))
    payloads = {}
    for one, (cases, chosen_by) in zip(loaded, selections):
        warn_best_on_validation([one], [case.case_id for case in cases], "calibrating on")
        payloads[one.run_dir] = {
            "softseg_version": __version__,
            "method": "temperature scaling (Guo et al. 2017): p = "
                      + ("softmax(logits / T), one T for all classes" if one.config.classes else "sigmoid(logit / T)"),
            "objective": ("mean soft cross-entropy of softmax(logits / T) against the raters' class "
                          "distribution" if one.config.classes else
                          "mean soft binary cross-entropy of sigmoid(logit / T) against the soft label")
                         + ", all pixels of all cases pooled, on each image's own grid (logits resized back)",
            "search": f"bounded Brent search over log T, T in [{T_MIN:g}, {T_MAX:g}]",
            "checkpoint": checkpoint,
            "checkpoint_file": checkpoint_key(one.run_dir, one.checkpoint),
            "checkpoint_epoch": one.epoch,
            "data": str(Path(data).resolve()),
            "layout": dataset.layout,
            "cases_from": chosen_by,
            "cases": [case.case_id for case in cases],
            "tasks": fit_run(one, cases, batch_size, progress),
        }
    return {write_temperature_file(run_dir, payload, overwrite=overwrite): payload
            for run_dir, payload in payloads.items()}


def format_calibration(results: dict[Path, dict]) -> str:
    """A plain-text table: one line per run and task with T and the soft CE and ECE before
    and after."""
    lines = [f"{'run':<12} {'task':<10} {'T':>7}  {'soft CE before -> after':>24}  "
             f"{'ECE before -> after':>20}  {'pixels':>10}"]
    for path, payload in results.items():
        for task, entry in payload["tasks"].items():
            lines.append(
                f"{path.parent.name:<12} {task:<10} {entry['temperature']:>7.4f}  "
                f"{entry['soft_ce_before']:>11.4f} -> {entry['soft_ce_after']:<9.4f}  "
                f"{entry['ece_before']:>9.4f} -> {entry['ece_after']:<7.4f}  {entry['n_pixels']:>10}"
            )
    return "\n".join(lines)
