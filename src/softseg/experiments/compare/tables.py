"""Experiment tables: ours beside the paper's (difference per cell), and methods side by side.

Inputs are :class:`Cell` values in our native units (fractions, pixels), keyed by the metric
names of :mod:`softseg.experiments.paper`; output is Markdown for people plus CSV and JSON for programs,
each written atomically. Nothing here computes a metric: cells are aggregated from the
evaluation folders by :mod:`softseg.experiments.reproduce` and :mod:`softseg.experiments.compare`.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from softseg.files import write_json_atomic, write_text_atomic
from softseg.experiments.paper import (
    ALL_CLASSES, CALIBRATION, CLASS_CALIBRATION, METRICS, PAPER_TABLE2, PAPER_TABLE3, QUBIQ_TASKS, TABLE2, TABLE3,
    MetricSpec,
)


@dataclass(frozen=True)
class Cell:
    """One table value over repeated runs (seeds), in our native unit.

    ``mean``/``std`` are over the runs' values (population std: 0 for a single run);
    ``spread`` is the mean over runs of each run's own ``±`` (over thresholds for Table 2,
    over cases for Table 3), which is what the paper's ``±`` means; NaN when unknown.
    ``n`` counts the runs with a defined value.
    """

    mean: float
    std: float
    n: int
    spread: float = math.nan


def aggregate(values: Sequence[float], spreads: Sequence[float] | None = None) -> Cell:
    """Mean and population std of the defined (non-NaN) ``values``; all undefined -> NaN, n = 0."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    s = np.asarray([x for x in (spreads or []) if x is not None], dtype=np.float64)
    s = s[np.isfinite(s)]
    spread = float(s.mean()) if s.size else math.nan
    if v.size == 0:
        return Cell(math.nan, math.nan, 0, spread)
    return Cell(float(v.mean()), float(v.std()), int(v.size), spread)


def cells(per_seed: Sequence[Mapping[str, Sequence[float]]]) -> dict[str, Cell]:
    """Aggregate per-seed ``{metric: (value, spread)}`` (``pipeline.task_values`` as saved in a
    result.json) into one :class:`Cell` per metric, metrics in first-seen order."""
    keys = dict.fromkeys(k for values in per_seed for k in values)
    return {
        key: aggregate(
            [v[key][0] for v in per_seed if key in v], [v[key][1] for v in per_seed if key in v]
        )
        for key in keys
    }


def class_cells(per_seed: Sequence[Mapping[str, Mapping[str, Mapping[str, float]]]]) -> dict[str, Cell]:
    """The calibration over all classes of one method: per seed, the mean over cases of each
    :data:`~softseg.experiments.paper.CLASS_CALIBRATION` metric (per-case values under
    ``ALL_CLASSES``, as compare reads them from classes.csv), then one :class:`Cell` over the
    seeds, its ``spread`` the mean over seeds of the std over cases."""
    out = {}
    for spec in CLASS_CALIBRATION:
        per_case = [np.asarray([v[spec.key] for v in seed.get(ALL_CLASSES, {}).values()], dtype=np.float64)
                    for seed in per_seed]
        per_case = [v[np.isfinite(v)] for v in per_case]
        out[spec.key] = aggregate([float(v.mean()) if v.size else math.nan for v in per_case],
                                  [float(v.std()) if v.size else math.nan for v in per_case])
    return out


def _fmt(value: float, digits: int) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"


def _fmt_cell(mean: float, std: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {_fmt(std, digits)}"


def _fmt_diff(value: float, digits: int) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}".replace("-", "−")


def _scaled(cell: Cell | None, spec: MetricSpec) -> tuple[float, float, float, int]:
    if cell is None:
        return math.nan, math.nan, math.nan, 0
    return cell.mean * spec.scale, cell.std * spec.scale, cell.spread * spec.scale, cell.n


def _label_order(labels) -> list[str]:
    """The paper's tasks in its order, then the others by name, ``ALL_CLASSES`` last."""
    paper_order = [t.label for t in QUBIQ_TASKS]
    return sorted(labels, key=lambda x: (x == ALL_CLASSES, paper_order.index(x) if x in paper_order
                                         else len(paper_order), x))


def paper_rows(results: Mapping[str, Mapping[str, Cell]]) -> list[dict]:
    """One row per task and metric of Tables 2 and 3: ours, the paper's and ``diff = ours − paper``,
    all in the paper's units. ``results`` maps the paper's task label ("Kidney") to its cells."""
    rows = []
    for table, specs, paper in (("Table 2", TABLE2, PAPER_TABLE2), ("Table 3", TABLE3, PAPER_TABLE3)):
        for label in _label_order(results):
            for spec in specs:
                mean, std, spread, n = _scaled(results[label].get(spec.key), spec)
                paper_mean, paper_std = paper.get(label, {}).get(spec.key, (math.nan, math.nan))
                rows.append({
                    "table": table, "task": label, "metric": spec.key, "label": spec.label,
                    "ours_mean": mean, "ours_std": std, "ours_spread": spread, "n_seeds": n,
                    "paper_mean": paper_mean, "paper_std": paper_std, "diff": mean - paper_mean,
                })
    return rows


