"""Operating thresholds: pick the confidence level that meets a precision/recall requirement.

A soft-label model outputs one probability map per image; the paper's promise is that the
user thresholds it at the confidence that suits the application. This module turns that into
a number, on validation data:

* The prediction is binarised with ``p >= t`` for every ``t`` of the evaluation's fine grid
  :data:`softseg.evaluation.metrics.FINE_THRESHOLDS`, ``np.arange(1, 100) / 100`` (exact
  hundredths; ``np.linspace`` would flip ``k/n >= t`` ties), so an operating point is one of
  the thresholds the evaluation reports.
* It is compared with a *fixed* reference, the soft label thresholded at ``reference_level``
  (default 0.5: the raters' majority, ties to foreground). The reference does not move with
  ``t``: the question answered is "which of the raters' consensus pixels does the model find
  at this confidence", unlike Table 2 where both sides are thresholded at ``t``.
* Counts are **pooled** over cases (sum of true positives, false positives and false
  negatives over all pixels of all cases) before precision and recall are computed, so a
  large structure weighs more than a small one; an operating point is a property of the
  deployment, not of an average case.
* Precision with no predicted pixel is undefined (NaN) and never meets a precision target;
  a reference with no foreground pixel at all raises :class:`SoftsegError` (recall undefined).
* The picker keeps the thresholds that meet the requirement and, among them, takes the best
  value of the other measure; equal values go to the **higher** threshold (the more
  confident operating point). A requirement that no threshold meets raises
  :class:`SoftsegError` naming the best value achievable, never a silent fallback.

The criteria ``risk_fnr`` and ``risk_fdr`` instead choose a threshold with a guarantee on new
images (:mod:`softseg.inference.risk`); the trade-off table is reported for them too.

The pure functions come first; :func:`choose_threshold` runs the model on a dataset's
validation cases (see docs/prediction.md). The ``threshold.json`` of a run is written and
read by :mod:`softseg.inference.runs`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from softseg import __version__
from softseg.errors import SoftsegError
from softseg.data.cases import CaseQuery
from softseg.inference import RunOptions
from softseg.evaluation.metrics import FINE_THRESHOLDS
from softseg.inference.risk import RiskControl, control, count_at_least, losses_of, risk_summary
from softseg.model.heads import head_of

log = logging.getLogger(__name__)

CRITERIA = ("target_recall", "target_precision", "max_f1")
# with a guarantee (softseg.inference.risk): conformal risk control of the false-negative rate,
# Learn-then-Test of the false-discovery rate; their target is the risk level alpha
RISK_CRITERIA = {"risk_fnr": "fnr", "risk_fdr": "fdr"}


@dataclass(frozen=True)
class Tradeoff:
    """Pooled counts and measures of ``p >= t`` for every threshold, one entry per threshold.

    ``tp``/``fp``/``fn`` are int64 pixel counts summed over cases; ``precision`` is NaN
    where nothing is predicted; ``recall`` and ``f1`` are always defined.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray


@dataclass(frozen=True)
class OperatingPoint:
    """The chosen threshold and its pooled measures on the data it was chosen on."""

    criterion: str
    target: float | None
    threshold: float
    precision: float
    recall: float
    f1: float


