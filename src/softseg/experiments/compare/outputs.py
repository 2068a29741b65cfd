"""The files of ``softseg compare`` beyond the side-by-side table: per-fold means, paired
statistics, training fractions and their figures.

Per-case values come from each evaluation's ``cases.csv`` (through
:func:`softseg.evaluation.rows.read_rows`); the statistics are computed by
:mod:`softseg.experiments.compare.statistics`, the figures drawn by
:mod:`softseg.report.comparison`. CSV and JSON hold native units (fractions); the Markdown and
the figures show each metric as :mod:`softseg.evaluation.registry` says (label, display unit,
decimals, which direction is better).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from softseg.errors import DatasetError, SoftsegError
from softseg.evaluation.registry import ALL_CLASSES, better_sentence, spec
from softseg.evaluation.rows import CLASSES_FILE, csv_text, read_class_rows, read_rows
from softseg.evaluation.sampled import keys as sampled_keys
from softseg.experiments.cells import format_diff
from softseg.experiments.compare.statistics import (
    ALPHA, CI_METHOD, CLASS_METRICS, CONFIDENCE, METRICS, N_RESAMPLES, CaseValues, PairedComparison,
)
from softseg.files import write_bytes_atomic, write_json_atomic, write_text_atomic

FOLD_COLUMNS = ("method", "fraction", "seed", "fold", "task", "n_cases", *METRICS)
FRACTION_COLUMNS = ("method", "fraction", "seed", "task", "dice_at_0.5", "qubiq", "ece")
PLOTTED = ("dice_at_0.5", "ece")  # the metrics of the paired and fraction figures
STATISTICS_COLUMNS = (
    "task", "metric", "method", "reference", "n_pairs", "method_mean", "reference_mean", "mean_difference",
    "ci_low", "ci_high", "wilcoxon_statistic", "p_value", "p_holm", "significant", "higher_is_better",
    "better", "note",
)
Run = tuple[str, float, int]  # (method name, training fraction, seed)


def read_case_values(eval_dir: Path, tasks: Sequence[str], metrics: Sequence[str] = METRICS) -> CaseValues:
    """Per task, per case, the ``metrics`` of an evaluation folder: ``dice_at_0.5`` from the
    t = 0.5 rows of ``metrics.csv``, the others from ``cases.csv`` (NaN where undefined).
    Raises :class:`SoftsegError` naming the file when a metric is missing."""
    try:
        rows = read_rows(eval_dir, tasks)
    except DatasetError as error:
        raise SoftsegError(f"{error}; delete {eval_dir} and rerun with --resume") from error
    cases = rows.cases
    from_cases = [m for m in metrics if m != "dice_at_0.5"]
    missing = [m for m in from_cases if m not in cases]
    if missing:
        raise SoftsegError(f"{Path(eval_dir) / 'cases.csv'}: no column(s) {', '.join(missing)} "
                           f"(written by an older softseg?); delete {eval_dir} and rerun with --resume")
    values: dict[str, dict[str, dict[str, float]]] = {}
    for i, (case, task) in enumerate(zip(cases["case"], cases["task"])):
        if task in tasks:
            values.setdefault(str(task), {})[str(case)] = {m: float(cases[m][i]) for m in from_cases}
    if "dice_at_0.5" in metrics:
        m = rows.metrics
        for case, task, threshold, dice in zip(m["case"], m["task"], m["threshold"], m["dice"]):
            if task in tasks and abs(float(threshold) - 0.5) < 1e-9 and str(case) in values.get(str(task), {}):
                values[str(task)][str(case)]["dice_at_0.5"] = float(dice)
        absent = [c for t in values.values() for c, v in t.items() if "dice_at_0.5" not in v]
        if absent:
            raise SoftsegError(f"{Path(eval_dir) / 'metrics.csv'}: no t = 0.5 row for case(s) "
                               f"{', '.join(absent[:5])}; delete {eval_dir} and rerun with --resume")
    return values


def read_class_values(eval_dir: Path) -> CaseValues:
    """Per case, the calibration over all classes of a multi-class evaluation (classes.csv), as
    the one task :data:`~softseg.evaluation.registry.ALL_CLASSES` with the metrics
    :data:`~softseg.experiments.compare.statistics.CLASS_METRICS`. Raises :class:`SoftsegError` naming
    the file when it is missing or unreadable."""
    try:
        table = read_class_rows(eval_dir)
    except DatasetError as error:
        raise SoftsegError(f"{error}; delete {eval_dir} and rerun with --resume") from error
    if table is None:
        raise SoftsegError(f"{Path(eval_dir) / CLASSES_FILE}: expected the calibration over all classes of "
                           f"a multi-class evaluation, found no file (written by an older softseg?); "
                           f"delete {eval_dir} and rerun with --resume")
    return {ALL_CLASSES: {str(case): {"classwise_ece": float(e), "multiclass_brier": float(b)}
                          for case, e, b in zip(table["case"], table["classwise_ece"], table["brier"])}}


def task_metrics(task: str, samples: Sequence[int] = ()) -> tuple[str, ...]:
    """The metrics compare tests for ``task``: the per-task ones (with ``samples``, hypothesis
    counts, also the one-map and sampled D²_GED and the HM-IoU), or those over all classes."""
    if task == ALL_CLASSES:
        return CLASS_METRICS
    return METRICS + tuple(k for k in sampled_columns(samples) if spec(k).better)


def sampled_columns(samples: Sequence[int]) -> tuple[str, ...]:
    """The hypothesis scores of ``samples`` (none without): ged_map, ged_N, hmiou_N, diversity_N."""
    return sampled_keys(samples) if samples else ()


def _diversity(task: str, samples: Sequence[int]) -> tuple[str, ...]:
    """The hypotheses' diversity columns: reported per fold, not tested (no better direction)."""
    return () if task == ALL_CLASSES else tuple(k for k in sampled_columns(samples) if not spec(k).better)