def paper_markdown(rows: list[dict], note: str = "") -> str:
    """Tables 2 and 3 with, for each metric, ours (mean ± std over seeds), the paper's, and Δ."""
    out = ["# Ours beside the paper", ""]
    if note:
        out += [note, ""]
    for table, specs in (("Table 2", TABLE2), ("Table 3", TABLE3)):
        out += [f"## {table}", ""]
        header = ["Task"]
        for spec in specs:
            header += [f"{spec.label} ours", "paper", "Δ"]
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        by_task: dict[str, dict[str, dict]] = {}
        for row in rows:
            if row["table"] == table:
                by_task.setdefault(row["task"], {})[row["metric"]] = row
        for task, cells in by_task.items():
            line = [task]
            for spec in specs:
                r = cells[spec.key]
                line += [
                    _fmt_cell(r["ours_mean"], r["ours_std"], spec.digits),
                    _fmt_cell(r["paper_mean"], r["paper_std"], spec.digits),
                    _fmt_diff(r["diff"], spec.digits),
                ]
            out.append("| " + " | ".join(line) + " |")
        out.append("")
    return "\n".join(out)


def _csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    fieldnames = list(dict.fromkeys(key for row in rows for key in row))  # rows may differ in extras
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()})
    return buffer.getvalue()


def write_paper_tables(out_dir: Path, results: Mapping[str, Mapping[str, Cell]], note: str = "") -> list[Path]:
    """Write ``tables.md``, ``tables.csv`` and ``tables.json`` (the rows of :func:`paper_rows`)."""
    rows = paper_rows(results)
    return _write_table_files(Path(out_dir), "tables", paper_markdown(rows, note), rows, note)


def _write_table_files(out_dir: Path, stem: str, markdown: str, rows: list[dict], note: str) -> list[Path]:
    """``<stem>.md``, ``<stem>.csv`` and ``<stem>.json`` (the rows and the note), each atomically."""
    paths = [out_dir / f"{stem}.md", out_dir / f"{stem}.csv", out_dir / f"{stem}.json"]
    write_text_atomic(paths[0], markdown + "\n")
    write_text_atomic(paths[1], _csv_text(rows))
    write_json_atomic(paths[2], {"note": note, "rows": rows})
    return paths


COMPARISON_SPECS = TABLE2 + TABLE3 + CALIBRATION


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
    for task in _label_order(results):
        for method, cells in results[task].items():
            row: dict = {"task": task, "method": method}
            for spec in comparison_specs(task):
                mean, std, _, n = _scaled(cells.get(spec.key), spec)
                row[f"{spec.key}_mean"], row[f"{spec.key}_std"] = mean, std
            row["n_seeds"] = max((c.n for c in cells.values()), default=0)
            if task != ALL_CLASSES:
                row["below_diversity"] = below_diversity(cells)
            for key, cell in cells.items():  # counts etc. beyond the tables, e.g. hd95_undefined
                if key not in METRICS:
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
        specs, overall = comparison_specs(task), task == ALL_CLASSES
        header = ["Method"] + [s.label for s in specs] + ([] if overall else ["E[1−IoU(y,ŷ)] < diversity"])
        title = f"{task} (softmax against the class distribution, background included)" if overall else task
        out += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in (r for r in rows if r["task"] == task):
            cells = [_fmt_cell(r[f"{s.key}_mean"], r[f"{s.key}_std"], s.digits) for s in specs]
            if not overall:
                cells.append({True: "yes", False: "no", None: "n/a"}[r["below_diversity"]])
            out.append("| " + " | ".join([r["method"]] + cells) + " |")
        out.append("")
    return "\n".join(out)


def write_comparison(
    out_dir: Path, results: Mapping[str, Mapping[str, Mapping[str, Cell]]], note: str = "", extra: str = ""
) -> list[Path]:
    """Write ``comparison.md`` (with the Markdown ``extra`` appended: the paired statistics),
    ``comparison.csv`` and ``comparison.json``."""
    rows = comparison_rows(results)
    markdown = comparison_markdown(rows, note) + (f"\n{extra}" if extra else "")
    return _write_table_files(Path(out_dir), "comparison", markdown, rows, note)