def pooled_counts(
    probabilities: Sequence[np.ndarray],
    references: Sequence[np.ndarray],
    thresholds: np.ndarray = FINE_THRESHOLDS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives and false negatives of ``p >= t``, summed over cases.

    ``probabilities[i]`` is any-shape float in [0, 1]; ``references[i]`` a bool array of the
    same shape. Returns three int64 arrays of ``len(thresholds)``. Exact ``>=`` comparisons
    at the map's own precision, like :mod:`softseg.evaluation.metrics` (thresholds are cast to float32
    for a float32 map, so float32 0.7 counts as >= 0.7): each map is sorted once and the
    thresholds located by binary search.
    """
    if len(probabilities) != len(references):
        raise SoftsegError(
            f"got {len(probabilities)} probability maps but {len(references)} reference "
            "masks; pass one reference per prediction"
        )
    thresholds = np.asarray(thresholds, dtype=np.float64)
    tp = np.zeros(len(thresholds), dtype=np.int64)
    fp = np.zeros(len(thresholds), dtype=np.int64)
    fn = np.zeros(len(thresholds), dtype=np.int64)
    for index, (prob, ref) in enumerate(zip(probabilities, references)):
        prob = np.asarray(prob)
        if not np.issubdtype(prob.dtype, np.floating):
            prob = prob.astype(np.float64)
        ref = np.asarray(ref, dtype=bool)
        if prob.shape != ref.shape:
            raise SoftsegError(
                f"map {index}: prediction shape {prob.shape} != reference shape {ref.shape}; "
                "predict on the same grid as the labels"
            )
        levels = thresholds.astype(prob.dtype)
        found = count_at_least(prob[ref], levels)
        tp += found
        fn += int(ref.sum()) - found
        fp += count_at_least(prob[~ref], levels)
    return tp, fp, fn


def tradeoff(
    probabilities: Sequence[np.ndarray],
    references: Sequence[np.ndarray],
    thresholds: np.ndarray = FINE_THRESHOLDS,
) -> Tradeoff:
    """Pooled precision, recall and F1 of ``p >= t`` against fixed references, per threshold.

    Raises :class:`SoftsegError` when the references hold no foreground pixel at all, since
    recall (and so any operating point) is then undefined.
    """
    tp, fp, fn = pooled_counts(probabilities, references, thresholds)
    return tradeoff_from_counts(tp, fp, fn, thresholds, len(references))


def tradeoff_from_counts(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, thresholds: np.ndarray, n_cases: int
) -> Tradeoff:
    """:class:`Tradeoff` from pooled counts (e.g. summed case by case with :func:`pooled_counts`).

    ``n_cases`` only serves the message raised when the references hold no foreground.
    """
    tp, fp, fn = (np.asarray(a, dtype=np.int64) for a in (tp, fp, fn))
    if len(tp) and tp[0] + fn[0] == 0:
        raise SoftsegError(
            f"the reference masks of all {n_cases} cases are empty, so recall is "
            "undefined; choose cases with foreground or a lower --reference-level"
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
    recall = tp / (tp + fn)
    f1 = 2 * tp / (2 * tp + fp + fn)
    return Tradeoff(np.asarray(thresholds, dtype=np.float64), tp, fp, fn, precision, recall, f1)


def pick_threshold(table: Tradeoff, criterion: str, target: float | None = None) -> OperatingPoint:
    """The threshold meeting ``criterion`` with the best value of the other measure.

    ``criterion``: "target_recall" (recall >= target, then highest precision),
    "target_precision" (precision >= target, then highest recall) or "max_f1" (highest F1;
    ``target`` must be None). Ties go to the higher threshold. Raises :class:`SoftsegError`
    for an unknown criterion, a target outside (0, 1], or a target that no threshold meets.
    """
    if criterion not in CRITERIA:
        raise SoftsegError(f"unknown criterion {criterion!r}; expected one of {', '.join(CRITERIA)}")
    if criterion == "max_f1":
        if target is not None:
            raise SoftsegError("max_f1 takes no target; drop the target value")
        score = table.f1
        meets = np.ones(len(score), dtype=bool)
        if not (score > 0).any():
            raise SoftsegError(
                "F1 is 0 at every threshold (no reference pixel is ever predicted); the best "
                "achievable is F1 0; check that the model and the data belong together"
            )
    else:
        if target is None or not (0.0 < float(target) <= 1.0):
            raise SoftsegError(
                f"{criterion.replace('_', ' ')} must be in (0, 1], got {target!r}; "
                "give a fraction such as 0.9"
            )
        own, other = (
            (table.recall, table.precision)
            if criterion == "target_recall"
            else (table.precision, table.recall)
        )
        meets = np.nan_to_num(own, nan=-1.0) >= float(target)
        if not meets.any():
            achieved = np.nan_to_num(own, nan=-1.0)
            best = int(np.flatnonzero(achieved == achieved.max())[-1])
            name = "recall" if criterion == "target_recall" else "precision"
            raise SoftsegError(
                f"no threshold in {table.thresholds[0]:g}..{table.thresholds[-1]:g} reaches "
                f"{name} {float(target):g}; the best achievable is {name} {own[best]:.4f} at "
                f"threshold {table.thresholds[best]:g}; lower the target or improve the model"
            )
        score = other
    candidates = np.flatnonzero(meets)
    values = np.nan_to_num(score[candidates], nan=-1.0)
    # ties -> the higher threshold: the last index holding the maximum
    chosen = int(candidates[np.flatnonzero(values == values.max())[-1]])
    return OperatingPoint(
        criterion=criterion,
        target=None if target is None else float(target),
        threshold=float(table.thresholds[chosen]),
        precision=float(table.precision[chosen]),
        recall=float(table.recall[chosen]),
        f1=float(table.f1[chosen]),
    )


def format_tradeoff(table: Tradeoff, chosen: float | None = None, every: int = 5) -> str:
    """A plain-text trade-off table: every ``every``-th threshold plus the chosen one (marked)."""
    lines = [f"{'threshold':>9}  {'precision':>9}  {'recall':>7}  {'F1':>7}"]
    for i, t in enumerate(table.thresholds):
        is_chosen = chosen is not None and math.isclose(t, chosen)
        if not is_chosen and (i + 1) % every:
            continue
        precision = "n/a" if np.isnan(table.precision[i]) else f"{table.precision[i]:.4f}"
        mark = "  <- chosen" if is_chosen else ""
        lines.append(
            f"{t:>9.2f}  {precision:>9}  {table.recall[i]:>7.4f}  {table.f1[i]:>7.4f}{mark}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- on a run


def _validation_ids(run_dirs: Sequence[Path]) -> list[str]:
    """The validation case ids recorded in the runs' ``split.json``; all runs must agree."""
    from softseg.inference.runs import SPLIT_FILE, validation_ids

    found: dict[tuple[str, ...], Path] = {}
    for run in run_dirs:
        ids = tuple(validation_ids(run, way_out="pass --split to choose the cases explicitly"))
        found.setdefault(ids, Path(run) / SPLIT_FILE)
    if len(found) > 1:
        raise SoftsegError(
            f"the runs were validated on different cases ({', '.join(map(str, found.values()))}); "
            "pass --split to choose one set of cases for all of them"
        )
    ids = list(next(iter(found)))
    if not ids:
        raise SoftsegError(
            f"{next(iter(found.values()))}: the run has no validation cases; pass --split "
            "(e.g. --split Validation) to choose the cases"
        )
    return ids