def _nanmean(values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def per_fold_rows(
    case_values: Mapping[Run, CaseValues], folds: Sequence, tasks: Sequence[str], samples: Sequence[int] = (),
) -> list[dict]:
    """One row per run, fold and task: the fold's held-out cases found in the run's
    evaluation (``n_cases``) and the mean over them of each of the task's metrics
    (:func:`task_metrics`; defined values only). ``folds`` are
    :class:`softseg.experiments.compare.splits.Fold`."""
    rows = []
    for (method, fraction, seed), values in case_values.items():
        for fold in folds:
            for task in tasks:
                found = [values.get(task, {})[c] for c in fold.test if c in values.get(task, {})]
                rows.append({"method": method, "fraction": fraction, "seed": seed, "fold": fold.name,
                             "task": task, "n_cases": len(found),
                             **{m: _nanmean([v[m] for v in found])
                                for m in task_metrics(task, samples) + _diversity(task, samples)}})
    return _ordered(rows, tasks)


def fraction_rows(results: Mapping[Run, Mapping], tasks: Sequence[str]) -> list[dict]:
    """One row per run and task: the pooled evaluation's Dice at 0.5, QUBIQ and ECE
    (``pipeline.task_values`` as saved in result.json)."""
    rows = []
    for (method, fraction, seed), result in results.items():
        for task in tasks:
            row = {"method": method, "fraction": fraction, "seed": seed, "task": task}
            for key in FRACTION_COLUMNS[4:]:
                value = result.get(task, {}).get(key)
                row[key] = math.nan if value is None or value[0] is None else float(value[0])
            rows.append(row)
    return _ordered(rows, tasks)


def _ordered(rows: list[dict], tasks: Sequence[str]) -> list[dict]:
    """Rows by task, then method (in the order first met), fraction and seed."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    return sorted(rows, key=lambda r: (list(tasks).index(r["task"]), methods.index(r["method"]),
                                       r["fraction"], r["seed"]))  # stable: folds keep their order


def write_csv(path: Path, columns: Sequence[str], rows: list[dict]) -> Path:
    write_text_atomic(path, csv_text(columns, rows))
    return path


def conventions(reference: str, seed: int) -> str:
    """The one sentence that states how the statistics were made."""
    return (
        f"Paired differences method − {reference} over the held-out cases both predicted (each case's "
        f"value averaged over the seeds first); cells: mean difference [{100 * CONFIDENCE:g} % {CI_METHOD} "
        f"bootstrap CI, {N_RESAMPLES:,} resamples, seed {seed}] and the two-sided Wilcoxon signed-rank p, "
        f"Holm-adjusted over the methods within each task and metric; **bold** = Holm p < {ALPHA:g}; "
        "Dice@0.5 (prediction ≥ 0.5 against soft label ≥ 0.5) and QUBIQ (mean Dice over t = 0.1…0.9, "
        f"also Table 2's Dice) in percentage points; {better_sentence(METRICS)}; over {ALL_CLASSES} "
        f"(multi-class data), {better_sentence(CLASS_METRICS)}."
    )


def write_statistics(out: Path, comparisons: Sequence[PairedComparison], note: str) -> list[Path]:
    """``statistics.csv`` and ``statistics.json`` (rows of :meth:`PairedComparison.row`)."""
    rows = [c.row() for c in comparisons]
    paths = [Path(out) / "statistics.csv", Path(out) / "statistics.json"]
    write_csv(paths[0], STATISTICS_COLUMNS, rows)
    write_json_atomic(paths[1], {"conventions": note, "rows": rows})
    return paths


def _cell(c: PairedComparison) -> str:
    shown = spec(c.metric)
    digits = shown.digits
    diff = format_diff(c.mean_difference * shown.scale, digits)
    ci = f"[{format_diff(c.ci_low * shown.scale, digits)}, {format_diff(c.ci_high * shown.scale, digits)}]"
    p = "p n/a" if not math.isfinite(c.p_holm) else f"Holm p {c.p_holm:.3g}"
    text = f"{diff} {ci}, {p}"
    if c.significant:
        text = f"**{text}, {'better' if c.better == 'method' else 'worse'}**"
    return text


def statistics_markdown(
    comparisons: Sequence[PairedComparison], tasks: Sequence[str], note: str,
    figures: Mapping[str, Path] | None = None,
) -> str:
    """Per task, one line per method: each metric's paired difference against the reference,
    significant cells in bold; the notes of the tests (few pairs, zeros) below; a link to the
    paired figure of the task when given."""
    if not comparisons:
        return ""
    out = ["# Paired differences against the reference", "", note, ""]
    for task in tasks:
        here = [c for c in comparisons if c.task == task]
        if not here:
            continue
        metrics = list(dict.fromkeys(c.metric for c in here))
        header = ["Method", "pairs"] + [f"Δ {spec(m).label}" for m in metrics]
        out += [f"## {task}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method in dict.fromkeys(c.method for c in here):
            mine = {c.metric: c for c in here if c.method == method}
            n = max(len(c.cases) for c in mine.values())
            out.append("| " + " | ".join([method, str(n)] + [_cell(mine[m]) for m in metrics]) + " |")
        grouped: dict[tuple[str, str], list[str]] = {}
        for c in here:
            if c.note:
                grouped.setdefault((c.method, c.note), []).append(c.metric)
        notes = [f"- {method} ({', '.join(ms) if len(ms) < len(metrics) else 'every metric'}): {text}"
                 for (method, text), ms in grouped.items()]
        out += [""] + (notes + [""] if notes else [])
        if figures and task in figures:
            out += [f"Per case: [{figures[task].name}]({figures[task].name})", ""]
    return "\n".join(out)


def file_stem(task: str) -> str:
    """A task name safe in a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", task)


def write_paired_figures(out: Path, comparisons: Sequence[PairedComparison], tasks: Sequence[str]) -> dict[str, Path]:
    """``paired-<task>.png`` per task: Dice and ECE (over all classes: class-wise ECE and
    multi-class Brier), each case from the reference to each method."""
    from softseg.report.comparison import PairedPanel, paired_figure
    from softseg.report.figures import png_bytes

    paths = {}
    for task in tasks:
        grid = []
        for metric in CLASS_METRICS if task == ALL_CLASSES else PLOTTED:
            shown = spec(metric)  # drawn in the tables' display units
            grid.append([
                PairedPanel(
                    metric=shown.label, method=c.method, reference=c.reference,
                    reference_values=c.reference_values * shown.scale, method_values=c.method_values * shown.scale,
                    means=(c.row()["reference_mean"] * shown.scale, c.row()["method_mean"] * shown.scale),
                    higher_is_better=shown.higher_is_better,
                    caption="Δ " + _cell(c).replace("**", ""),
                )
                for c in comparisons if c.task == task and c.metric == metric
            ])
        grid = [row for row in grid if row]
        if grid:
            paths[task] = Path(out) / f"paired-{file_stem(task)}.png"
            title = f"{task}: per held-out case, seeds averaged"
            write_bytes_atomic(paths[task], png_bytes(paired_figure(title, grid)))
    return paths


def write_fraction_figures(out: Path, rows: Sequence[dict], tasks: Sequence[str]) -> dict[str, Path]:
    """``fractions-<task>.png`` per task: Dice and ECE of the pooled evaluation against the
    training fraction, mean ± population std over seeds per method (display units)."""
    from softseg.report.comparison import FractionSeries, fractions_figure
    from softseg.report.figures import png_bytes

    paths = {}
    for task in tasks:
        mine = [r for r in rows if r["task"] == task]
        panels = {}
        for metric in PLOTTED:
            series = []
            for method in dict.fromkeys(r["method"] for r in mine):
                fractions = sorted({r["fraction"] for r in mine if r["method"] == method})
                per = [[r[metric] * spec(metric).scale for r in mine if r["method"] == method and r["fraction"] == f]
                       for f in fractions]
                finite = [np.asarray(v, dtype=np.float64)[np.isfinite(v)] for v in per]
                series.append(FractionSeries(
                    method, fractions, [float(v.mean()) if v.size else math.nan for v in finite],
                    [float(v.std()) if v.size else math.nan for v in finite],
                ))
            panels[spec(metric).label] = series
        paths[task] = Path(out) / f"fractions-{file_stem(task)}.png"
        write_bytes_atomic(paths[task], png_bytes(fractions_figure(f"{task}: training fraction", panels)))
    return paths


def fractions_markdown(rows: Sequence[dict], figures: Mapping[str, Path]) -> str:
    """A short section on the training fractions: per task and method, Dice and ECE (mean over
    seeds) per fraction, and the figure's link."""
    out = ["# Training fractions", "",
           "Each method trained on nested subsets of each fold's training patients (fractions.json), "
           "tested on the same held-out cases; mean over seeds of the pooled evaluation "
           "(all runs in fractions.csv).", ""]
    for task, path in figures.items():
        mine = [r for r in rows if r["task"] == task]
        fractions = sorted({r["fraction"] for r in mine})
        dice, ece = spec("dice_at_0.5"), spec("ece")
        header = ["Method"] + [f"{f:g}: {dice.label} / {ece.label}" for f in fractions]
        out += [f"## {task}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method in dict.fromkeys(r["method"] for r in mine):
            line = [method]
            for f in fractions:
                here = [r for r in mine if r["method"] == method and r["fraction"] == f]
                means = [_nanmean([r[m.key] for r in here]) for m in (dice, ece)]
                line.append("n/a" if not here else f"{dice.format(means[0])} / {ece.format(means[1])}")
            out.append("| " + " | ".join(line) + " |")
        out += ["", f"Figure: [{path.name}]({path.name})", ""]
    return "\n".join(out)
