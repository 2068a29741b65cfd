"""The evaluation folder's CSV files: per-case rows written by evaluate, read back by one reader.

::

    metrics.csv   case, task, threshold, dice, precision, recall, hd95, hd95_status,
                  gt_area_frac, iou, hd95_mm            (one row per case, task, threshold)
    cases.csv     case, task, ged2, pred_rater_dist, rater_diversity, expected_dice, qubiq,
                  ece, brier, n_raters, dice, precision, recall, hd95, hd95_undefined
    curves.csv    case, task, threshold, precision, recall, dice   (t = 0.01 ... 0.99)
    classes.csv   case, classwise_ece, brier, ece_<class> per class  (multi-class data only)

An undefined value is an empty cell. Readers find columns by name and ignore extra ones; a
file lacking a column a reader relies on (:data:`REQUIRED`) is refused.
"""

from __future__ import annotations

import csv
import io as _stringio
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from softseg.errors import DatasetError

METRICS_COLUMNS = ("case", "task", "threshold", "dice", "precision", "recall", "hd95",
                   "hd95_status", "gt_area_frac", "iou", "hd95_mm")
CASES_COLUMNS = ("case", "task", "ged2", "pred_rater_dist", "rater_diversity", "expected_dice",
                 "qubiq", "ece", "brier", "n_raters", "dice", "precision", "recall", "hd95",
                 "hd95_undefined")
CURVES_COLUMNS = ("case", "task", "threshold", "precision", "recall", "dice")
CLASSES_FILE = "classes.csv"
# The columns the report relies on; the others are read when present.
REQUIRED = {
    "metrics.csv": ("case", "task", "threshold", "dice", "precision", "recall"),
    "cases.csv": ("case", "task", "qubiq"),
    "curves.csv": CURVES_COLUMNS,
}
TEXT_COLUMNS = ("case", "task", "hd95_status")

Columns = Mapping[str, np.ndarray]  # column name -> 1-D array (str for text columns, float64 else)


@dataclass(frozen=True)
class EvaluationRows:
    """The CSV files of an evaluation folder as columns of equal length per file (text columns
    as str arrays, the rest float64 with NaN for empty cells)."""

    metrics: Columns
    cases: Columns
    curves: Columns


# ----------------------------------------------------------------------------- writing


def csv_text(columns: Sequence[str], rows: list[dict]) -> str:
    """``rows`` as CSV with the header ``columns``; None and NaN as empty cells, floats in
    full precision (``repr``)."""
    buffer = _stringio.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buffer.getvalue()


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else repr(float(value))
    if isinstance(value, (np.integer,)):
        return str(int(value))
    return str(value)


def prediction_rows(case: str, task: str, result: dict) -> tuple[list[dict], dict, list[dict]]:
    """The rows of one case and task for metrics.csv, cases.csv and curves.csv, from
    ``metrics.case_metrics``'s result (plus its ``n_raters``)."""
    t2 = result["table2"]
    metric_rows = []
    for k, threshold in enumerate(t2["threshold"]):
        metric_rows.append({
            "case": case, "task": task, "threshold": float(threshold),
            **{key: t2[key][k] for key in ("dice", "precision", "recall", "hd95",
                                            "hd95_status", "gt_area_frac", "iou")},
            "hd95_mm": None if t2["hd95_mm"] is None else t2["hd95_mm"][k],
        })
    hd = np.asarray(t2["hd95"], dtype=np.float64)
    defined = hd[~np.isnan(hd)]
    case_row = {
        "case": case, "task": task, **(result["table3"] or {}),
        "qubiq": result["qubiq"], "ece": result["calibration"]["ece"],
        "brier": result["calibration"]["brier"], "n_raters": result["n_raters"],
        "dice": float(np.mean(t2["dice"])), "precision": float(np.mean(t2["precision"])),
        "recall": float(np.mean(t2["recall"])),
        "hd95": float(defined.mean()) if defined.size else None,
        "hd95_undefined": int(np.sum(t2["hd95_status"] == "one_empty")),
    }
    c = result["curves"]
    curve_rows = [{"case": case, "task": task, "threshold": float(t),
                   "precision": c["precision"][k], "recall": c["recall"][k], "dice": c["dice"][k]}
                  for k, t in enumerate(c["threshold"])]
    return metric_rows, case_row, curve_rows