def choose_threshold(
    run: str | Path,
    data: str | Path,
    *,
    criterion: str,
    target: float | None = None,
    delta: float | None = None,
    reference_level: float = 0.5,
    query: CaseQuery = CaseQuery(),
    options: RunOptions = RunOptions(),
) -> tuple[dict, dict[str, Tradeoff]]:
    """Predict the validation cases of ``data`` with ``run`` and pick one threshold per task.

    ``run`` is a run folder or a folder of seeds (averaged). Cases: those of the query's
    ``split`` when given, else the validation ids of the run's ``split.json`` (the query's
    ``layout`` reads ``data``). The predictions are those ``softseg predict`` makes with the
    same ``options`` (checkpoint, temperature, tta)
    (recorded in the payload). The reference of each case and task is its soft label
    ``>= reference_level``. Returns ``(payload, tables)``: the
    ``threshold.json`` content (not written; see :func:`write_threshold_file`) and the
    trade-off table of every task. Raises SoftsegError when a case is missing or unlabelled,
    or when no threshold meets the requirement for some task.

    ``criterion`` "risk_fnr" (``target`` = alpha) or "risk_fdr" (``target`` = alpha, ``delta``)
    chooses with a guarantee (:mod:`softseg.inference.risk`) from the raters' own masks; the
    calibration cases must then be cases no run trained on (with the other criteria, such
    cases are only warned about: the measures are optimistic on them).
    """
    from softseg.data.datasets import load_dataset
    from softseg.data.labels import soft_label
    from softseg.inference.predict import check_run_channels, predict_cases, tta_record
    from softseg.inference.runs import applied_temperatures, load_models, resolve_runs

    layout, split = query.layout, query.split
    checkpoint, temperature, tta = options.checkpoint, options.temperature, options.tta
    if not (0.0 < reference_level <= 1.0):
        raise SoftsegError(f"--reference-level must be in (0, 1], got {reference_level}")
    if criterion not in (*CRITERIA, *RISK_CRITERIA):
        raise SoftsegError(f"unknown criterion {criterion!r}; expected one of "
                           f"{', '.join((*CRITERIA, *RISK_CRITERIA))}")
    risk = RISK_CRITERIA.get(criterion)
    if risk == "fdr" and delta is None:
        raise SoftsegError("--risk fdr needs --delta, the probability that the guarantee fails (e.g. 0.1)")
    run_set = resolve_runs([run])
    cases, chosen_by = _threshold_cases(load_dataset(data, layout=layout), Path(data), split, run_set.run_dirs)
    loaded = load_models(run_set.run_dirs, device=options.device, checkpoint=checkpoint, temperature=temperature)
    tasks = loaded[0].tasks
    unlabelled = [f"{c.case_id} ({t})" for c in cases for t in tasks if not c.is_labelled(t)]
    if unlabelled:
        raise SoftsegError(
            f"{len(unlabelled)} validation case/task(s) have no labels: "
            f"{', '.join(unlabelled[:10])}; choose labelled cases (e.g. --split Validation)"
        )
    check_run_channels(cases, loaded[0])
    _check_unseen(run_set.run_dirs, [c.case_id for c in cases], refuse=risk is not None)
    if risk is not None:
        _check_rater_masks(cases, tasks)
    losses: dict[str, list[np.ndarray]] = {task: [] for task in tasks}

    zeros = lambda: np.zeros(len(FINE_THRESHOLDS), dtype=np.int64)  # noqa: E731
    counts = {task: [zeros(), zeros(), zeros()] for task in tasks}
    channels = head_of(loaded[0].config).task_channels()  # multi-class: the maps start with the background
    for case, prob in predict_cases(loaded, cases, options.batch_size, options.progress, tta=tta):
        for task, task_prob in zip(tasks, prob[channels]):
            soft = np.asarray(soft_label(case, task))
            reference = soft >= np.asarray(reference_level, dtype=soft.dtype)
            for total, part in zip(counts[task], pooled_counts([task_prob], [reference])):
                total += part
            if risk is not None:
                losses[task].append(losses_of(risk, [task_prob], [case.masks[task]], FINE_THRESHOLDS)[0])
    tables: dict[str, Tradeoff] = {}
    points: dict[str, OperatingPoint] = {}
    controls: dict[str, RiskControl] = {}
    for task in tasks:
        tables[task] = tradeoff_from_counts(*counts[task], FINE_THRESHOLDS, len(cases))
        try:
            if risk is None:
                points[task] = pick_threshold(tables[task], criterion, target)
            else:
                controls[task] = control(risk, np.stack(losses[task]), FINE_THRESHOLDS, target, delta)
                points[task] = point_at(tables[task], criterion, target, controls[task].threshold)
        except SoftsegError as error:
            raise SoftsegError(f"{task}: {error}") from None

    def listed(values: np.ndarray) -> list:
        return [None if np.isnan(v) else round(float(v), 6) for v in values]

    payload = {
        "softseg_version": __version__,
        "criterion": criterion,
        "target": None if target is None else float(target),
        "reference": f"soft label >= {reference_level:g}",
        "reference_level": float(reference_level),
        "pooling": "TP/FP/FN summed over all pixels of all cases, then precision and recall",
        "ties": "the higher threshold",
        "grid": "np.arange(1, 100) / 100",
        "data": str(Path(data).resolve()),
        "cases_from": chosen_by,
        "cases": [c.case_id for c in cases],
        "runs": [str(r) for r in run_set.run_dirs],
        "run_names": [os.path.relpath(r, Path(run).resolve()) for r in run_set.run_dirs],
        "checkpoint": checkpoint,
        "temperatures": applied_temperatures(loaded),
        "tta": tta_record(loaded, tta),
        "tasks": {task: {**{k: v for k, v in asdict(p).items() if k not in ("criterion", "target")},
                         **({"risk": controls[task].entry()} if task in controls else {})}
                  for task, p in points.items()},
        "tradeoff": {
            task: {
                "threshold": [float(t) for t in table.thresholds],
                "precision": listed(table.precision),
                "recall": listed(table.recall),
                "f1": listed(table.f1),
            }
            for task, table in tables.items()
        },
    }
    if risk is not None:
        payload.update(risk_summary(risk, target, delta, len(cases), len(tasks)))
    return payload, tables


