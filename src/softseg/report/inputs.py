"""Reading what the report renders: an evaluation folder and, optionally, a run's history.

Everything here is read and checked, never computed: the numbers come from the files
``softseg evaluate`` and ``softseg train`` wrote (docs/architecture.md, "Evaluation folder"
and "Run folder"). Columns are found by name, extra columns are ignored, and every problem
of a folder is reported together.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from softseg.errors import DatasetError, SoftsegError

# Columns the report reads from each file (the contract's other columns are ignored).
METRICS_COLUMNS = ("case", "task", "threshold", "dice", "precision", "recall")
CASES_COLUMNS = ("case", "task", "qubiq")
CURVES_COLUMNS = ("case", "task", "threshold", "precision", "recall", "dice")
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_qubiq", "lr")
_TEXT_COLUMNS = ("case", "task", "hd95_status")
# curves.csv names its threshold column `t` in the contract's prose; accept either name.
_COLUMN_ALIASES = {"threshold": ("threshold", "t")}

Table = Mapping[str, np.ndarray]  # column name -> 1-D array (str for text columns, float64 else)


@dataclass(frozen=True)
class Evaluation:
    """The contents of an evaluation folder, as written by ``softseg evaluate``.

    ``metrics``/``cases``/``curves`` map column names to 1-D arrays of equal length (text
    columns as str arrays, the rest float64 with NaN for empty cells). ``tasks`` is the order
    of ``summary["tasks"]``. ``predictions``/``data`` are the folders summary.json names,
    resolved against the evaluation folder when relative.
    """

    root: Path
    summary: Mapping[str, Any]
    metrics: Table
    cases: Table
    curves: Table
    tables_md: str
    tasks: tuple[str, ...]
    predictions: Path | None
    data: Path | None


def read_evaluation(eval_dir: Path) -> Evaluation:
    """Read and check an evaluation folder; raise :class:`DatasetError` listing every problem."""
    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        raise SoftsegError(
            f"{eval_dir}: expected an evaluation folder (written by `softseg evaluate`), "
            f"found {'a file' if eval_dir.exists() else 'nothing'}; "
            "run `softseg evaluate RUN DATA --out EVAL_DIR` first and pass EVAL_DIR"
        )
    names = ("summary.json", "metrics.csv", "cases.csv", "curves.csv", "tables.md")
    missing = [name for name in names if not (eval_dir / name).is_file()]
    if missing:
        raise DatasetError(
            [f"{eval_dir / name}: missing" for name in missing],
            header=f"{eval_dir}: not a complete evaluation folder (re-run `softseg evaluate`)",
        )
    problems: list[str] = []
    summary = _read_summary(eval_dir / "summary.json", problems)
    metrics = read_csv_table(eval_dir / "metrics.csv", METRICS_COLUMNS, problems)
    cases = read_csv_table(eval_dir / "cases.csv", CASES_COLUMNS, problems)
    curves = read_csv_table(eval_dir / "curves.csv", CURVES_COLUMNS, problems)
    tables_md = (eval_dir / "tables.md").read_text(encoding="utf-8")
    tasks: tuple[str, ...] = ()
    if summary is not None:
        tasks = tuple(summary["tasks"])
        for name, table in (("metrics.csv", metrics), ("cases.csv", cases), ("curves.csv", curves)):
            if table is None:
                continue
            for task in tasks:
                if not np.any(table["task"] == task):
                    problems.append(
                        f"{eval_dir / name}: expected rows for task {task!r} "
                        f"(summary.json lists it), found none"
                    )
    if curves is not None:
        _check_fine_thresholds(eval_dir / "curves.csv", curves, problems)
    if problems:
        raise DatasetError(problems, header=f"{eval_dir}: evaluation files have problems "
                           "(re-run `softseg evaluate` to rewrite them)")
    return Evaluation(
        root=eval_dir,
        summary=summary,
        metrics=metrics,
        cases=cases,
        curves=curves,
        tables_md=tables_md,
        tasks=tasks,
        predictions=_folder(eval_dir, summary.get("predictions")),
        data=_folder(eval_dir, summary.get("data")),
    )


def read_history(run_dir: Path) -> Table:
    """A run's ``history.csv`` (epoch, train_loss, val_loss, val_qubiq, lr) as columns."""
    run_dir = Path(run_dir)
    path = run_dir / "history.csv"
    if not path.is_file():
        raise SoftsegError(
            f"{path}: expected the training history of a run folder (written by `softseg "
            f"train`), found {'no such file' if run_dir.is_dir() else 'no run folder'}; "
            "pass a single run such as RUNS/seed0 to --run, or leave --run out"
        )
    problems: list[str] = []
    table = read_csv_table(path, HISTORY_COLUMNS, problems)
    if table is not None and len(table["epoch"]) == 0:
        problems.append(f"{path}: expected one row per epoch, found no rows")
    if problems:
        raise DatasetError(problems, header=f"{run_dir}: training history unreadable")
    return table


