"""``softseg reproduce``'s tables: ours beside the paper's, with the difference per cell
(``tables.md`` for people, ``tables.csv`` and ``tables.json`` for programs).

Inputs are :class:`~softseg.experiments.cells.Cell` values in our native units, keyed by
the metric keys of :mod:`softseg.evaluation.registry`; the paper's numbers and its tables'
columns are :mod:`softseg.experiments.paper`'s. Everything is shown in the paper's units.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

from softseg.experiments.cells import Cell, format_cell, format_diff, row_order, scaled, write_table_files
from softseg.experiments.paper import PAPER_TABLE2, PAPER_TABLE3, TABLE2, TABLE3


def paper_rows(results: Mapping[str, Mapping[str, Cell]]) -> list[dict]:
    """One row per task and metric of Tables 2 and 3: ours, the paper's and ``diff = ours − paper``,
    all in the paper's units. ``results`` maps the paper's task label ("Kidney") to its cells."""
    rows = []
    for table, specs, paper in (("Table 2", TABLE2, PAPER_TABLE2), ("Table 3", TABLE3, PAPER_TABLE3)):
        for label in row_order(results):
            for spec in specs:
                mean, std, spread, n = scaled(results[label].get(spec.key), spec)
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
                    format_cell(r["ours_mean"], r["ours_std"], spec.digits),
                    format_cell(r["paper_mean"], r["paper_std"], spec.digits),
                    format_diff(r["diff"], spec.digits),
                ]
            out.append("| " + " | ".join(line) + " |")
        out.append("")
    return "\n".join(out)


def write_paper_tables(out_dir: Path, results: Mapping[str, Mapping[str, Cell]], note: str = "") -> list[Path]:
    """Write ``tables.md``, ``tables.csv`` and ``tables.json`` (the rows of :func:`paper_rows`)."""
    rows = paper_rows(results)
    return write_table_files(Path(out_dir), "tables", paper_markdown(rows, note), rows, note)
