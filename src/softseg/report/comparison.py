"""Figures of ``softseg compare``: per-case paired values and data efficiency.

Like :mod:`softseg.report.figures`, these draw the numbers they are given (matplotlib object
API, Agg canvas) and compute none; :func:`softseg.report.figures.png_bytes` makes the PNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

BETTER, WORSE, SAME = "#2e8b57", "#c0392b", "#7f7f7f"
MEAN = "#1b1b1b"


@dataclass(frozen=True)
class PairedPanel:
    """One metric of one method against the reference: a line per case from the reference's
    value (left) to the method's (right)."""

    metric: str  # axis label, e.g. "Dice"
    method: str
    reference: str
    reference_values: Sequence[float]  # per case, paired with method_values
    method_values: Sequence[float]
    means: tuple[float, float]  # (reference, method): drawn as the bold line
    higher_is_better: bool
    caption: str = ""  # e.g. "Δ +0.012 [−0.003, +0.027], Holm p 0.21"


def paired_figure(title: str, panels: Sequence[Sequence[PairedPanel]]) -> Figure:
    """A grid of :class:`PairedPanel`: one row per metric, one column per method. A case's
    line is green where the method is better, red where worse, grey where equal; the bold
    line joins the means."""
    rows = len(panels)
    cols = max((len(r) for r in panels), default=1)
    figure = Figure(figsize=(2.9 * cols + 0.6, 2.9 * rows + 0.7))
    for i, row in enumerate(panels):
        for j, panel in enumerate(row):
            _draw_paired(figure.add_subplot(rows, cols, i * cols + j + 1), panel, first_column=j == 0)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return figure


def _draw_paired(axes, panel: PairedPanel, first_column: bool) -> None:
    ref = np.asarray(panel.reference_values, dtype=np.float64)
    own = np.asarray(panel.method_values, dtype=np.float64)
    for r, m in zip(ref, own):
        colour = SAME if r == m else BETTER if (m > r) == panel.higher_is_better else WORSE
        axes.plot([0, 1], [r, m], color=colour, lw=0.9, alpha=0.55, marker="o", ms=2.5)
    axes.plot([0, 1], list(panel.means), color=MEAN, lw=2.4, marker="D", ms=5, label="mean")
    axes.set_xlim(-0.25, 1.25)
    axes.set_xticks([0, 1], [panel.reference, panel.method], fontsize=8)
    if first_column:
        direction = "higher" if panel.higher_is_better else "lower"
        axes.set_ylabel(f"{panel.metric} ({direction} is better)", fontsize=9)
    axes.set_title(f"{panel.metric}: {len(ref)} cases", fontsize=9)
    if panel.caption:
        axes.text(0.5, -0.2, panel.caption, transform=axes.transAxes, ha="center", va="top", fontsize=7)
    axes.grid(alpha=0.3)


@dataclass(frozen=True)
class FractionSeries:
    """One method's value against the training fraction: the mean and spread over seeds."""

    method: str
    fractions: Sequence[float]
    means: Sequence[float]
    stds: Sequence[float]


def fractions_figure(title: str, panels: Mapping[str, Sequence[FractionSeries]]) -> Figure:
    """One panel per metric (label -> series): each method's mean over seeds against the
    fraction of training patients, error bars ± its std over seeds."""
    figure = Figure(figsize=(4.4 * max(1, len(panels)) + 0.4, 4.0))
    for k, (metric, series) in enumerate(panels.items()):
        axes = figure.add_subplot(1, len(panels), k + 1)
        for s in series:
            axes.errorbar(s.fractions, s.means, yerr=s.stds, marker="o", ms=4, capsize=3, lw=1.5,
                          label=s.method)
        axes.set_xlabel("fraction of training patients")
        axes.set_ylabel(metric)
        axes.set_xlim(0, 1.05)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, frameon=False)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return figure