def class_columns(classes: Sequence[str]) -> tuple[str, ...]:
    """The header of classes.csv for a multi-class dataset's ``classes`` (background first)."""
    return ("case", "classwise_ece", "brier", *(f"ece_{c}" for c in classes))


def class_row(case: str, classes: Sequence[str], result: dict) -> dict:
    """One case's row of classes.csv from ``metrics.class_calibration``."""
    return {"case": case, "classwise_ece": result["classwise_ece"], "brier": result["brier"],
            **{f"ece_{c}": e for c, e in zip(classes, result["ece_by_class"])}}


# ----------------------------------------------------------------------------- reading


def read_rows(eval_dir: str | Path, tasks: Sequence[str]) -> EvaluationRows:
    """metrics.csv, cases.csv and curves.csv of ``eval_dir``, checked: the required columns,
    numbers where numbers belong, rows for every task of ``tasks`` (the summary's) and the
    curves on the grid 0.01 ... 0.99. Raises :class:`DatasetError` listing every problem."""
    eval_dir = Path(eval_dir)
    problems: list[str] = []
    tables = {name: read_columns(eval_dir / name, REQUIRED[name], problems) for name in REQUIRED}
    for name, table in tables.items():
        if table is None:
            continue
        for task in tasks:
            if not np.any(table["task"] == task):
                problems.append(f"{eval_dir / name}: expected rows for task {task!r} "
                                "(summary.json lists it), found none")
    if tables["curves.csv"] is not None:
        _check_fine_thresholds(eval_dir / "curves.csv", tables["curves.csv"], problems)
    if problems:
        raise DatasetError(problems, header=f"{eval_dir}: evaluation files have problems "
                           "(re-run `softseg evaluate` to rewrite them)")
    return EvaluationRows(tables["metrics.csv"], tables["cases.csv"], tables["curves.csv"])


def read_class_rows(eval_dir: str | Path) -> Columns | None:
    """classes.csv of ``eval_dir`` (multi-class data only), checked; None when there is none.
    Raises :class:`DatasetError` naming the file when it lacks a column or holds text."""
    path = Path(eval_dir) / CLASSES_FILE
    if not path.is_file():
        return None
    problems: list[str] = []
    table = read_columns(path, ("case", "classwise_ece", "brier"), problems)
    if problems:
        raise DatasetError(problems, header=f"{eval_dir}: evaluation files have problems "
                           "(re-run `softseg evaluate` to rewrite them)")
    return table


def read_columns(path: Path, required: Sequence[str], problems: list[str]) -> Columns | None:
    """A CSV file as columns found by name; append problems (missing columns, text where a
    number belongs) to ``problems`` and return None when the file cannot be used.

    Empty cells become NaN; :data:`TEXT_COLUMNS` stay text. An optional column holding text
    is left out rather than refused.
    """
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in (reader.fieldnames or [])]
        rows = [{k.strip(): v for k, v in row.items() if k is not None} for row in reader]
    absent = [name for name in required if name not in header]
    if absent:
        problems.append(
            f"{path}: expected columns {', '.join(required)}; missing {', '.join(absent)} "
            f"(found {', '.join(header) or 'no header'})"
        )
        return None
    table: dict[str, np.ndarray] = {}
    bad: list[str] = []
    for name in header:
        cells = [(row.get(name) or "").strip() for row in rows]
        if name in TEXT_COLUMNS:
            table[name] = np.array(cells, dtype=str)
            continue
        values = np.full(len(cells), np.nan)
        for i, cell in enumerate(cells):
            if cell == "":
                continue
            try:
                values[i] = float(cell)
            except ValueError:
                if name in required:
                    bad.append(f"{path}: row {i + 2}, column {name!r}: expected a number, "
                               f"found {cell!r}")
                values = None
                break
        if values is not None:
            table[name] = values
    problems.extend(bad[:5])
    return None if bad else table


def _check_fine_thresholds(path: Path, curves: Columns, problems: list[str]) -> None:
    steps = curves["threshold"] * 100
    off = ~np.isclose(steps, np.round(steps), atol=1e-6) | (steps < 0.5) | (steps > 99.5)
    if np.any(off):
        problems.append(f"{path}: expected thresholds in 0.01 … 0.99 by 0.01 "
                        f"(np.arange(1, 100) / 100), found {curves['threshold'][off][0]!r}")
