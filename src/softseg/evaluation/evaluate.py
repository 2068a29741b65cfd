"""Evaluation: probability maps on disk + a labelled dataset -> per-case tables and summaries.

Reads one probability map per case and task, in either layout ``softseg predict`` writes
(matched to the dataset's labelled cases by :mod:`softseg.evaluation.matching`), computes every metric of
:mod:`softseg.evaluation.metrics` and writes the evaluation folder of docs/architecture.md::

    metrics.csv   one row per case, task, threshold      (:mod:`softseg.evaluation.rows`)
    cases.csv     one row per case and task
    curves.csv    one row per case, task and t = 0.01 ... 0.99
    classes.csv   multi-class data: class-wise ECE and multi-class Brier per case
    summary.json  the typed, versioned result             (:mod:`softseg.evaluation.result`)
    tables.md     Tables 2 and 3 in the paper's form, for people (:mod:`softseg.evaluation.tables`)

Missing or extra predictions, shape mismatches and unreadable maps are collected and raised
together as one :class:`DatasetError`; outputs are written into a temporary folder that
replaces ``out`` only when everything succeeded.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from softseg import __version__
from softseg.data import io
from softseg.evaluation import metrics, sampled
from softseg.data.cases import CaseQuery, Dataset
from softseg.data.datasets import load_dataset
from softseg.errors import DatasetError, SoftsegError
from softseg.evaluation.matching import Prediction, match_predictions
from softseg.evaluation.result import (SUMMARY_FILE, ByThreshold, Calibration, ClassCalibration,
                                       EvaluationResult, MeanStd, Reliability, Table2, Table3,
                                       TaskResult, to_json)
from softseg.evaluation.rows import (CASES_COLUMNS, CLASSES_FILE, CURVES_COLUMNS, METRICS_COLUMNS,
                                     class_columns, class_row, csv_text, prediction_rows)
from softseg.evaluation.tables import tables_markdown
from softseg.files import prepare_out_dir, publish_folder, temp_folder, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

TABLE2_KEYS = ("dice", "precision", "recall", "hd95", "hd95_mm", "gt_area_frac")
TABLE3_KEYS = ("ged2", "pred_rater_dist", "rater_diversity", "expected_dice")

CONVENTIONS = {
    "thresholds": "np.arange(1, 10) / 10 (0.1 ... 0.9); a map is binarised with map >= t, "
                  "compared at the map's own float precision",
    "empty_masks": "both empty: Dice = IoU = precision = recall = 1, HD95 = 0; prediction empty "
                   "only: precision = recall = Dice = 0; truth empty only: recall = precision = "
                   "Dice = 0; exactly one empty: HD95 undefined (status one_empty, counted, "
                   "left out of HD95 means)",
    "hd95": "border pixels (mask XOR erosion by the cross element, outside the image is "
            "background), exact Euclidean distances between borders, 95th percentile "
            "(linear interpolation) of each direction, maximum of the two directions "
            "(MONAI / MetricsReloaded convention; medpy pools directions and is lower); "
            "hd95 in pixels, hd95_mm scaled by the image spacing",
    "table2_summary": "per threshold the mean over cases, then mean ± std (ddof 0) over the 9 "
                      "thresholds (the paper's form); 'over_cases': each case's mean over "
                      "thresholds, then mean ± std over cases",
    "table3": "prediction >= 0.5 against each rater; d = 1 - IoU with d(empty, empty) = 0; "
              "D²_GED = 2 E_y[d(y, ŷ)] - E_{y≠y'}[d(y, y')] over distinct rater pairs; "
              "E[Dice(y, ŷ)] with Dice(empty, empty) = 1; mean ± std (ddof 0) over cases; "
              "n/a for agreement maps (no individual raters)",
    "qubiq": "mean over t = 0.1 ... 0.9 of Dice(prediction >= t, soft label >= t)",
    "calibration": "target = soft label; 10 equal-width bins of the predicted probability "
                   "(bin i: i/10 <= p < (i+1)/10, p = 1 in the last); ECE = sum over bins of "
                   "count/N * |mean p - mean soft label|; Brier = mean (p - soft label)^2; "
                   "all pixels count; per case, then mean ± std over cases; 'pooled' uses "
                   "every pixel of every case",
    "curves": "precision, recall, Dice of prediction >= t against soft label >= t, "
              "t = np.arange(1, 100) / 100",
}
CLASS_CONVENTIONS = {
    "multiclass": "the tasks are the foreground classes, each evaluated as its binary problem "
                  "(class c's map against the class-c soft label; a rater's mask is that rater's "
                  "map == c); the background map and the label map are not tasks",
    "classwise_ece": "over all classes, background included: the mean over classes of each "
                     "class's ECE (the binning above) against its soft label (Metrics Reloaded's "
                     "cwECE with the class distribution as reference); per case, then mean ± std "
                     "over cases; 'pooled' takes each class's ECE over every pixel of every case",
    "multiclass_brier": "mean over pixels of sum over classes (p_c - g_c)^2 against the class "
                        "distribution g, in [0, 2]; per case, then mean ± std over cases",
}


# ----------------------------------------------------------------------------- per case


def evaluate_prediction(pred: Prediction, prob: np.ndarray | None = None) -> dict:
    """``metrics.case_metrics`` of one matched file (``prob``: its map, when already read);
    SoftsegError naming the file if unusable."""
    from softseg.data.labels import soft_label

    if prob is None:
        prob, _ = io.read_probability(pred.path)
    shape = pred.case.spatial_shape
    if prob.shape != shape:
        raise SoftsegError(
            f"{pred.path}: prediction shape {prob.shape} != image shape {shape} of case "
            f"{pred.case.case_id}; predict on the source image's grid"
        )
    masks = pred.case.masks.get(pred.task)
    # Unit spacing (PNG, or unknown) adds nothing to HD95 in pixels: no physical column.
    spacing = pred.case.spacing if any(s != 1.0 for s in pred.case.spacing) else None
    result = metrics.case_metrics(prob, soft_label(pred.case, pred.task), masks, spacing=spacing)
    result["n_raters"] = int(pred.case.n_raters.get(pred.task, 0)) or None
    return result


# ----------------------------------------------------------------------------- summary


def _mean_std(values) -> MeanStd:
    """Mean ± std (ddof 0) of the defined (non-NaN) values, with their count."""
    values = np.asarray(values, dtype=np.float64)
    defined = values[~np.isnan(values)]
    if defined.size == 0:
        return MeanStd(None, None, 0)
    return MeanStd(float(defined.mean()), float(defined.std()), int(defined.size))


def _nanmean_rows(matrix: np.ndarray) -> np.ndarray:
    """Row means over defined values; NaN for a row with none (no warning)."""
    counts = (~np.isnan(matrix)).sum(axis=1)
    sums = np.nansum(matrix, axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _defined(values) -> tuple[float | None, ...]:
    return tuple(None if math.isnan(v) else float(v) for v in values)


def _pool(reliabilities: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per-case reliability data pooled over every pixel of every case: counts, mean
    prediction and mean soft label per bin (NaN for an empty bin), and the pooled ECE."""
    counts = np.sum([p["count"] for p in reliabilities], axis=0)
    sum_pred = np.nansum([p["count"] * p["mean_pred"] for p in reliabilities], axis=0)
    sum_soft = np.nansum([p["count"] * p["mean_soft"] for p in reliabilities], axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_pred = np.where(counts > 0, sum_pred / counts, np.nan)
        mean_soft = np.where(counts > 0, sum_soft / counts, np.nan)
    return counts, mean_pred, mean_soft, float(np.abs(sum_pred - sum_soft).sum() / counts.sum())


def summarise_classes(classes: tuple[str, ...], results: list[dict]) -> ClassCalibration:
    """The calibration over all classes of ``metrics.class_calibration`` results, one per case."""
    by_class = [_pool([r["reliability"][k] for r in results])[3] for k in range(len(classes))]
    return ClassCalibration(
        classes=classes,
        n_cases=len(results),
        classwise_ece=_mean_std([r["classwise_ece"] for r in results]),
        brier=_mean_std([r["brier"] for r in results]),
        classwise_ece_pooled=float(np.mean(by_class)),
        ece_by_class_pooled=dict(zip(classes, by_class)),
    )


def evaluate_classes(dataset: Dataset, pred: Prediction) -> tuple[dict[str, np.ndarray], dict]:
    """Multi-class data: every class map of ``pred``'s case folder (background included) and
    their ``metrics.class_calibration`` against the case's class distribution. SoftsegError
    naming the folder when a class map is missing or unusable."""
    from softseg.data.labels import class_distribution

    folder, case = pred.path.parent, pred.case
    suffix = pred.path.name[len(io.stem(pred.path)):]
    files = [folder / f"{name}{suffix}" for name in dataset.classes]
    try:
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise SoftsegError(f"missing class map(s) {', '.join(missing)}; expected one map per "
                               f"class ({', '.join(dataset.classes)}) as `softseg predict` writes "
                               "them for multi-class data")
        maps = {name: io.read_probability(f)[0] for name, f in zip(dataset.classes, files)}
        wrong = [f"{f.name} {m.shape}" for f, m in zip(files, maps.values()) if m.shape != case.spatial_shape]
        if wrong:
            raise SoftsegError(f"class map shape(s) {', '.join(wrong)} != image shape "
                               f"{case.spatial_shape} of case {case.case_id}")
        target = class_distribution(case, dataset.classes)
        return maps, metrics.class_calibration(np.stack(list(maps.values())), target)
    except SoftsegError as error:
        raise SoftsegError(f"{folder}: {error}") from error


def summarise_task(results: list[dict]) -> TaskResult:
    """Summary of one task over its cases' ``case_metrics`` (see ``CONVENTIONS`` for every rule)."""
    table2: dict = {}
    by_threshold: dict = {}
    over_cases: dict = {}
    has_mm = all(r["table2"]["hd95_mm"] is not None for r in results)
    for key in TABLE2_KEYS:
        if key == "hd95_mm" and not has_mm:
            table2[key] = by_threshold[key] = over_cases[key] = None
            continue
        matrix = np.stack([np.asarray(r["table2"][key], dtype=np.float64) for r in results])
        per_threshold = _nanmean_rows(matrix.T)  # mean over cases at each threshold
        by_threshold[key] = _defined(per_threshold)
        table2[key] = _mean_std(per_threshold)
        over_cases[key] = _mean_std(_nanmean_rows(matrix))
    status = np.stack([r["table2"]["hd95_status"] for r in results])
    undefined = status == "one_empty"

    with_raters = [r["table3"] for r in results if r["table3"] is not None]
    table3 = None
    if with_raters:
        table3 = Table3(**{key: _mean_std([t[key] for t in with_raters]) for key in TABLE3_KEYS})

    pooled = [r["calibration"]["reliability"] for r in results]
    counts, mean_pred, mean_soft, ece_pooled = _pool(pooled)
    calibration = Calibration(
        ece=_mean_std([r["calibration"]["ece"] for r in results]),
        brier=_mean_std([r["calibration"]["brier"] for r in results]),
        ece_pooled=ece_pooled,
        n_bins=metrics.ECE_BINS,
        reliability=Reliability(
            bin_edges=tuple(float(e) for e in pooled[0]["bin_edges"]),
            count=tuple(int(c) for c in counts),
            mean_pred=_defined(mean_pred),
            mean_soft=_defined(mean_soft),
        ),
    )
    with_samples = [r["sampled"] for r in results if r.get("sampled") is not None]
    return TaskResult(
        n_cases=len(results),
        table2=Table2(**table2),
        table2_by_threshold=ByThreshold(
            threshold=tuple(metrics.THRESHOLDS.tolist()), **by_threshold,
            hd95_undefined=tuple(int(n) for n in undefined.sum(axis=0))),
        table2_over_cases=Table2(**over_cases),
        table3=table3,
        table3_note=None if table3 is not None else
        "n/a: agreement maps have no individual rater masks",
        qubiq=_mean_std([r["qubiq"] for r in results]),
        calibration=calibration,
        hd95_undefined=int(undefined.sum()),
        hd95_undefined_cases=int(undefined.any(axis=1).sum()),
        hd95_rows=int(undefined.size),
        sampled={key: _mean_std([v[key] for v in with_samples]) for key in with_samples[0]} if with_samples else None,
    )


def evaluate(
    predictions: str | Path,
    data: str | Path | Dataset,
    out: str | Path,
    *,
    query: CaseQuery = CaseQuery(),
    samples: Sequence[int] = (),
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Evaluate the probability maps in ``predictions`` against ``data``; write ``out``.

    ``data`` is a dataset folder (read with ``load_dataset(data, query.layout)``) or a loaded
    :class:`Dataset` (e.g. a subset from ``Dataset.select``). The query's ``tasks`` limits the
    tasks (default: all of the dataset); its ``split`` keeps one split ("Validation", ...) and
    its ``case_ids`` given cases (predictions of the dataset's other cases are skipped). Every
    labelled case and task of the selection needs a prediction. ``samples`` (hypothesis
    counts N) adds the LIDC benchmark's D²_GED, HM-IoU and diversity over N hypotheses per case
    (:mod:`softseg.evaluation.sampled`: a sampling run's draws, else level sets of the map) and
    the D²_GED of the map at 0.5 to cases.csv and the summary. Refuses a non-empty ``out``
    unless ``overwrite`` (then files of the same names are replaced, others kept). Raises
    DatasetError listing every problem before anything is written. Returns ``out``.
    """
    tasks, split, case_ids = query.tasks, query.split, query.case_ids
    out = prepare_out_dir(out, overwrite=overwrite, resume=None, what="evaluation", create=False)
    dataset = data if isinstance(data, Dataset) else load_dataset(data, layout=query.layout)
    if case_ids is not None:
        unknown = sorted(set(case_ids) - {c.case_id for c in dataset.cases})
        if unknown:
            raise SoftsegError(f"unknown case id(s) {', '.join(unknown[:10])}; "
                               f"{dataset.root} has no such case")
    wanted = {c.case_id for c in dataset.select(split=split, case_ids=case_ids).cases}
    if tasks:
        unknown = [t for t in tasks if t not in dataset.tasks]
        if unknown:
            raise SoftsegError(f"unknown task(s) {', '.join(unknown)}; the dataset has "
                               f"{', '.join(dataset.tasks)}")
    chosen = tuple(tasks) if tasks else dataset.tasks
    matched, pred_layout = match_predictions(Path(predictions), dataset, chosen, wanted)
    counts = sampled.check_counts(samples)
    source = sampled.source_of(Path(predictions)) if counts else None
    if counts:
        sampled.check_source(source, counts, Path(predictions))

    problems: list[str] = []
    rows: dict[str, list] = {"metrics": [], "cases": [], "curves": []}
    by_task: dict[str, list[dict]] = {t: [] for t in chosen}
    by_case: list[tuple[str, dict]] = []  # multi-class data: the calibration over all classes
    maps: dict[str, np.ndarray] | None = None  # multi-class data: the current case's class maps
    maps_case = None
    for pred in tqdm(matched, desc="evaluate", unit="map", disable=not progress):
        if dataset.classes and pred.case.case_id != maps_case:
            # matches come case by case: each class map is read once, at the case's first task
            maps_case, maps = pred.case.case_id, None
            try:
                maps, calibration = evaluate_classes(dataset, pred)
                by_case.append((maps_case, calibration))
            except SoftsegError as error:
                problems.append(str(error))
        if dataset.classes and maps is None:
            continue  # the case's problem is recorded once, naming its folder
        try:
            prob = maps[pred.task] if maps else (io.read_probability(pred.path)[0] if counts else None)
            result = evaluate_prediction(pred, prob)
            if counts:
                result["sampled"] = sampled.case_scores(pred, prob, counts, source, maps)
        except SoftsegError as error:
            problems.append(str(error))
            continue
        metric_rows, case_row, curve_rows = prediction_rows(pred.case.case_id, pred.task, result)
        rows["metrics"] += metric_rows
        rows["cases"].append({**case_row, **result.get("sampled", {})})
        rows["curves"] += curve_rows
        by_task[pred.task].append(result)
    if problems:
        raise DatasetError(problems, header=f"{predictions}: {len(problems)} prediction(s) "
                           "cannot be evaluated; nothing written")

    summary = EvaluationResult(
        softseg_version=__version__,
        predictions=Path(predictions).resolve(),
        predictions_layout=pred_layout,
        data=Path(dataset.root).resolve(),
        dataset=dataset.name,
        layout=dataset.layout,
        split=split,
        cases=tuple(dict.fromkeys(p.case.case_id for p in matched)),
        # the file evaluated for every task and case, relative to "predictions"
        files={
            t: {p.case.case_id: p.path.relative_to(Path(predictions)).as_posix()
                for p in matched if p.task == t}
            for t in chosen
        },
        conventions={**CONVENTIONS, **(CLASS_CONVENTIONS if dataset.classes else {}),
                     **({"hypotheses": f"{sampled.CONVENTION}; here: {source.description}",
                         "hypothesis_counts": list(counts)} if counts else {}),
                     "ece_bins": metrics.ECE_BINS, "hd95_percentile": 95, "hd95_directions": "max"},
        tasks={t: summarise_task(r) for t, r in by_task.items() if r},
        classes=summarise_classes(dataset.classes, [r for _, r in by_case]) if by_case else None,
    )
    tmp = temp_folder(out)
    try:
        write_text_atomic(tmp / "metrics.csv", csv_text(METRICS_COLUMNS, rows["metrics"]))
        write_text_atomic(tmp / "cases.csv", csv_text(
            CASES_COLUMNS + (sampled.keys(counts) if counts else ()), rows["cases"]))
        write_text_atomic(tmp / "curves.csv", csv_text(CURVES_COLUMNS, rows["curves"]))
        if by_case:
            write_text_atomic(tmp / CLASSES_FILE, csv_text(
                class_columns(dataset.classes), [class_row(c, dataset.classes, r) for c, r in by_case]))
        write_json_atomic(tmp / SUMMARY_FILE, to_json(summary))
        write_text_atomic(tmp / "tables.md", tables_markdown(summary))
        # another process may have filled "out" while this one evaluated
        prepare_out_dir(out, overwrite=overwrite, resume=None, what="evaluation", create=False)
        publish_folder(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info("evaluated %d maps of %d cases into %s", len(matched), len(summary.cases), out)
    return out