def _threshold_cases(dataset, data: Path, split: str | None, run_dirs: Sequence[Path]):
    """The cases a threshold is chosen on, and how they were chosen: those of ``split``, or
    else the runs' validation ids."""
    if split is not None:
        cases = dataset.select(split=split).cases
        if not cases:
            raise SoftsegError(f"{data}: no cases in split {split!r}; check --split")
        return cases, f"split {split}"
    ids = _validation_ids(run_dirs)
    cases = dataset.select(case_ids=ids).cases
    missing = sorted(set(ids) - {c.case_id for c in cases})
    if missing:
        raise SoftsegError(
            f"{data}: the run's validation cases {', '.join(missing[:10])} are not in this "
            "dataset; give the data the run was trained on, or pass --split"
        )
    return cases, "the run's validation ids (split.json)"


def _check_rater_masks(cases, tasks: Sequence[str]) -> None:
    """Risk control needs each rater's own mask: agreement maps alone do not give it."""
    no_masks = sorted({f"{c.case_id} ({t})" for c in cases for t in tasks if t not in c.masks})
    if no_masks:
        raise SoftsegError(
            f"{len(no_masks)} case/task(s) have no individual rater masks ({', '.join(no_masks[:5])}): "
            "the risk is each rater's false-negative or false-discovery rate; agreement maps alone "
            "do not give it; calibrate on data with rater masks"
        )