def read_csv_table(path: Path, required: tuple[str, ...], problems: list[str]) -> Table | None:
    """Read a CSV by column name; append problems (missing columns, bad numbers) to ``problems``.

    Returns None when the file cannot be used. Empty cells become NaN; ``case``, ``task`` and
    ``hd95_status`` stay text.
    """
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in (reader.fieldnames or [])]
        rows = [{k.strip(): v for k, v in row.items() if k is not None} for row in reader]
    columns: dict[str, str] = {}
    absent = []
    for name in required:
        found = next((a for a in _COLUMN_ALIASES.get(name, (name,)) if a in header), None)
        if found is None:
            absent.append(name)
        else:
            columns[name] = found
    if absent:
        problems.append(
            f"{path}: expected columns {', '.join(required)}; missing {', '.join(absent)} "
            f"(found {', '.join(header) or 'no header'})"
        )
        return None
    for name in header:  # keep the optional columns too (ged2, ece, hd95, ...)
        columns.setdefault(name, name)
    table: dict[str, np.ndarray] = {}
    bad: list[str] = []
    for name, source in columns.items():
        cells = [(row.get(source) or "").strip() for row in rows]
        if name in _TEXT_COLUMNS:
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
                    bad.append(f"{path}: row {i + 2}, column {source!r}: expected a number, "
                               f"found {cell!r}")
                values = None
                break
        if values is not None:
            table[name] = values
    problems.extend(bad[:5])
    return None if bad else table


def _read_summary(path: Path, problems: list[str]) -> dict | None:
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        problems.append(f"{path}: expected JSON, found a syntax error ({error})")
        return None
    if not isinstance(summary, dict) or not isinstance(summary.get("tasks"), dict) \
            or not summary["tasks"]:
        problems.append(f"{path}: expected an object with a non-empty \"tasks\" mapping "
                        "(task -> table2, table3, qubiq, calibration, hd95_undefined)")
        return None
    return summary


def _check_fine_thresholds(path: Path, curves: Table, problems: list[str]) -> None:
    steps = curves["threshold"] * 100
    off = ~np.isclose(steps, np.round(steps), atol=1e-6) | (steps < 0.5) | (steps > 99.5)
    if np.any(off):
        problems.append(f"{path}: expected thresholds in 0.01 … 0.99 by 0.01 "
                        f"(np.arange(1, 100) / 100), found {curves['threshold'][off][0]!r}")


def _folder(root: Path, value: Any) -> Path | None:
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def mean_std(value: Any) -> tuple[float, float | None] | None:
    """A summary entry as (mean, std): a number, ``{"mean", "std"}`` or ``[mean, std]``.

    Returns None when the entry is absent or not in one of those forms.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return (float(value), None)
    if isinstance(value, Mapping) and isinstance(value.get("mean"), (int, float)):
        std = value.get("std")
        return (float(value["mean"]), float(std) if isinstance(std, (int, float)) else None)
    if isinstance(value, (list, tuple)) and len(value) == 2 \
            and all(isinstance(v, (int, float)) for v in value):
        return (float(value[0]), float(value[1]))
    return None


def finite(value: float | None) -> bool:
    """True for a real, finite number (the report shows '—' for anything else)."""
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)
