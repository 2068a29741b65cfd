"""Reading what the report renders: an evaluation folder and, optionally, a run's history.

Everything here is read and checked, never computed: the numbers come from the files
``softseg evaluate`` and ``softseg train`` wrote, through the evaluation's own readers
(:func:`softseg.evaluation.result.read_result` for summary.json,
:func:`softseg.evaluation.rows.read_rows` for the CSV files).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from softseg.errors import DatasetError, SoftsegError
from softseg.evaluation.result import EvaluationResult, read_result
from softseg.evaluation.rows import Columns, read_columns, read_rows

HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_qubiq", "lr")


@dataclass(frozen=True)
class Evaluation:
    """The contents of an evaluation folder, as written by ``softseg evaluate``.

    ``result`` is summary.json; ``metrics``/``cases``/``curves`` map column names to 1-D
    arrays of equal length (text columns as str arrays, the rest float64 with NaN for empty
    cells). ``predictions``/``data`` are the folders the result names, resolved against the
    evaluation folder when relative.
    """

    root: Path
    result: EvaluationResult
    metrics: Columns
    cases: Columns
    curves: Columns
    predictions: Path
    data: Path

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks in summary.json's order."""
        return tuple(self.result.tasks)


def read_evaluation(eval_dir: Path) -> Evaluation:
    """Read and check an evaluation folder; raise :class:`SoftsegError` (a wrong schema
    version) or :class:`DatasetError` listing every problem of its files."""
    eval_dir = Path(eval_dir)
    result = read_result(eval_dir)
    rows = read_rows(eval_dir, tuple(result.tasks))
    return Evaluation(
        root=eval_dir,
        result=result,
        metrics=rows.metrics,
        cases=rows.cases,
        curves=rows.curves,
        predictions=_folder(eval_dir, result.predictions),
        data=_folder(eval_dir, result.data),
    )


def read_history(run_dir: Path) -> Columns:
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
    table = read_columns(path, HISTORY_COLUMNS, problems)
    if table is not None and len(table["epoch"]) == 0:
        problems.append(f"{path}: expected one row per epoch, found no rows")
    if problems:
        raise DatasetError(problems, header=f"{run_dir}: training history unreadable")
    return table


def _folder(root: Path, path: Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else root / path


def finite(value: float | None) -> bool:
    """True for a real, finite number (the report shows '—' for anything else)."""
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)
