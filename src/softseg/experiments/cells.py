"""Table cells of the experiments: one value over repeated runs (:class:`Cell`), its
aggregation over seeds and formatting, and the one writer of a table's files (.md/.csv/.json).

Shared by the tables beside the paper (:mod:`softseg.experiments.paper_tables`) and compare's
methods side by side (:mod:`softseg.experiments.compare.tables`). Cells hold our native units
(fractions, pixels); each metric's display unit and decimals are its
:class:`~softseg.evaluation.registry.MetricSpec`. Nothing here computes a metric: cells are
aggregated from the values the evaluation folders hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from softseg.evaluation.registry import ALL_CLASSES, MetricSpec
from softseg.evaluation.rows import csv_text
from softseg.experiments.paper import QUBIQ_TASKS
from softseg.files import write_json_atomic, write_text_atomic


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


def scaled(cell: Cell | None, spec: MetricSpec) -> tuple[float, float, float, int]:
    """(mean, std, spread, n) of ``cell`` in the metric's display unit; NaN and 0 without a cell."""
    if cell is None:
        return math.nan, math.nan, math.nan, 0
    return cell.mean * spec.scale, cell.std * spec.scale, cell.spread * spec.scale, cell.n


def format_cell(mean: float, std: float, digits: int) -> str:
    """``mean ± std`` of display values; "n/a" for an undefined mean (and for an undefined std)."""
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {'n/a' if not math.isfinite(std) else f'{std:.{digits}f}'}"


def format_diff(value: float, digits: int) -> str:
    """A signed difference with a true minus sign (``+1.00``, ``−1.04``); "n/a" if undefined."""
    if not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}".replace("-", "−")


def row_order(labels: Iterable[str]) -> list[str]:
    """The paper's tasks in its order, then the others by name, ``ALL_CLASSES`` last."""
    paper_order = [t.label for t in QUBIQ_TASKS]
    return sorted(labels, key=lambda x: (x == ALL_CLASSES, paper_order.index(x) if x in paper_order
                                         else len(paper_order), x))


def write_table_files(out_dir: Path, stem: str, markdown: str, rows: list[dict], note: str) -> list[Path]:
    """``<stem>.md``, ``<stem>.csv`` (every key of any row a column, undefined values empty)
    and ``<stem>.json`` (the rows and the note), each written atomically."""
    out_dir = Path(out_dir)
    paths = [out_dir / f"{stem}.md", out_dir / f"{stem}.csv", out_dir / f"{stem}.json"]
    columns = list(dict.fromkeys(key for row in rows for key in row))  # rows may differ in extras
    write_text_atomic(paths[0], markdown + "\n")
    write_text_atomic(paths[1], csv_text(columns, rows))
    write_json_atomic(paths[2], {"note": note, "rows": rows})
    return paths
