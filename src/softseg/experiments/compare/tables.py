"""Compare's methods side by side: one row per task and method, every metric's mean ± std over
seeds (``comparison.md`` for people, ``comparison.csv`` and ``comparison.json`` for programs).

Inputs are :class:`~softseg.experiments.cells.Cell` values in our native units, aggregated from
each method's evaluations by :mod:`softseg.experiments.compare.composition`; the columns are
the paper's Tables 2 and 3 and the calibration (:mod:`softseg.experiments.paper`), each shown
as its :mod:`softseg.evaluation.registry` entry says. Nothing here computes a metric.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from softseg.evaluation.registry import ALL_CLASSES, MetricSpec, sampled_spec, spec, specs
from softseg.experiments.cells import Cell, aggregate, format_cell, row_order, scaled, write_table_files
from softseg.experiments.compare.statistics import CLASS_METRICS
from softseg.experiments.paper import CALIBRATION, TABLE2, TABLE3

COMPARISON_SPECS = TABLE2 + TABLE3 + CALIBRATION
# multi-class data: the calibration over all classes, the row group ALL_CLASSES
CLASS_CALIBRATION = specs(*CLASS_METRICS)
# keys of a method's cells that are not columns yet not extras either (dice_at_0.5 is
# compared in the statistics and per_fold.csv)
_NOT_EXTRAS = {s.key for s in COMPARISON_SPECS + CLASS_CALIBRATION} | {"dice_at_0.5"}


def class_cells(per_seed: Sequence[Mapping[str, Mapping[str, Mapping[str, float]]]]) -> dict[str, Cell]:
    """The calibration over all classes of one method: per seed, the mean over cases of each
    metric of :data:`CLASS_CALIBRATION` (per-case values under ``ALL_CLASSES``, as compare
    reads them from classes.csv), then one :class:`Cell` over the seeds, its ``spread`` the
    mean over seeds of the std over cases."""
    out = {}
    for column in CLASS_CALIBRATION:
        per_case = [np.asarray([v[column.key] for v in seed.get(ALL_CLASSES, {}).values()], dtype=np.float64)
                    for seed in per_seed]
        per_case = [v[np.isfinite(v)] for v in per_case]
        out[column.key] = aggregate([float(v.mean()) if v.size else math.nan for v in per_case],
                                  [float(v.std()) if v.size else math.nan for v in per_case])
    return out


def comparison_specs(task: str) -> tuple[MetricSpec, ...]:
    """The columns of one row group: a task's, or the calibration over all classes."""
    return CLASS_CALIBRATION if task == ALL_CLASSES else COMPARISON_SPECS


def below_diversity(cells: Mapping[str, Cell]) -> bool | None:
    """Whether E[1−IoU(y, ŷ)] < E[1−IoU(y, y′)] (model closer to a rater than raters to each
    other), comparing the means over seeds; None when either is undefined."""
    pred, div = cells.get("pred_rater_dist"), cells.get("rater_diversity")
    if pred is None or div is None or not (math.isfinite(pred.mean) and math.isfinite(div.mean)):
        return None
    return pred.mean < div.mean


def comparison_rows(results: Mapping[str, Mapping[str, Mapping[str, Cell]]]) -> list[dict]:
    """One row per task and method: every metric's mean and std (over seeds, display units)
    and ``below_diversity``. ``results`` is task -> method -> metric key -> :class:`Cell`; the
    row group ``ALL_CLASSES`` (multi-class data, last) has its own metrics and no
    ``below_diversity``."""
    rows = []
    for task in row_order(results):
        for method, cells in results[task].items():
            row: dict = {"task": task, "method": method}
            for column in comparison_specs(task):
                mean, std, _, n = scaled(cells.get(column.key), column)
                row[f"{column.key}_mean"], row[f"{column.key}_std"] = mean, std
            row["n_seeds"] = max((c.n for c in cells.values()), default=0)
            if task != ALL_CLASSES:
                row["below_diversity"] = below_diversity(cells)
            for key, cell in cells.items():  # counts etc. beyond the tables, e.g. hd95_undefined
                if key not in _NOT_EXTRAS:
                    row[key] = cell.mean
            rows.append(row)
    return rows


def comparison_markdown(rows: list[dict], note: str = "") -> str:
    """Per task, one line per method: Tables 2 and 3, QUBIQ score, ECE, Brier, and whether the
    model is closer to a rater than the raters are to each other; over all classes
    (multi-class data), the class-wise ECE and the multi-class Brier score."""
    out = ["# Methods side by side", ""]
    if note:
        out += [note, ""]
    for task in dict.fromkeys(r["task"] for r in rows):
        columns, overall = comparison_specs(task), task == ALL_CLASSES
        verdict = [] if overall else [f"{spec('pred_rater_dist').label} < diversity"]
        header = ["Method"] + [s.label for s in columns] + verdict
        title = f"{task} (softmax against the class distribution, background included)" if overall else task
        out += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in (r for r in rows if r["task"] == task):
            cells = [format_cell(r[f"{s.key}_mean"], r[f"{s.key}_std"], s.digits) for s in columns]
            if not overall:
                cells.append({True: "yes", False: "no", None: "n/a"}[r["below_diversity"]])
            out.append("| " + " | ".join([r["method"]] + cells) + " |")
        out.append("")
        out += _hypotheses_markdown([r for r in rows if r["task"] == task])
    return "\n".join(out)


def _hypotheses_markdown(rows: list[dict]) -> list[str]:
    """compare --samples: the task's hypothesis scores (extras of its rows), one line per method."""
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if sampled_spec(k) is not None]
    if not keys:
        return []
    header = ["Method"] + [spec(k).label for k in keys]
    out = [f"### {rows[0]['task']}: hypotheses (D²_GED and diversity keep i = i′; one map = the map at 0.5)", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [spec(k).format(r.get(k)) for k in keys]
        out.append("| " + " | ".join([r["method"]] + cells) + " |")
    return out + [""]


def write_comparison(
    out_dir: Path, results: Mapping[str, Mapping[str, Mapping[str, Cell]]], note: str = "", extra: str = ""
) -> list[Path]:
    """Write ``comparison.md`` (with the Markdown ``extra`` appended: the paired statistics),
    ``comparison.csv`` and ``comparison.json``."""
    rows = comparison_rows(results)
    markdown = comparison_markdown(rows, note) + (f"\n{extra}" if extra else "")
    return write_table_files(Path(out_dir), "comparison", markdown, rows, note)