def point_at(table: Tradeoff, criterion: str, target: float | None, threshold: float) -> OperatingPoint:
    """The :class:`OperatingPoint` of the trade-off table's row at ``threshold`` (one of its
    thresholds): what a threshold chosen otherwise (risk control) measures on these cases."""
    index = int(np.argmin(np.abs(table.thresholds - threshold)))
    return OperatingPoint(criterion, target, float(table.thresholds[index]), float(table.precision[index]),
                          float(table.recall[index]), float(table.f1[index]))


def _check_unseen(run_dirs: Sequence[Path], case_ids: Sequence[str], *, refuse: bool) -> None:
    """Calibration cases must be cases the runs did not train on: a model fits its training
    cases, so what it measures there is optimistic and no guarantee follows from them."""
    from softseg.inference.runs import training_ids

    seen = sorted({i for run in run_dirs for i in training_ids(run, "the run's training cases are unknown")}
                  & set(case_ids))
    if not seen:
        return
    message = (f"{len(seen)} of the {len(case_ids)} cases were training cases of the run(s) "
               f"({', '.join(seen[:5])}{' ...' if len(seen) > 5 else ''})")
    if refuse:
        raise SoftsegError(f"{message}; risk control needs cases the model never trained on: use its "
                           "validation cases (the default) or a held-out split")
    log.warning("%s; the measures on them are optimistic", message)
