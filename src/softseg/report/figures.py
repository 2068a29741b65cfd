"""The report's figures, drawn with matplotlib's object API (Agg canvas, no pyplot state).

Each function takes numbers read from the evaluation or run folder and returns a
:class:`matplotlib.figure.Figure`; :func:`png_bytes` turns it into a PNG. Averages over cases
are taken only to draw a curve; every number printed comes from the files.
"""

from __future__ import annotations

import io as _bytes_io
from typing import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from softseg.evaluation.metrics import THRESHOLDS
from softseg.evaluation.registry import spec
from softseg.evaluation.result import Reliability
from softseg.evaluation.rows import Columns
from softseg.report.examples import Example
from softseg.report.inputs import Evaluation, finite

_THRESHOLDS_32 = THRESHOLDS.astype(np.float32)  # maps are float32; k/A must reach t = k/A
COLOURS = {"dice": "#1f5fa8", "precision": "#c0392b", "recall": "#2e8b57"}
FALSE_POSITIVE = (0.86, 0.15, 0.15)  # red, as in the paper's Figure 2
FALSE_NEGATIVE = (0.18, 0.72, 0.25)  # green
_DPI = 110


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG bytes (Agg canvas, white background)."""
    FigureCanvasAgg(figure)
    buffer = _bytes_io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, facecolor="white")
    return buffer.getvalue()


def threshold_curves(evaluation: Evaluation, task: str) -> Figure:
    """Dice, precision and recall against the confidence threshold for one task.

    Lines: curves.csv (t = 0.01 … 0.99) averaged over cases; markers: metrics.csv at the
    paper's thresholds 0.1 … 0.9 averaged over cases; the band spans the cases' 25th–75th
    percentiles of Dice.
    """
    figure = Figure(figsize=(6.4, 4.4))
    axes = figure.add_subplot()
    curves, metrics = evaluation.curves, evaluation.metrics
    fine = curves["task"] == task
    n_cases = len(set(curves["case"][fine]))
    grid = np.round(curves["threshold"][fine] * 100).astype(int)
    steps = np.unique(grid)
    for name, colour in COLOURS.items():
        per_step = [curves[name][fine][grid == s] for s in steps]
        axes.plot(steps / 100, [_nanmean(v) for v in per_step], color=colour, lw=2,
                  label=name.capitalize())
        if name == "dice":
            low = [np.nanpercentile(v, 25) if np.isfinite(v).any() else np.nan for v in per_step]
            high = [np.nanpercentile(v, 75) if np.isfinite(v).any() else np.nan for v in per_step]
            axes.fill_between(steps / 100, low, high, color=colour, alpha=0.12, lw=0,
                              label="Dice, 25–75 % of cases")
        coarse = metrics["task"] == task
        points = [_nanmean(metrics[name][coarse & np.isclose(metrics["threshold"], t)])
                  for t in THRESHOLDS]
        axes.plot(THRESHOLDS, points, "o", color=colour, ms=5, mfc="white", mew=1.5)
    axes.set_xlim(0, 1)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("confidence threshold t (prediction ≥ t vs soft label ≥ t)")
    axes.set_ylabel("mean over cases")
    axes.set_title(f"{task}: Dice, precision, recall by threshold ({n_cases} cases)")
    axes.grid(alpha=0.3)
    # below the axes, where it cannot hide a curve
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4, fontsize=8,
                frameon=False)
    figure.tight_layout()
    return figure


def reliability_data(reliability: Reliability) -> dict[str, np.ndarray]:
    """The reliability diagram's bins as equal-length float arrays: "confidence" (mean
    predicted probability per bin), "observed" (mean soft label per bin) and "count" (pixels
    per bin); NaN for an empty bin."""
    def floats(values):
        return np.array([np.nan if v is None else v for v in values], dtype=float)

    return {"confidence": floats(reliability.mean_pred), "observed": floats(reliability.mean_soft),
            "count": floats(reliability.count)}


def reliability_diagram(task: str, data: Mapping[str, np.ndarray], ece: float | None,
                        brier: float | None) -> Figure:
    """Observed frequency (mean soft label) against mean predicted probability, per bin."""
    figure = Figure(figsize=(5.2, 4.0))
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], ls="--", color="#888888", lw=1, label="perfect calibration")
    keep = np.isfinite(data["confidence"]) & np.isfinite(data["observed"]) & (data["count"] > 0)
    axes.plot(data["confidence"][keep], data["observed"][keep], "o-", color=COLOURS["dice"],
              lw=2, ms=5, label="model")
    share = axes.twinx()
    width = 0.8 / max(len(data["count"]), 1)
    share.bar(data["confidence"][keep], data["count"][keep], width=width, color="#999999",
              alpha=0.25)
    share.set_yscale("log")
    share.set_ylabel("pixels per bin (log)", color="#777777")
    axes.set_zorder(share.get_zorder() + 1)
    axes.patch.set_visible(False)
    scores = [f"{spec(key).name} {spec(key).format(value)}" for key, value in (("ece", ece), ("brier", brier))
              if finite(value)]
    axes.set_title(f"{task}: reliability" + (f" ({', '.join(scores)})" if scores else ""))
    axes.set_xlabel("mean predicted probability in bin")
    axes.set_ylabel("mean soft label in bin")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=8, frameon=False)
    figure.tight_layout()
    return figure


def training_curves(history: Columns, run_name: str) -> Figure:
    """Loss (train and validation), validation QUBIQ score and learning rate per epoch."""
    figure = Figure(figsize=(12, 3.6))
    loss, score, rate = figure.subplots(1, 3)

    def series(axes, column, colour, label=None):
        # validation may run every few epochs: empty cells are left out, not drawn as gaps
        keep = np.isfinite(history[column])
        axes.plot(history["epoch"][keep], history[column][keep], "o-", color=colour, lw=2,
                  ms=3, label=label)

    series(loss, "train_loss", COLOURS["dice"], "train")
    series(loss, "val_loss", COLOURS["precision"], "validation")
    loss.set_title("loss (BCE against soft labels)")
    loss.legend(frameon=False, fontsize=8)
    series(score, "val_qubiq", COLOURS["recall"])
    score.set_title("validation QUBIQ score")
    series(rate, "lr", "#555555")
    if np.all(history["lr"][np.isfinite(history["lr"])] > 0):
        rate.set_yscale("log")
    rate.set_title("learning rate")
    for axes in (loss, score, rate):
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
    figure.suptitle(f"training of {run_name}", fontsize=11)
    figure.tight_layout()
    return figure


def threshold_grid(example: Example) -> Figure:
    """The paper's Figure 2 for one case: soft label >= t (top) above prediction >= t
    (bottom) for t = 0.1 … 0.9; in the bottom row false positives are red, false negatives
    green, agreement white. The first column shows the image and the probability map."""
    rows, cols = example.soft.shape
    panel = 1.45
    figure = Figure(figsize=(panel * 10, panel * 2 * rows / cols + 0.9))
    grid = figure.subplots(2, 10, squeeze=False)
    grid[0, 0].imshow(example.image)
    grid[0, 0].set_title("image", fontsize=9)
    grid[1, 0].imshow(example.prob, cmap="magma", vmin=0, vmax=1)
    grid[1, 0].set_title("probability", fontsize=9)
    for column, t in enumerate(_THRESHOLDS_32, start=1):
        label = example.soft >= t
        predicted = example.prob >= t
        top = np.repeat(label[..., None].astype(float), 3, axis=-1)
        bottom = np.repeat((label & predicted)[..., None].astype(float), 3, axis=-1)
        bottom[predicted & ~label] = FALSE_POSITIVE
        bottom[label & ~predicted] = FALSE_NEGATIVE
        grid[0, column].imshow(top, interpolation="nearest")
        grid[1, column].imshow(bottom, interpolation="nearest")
        grid[0, column].set_title(f"t = {THRESHOLDS[column - 1]:.1f}", fontsize=9)
    for axes in grid.flat:
        axes.set_xticks([])
        axes.set_yticks([])
    figure.legend(handles=[Patch(color=FALSE_POSITIVE, label="false positive"),
                           Patch(color=FALSE_NEGATIVE, label="false negative"),
                           Patch(facecolor="white", edgecolor="black", label="agreement")],
                  loc="lower center", ncol=3, fontsize=8, frameon=False)
    figure.suptitle(f"{example.case_id}, {example.task} ({example.rank}, QUBIQ "
                    f"{example.qubiq:.3f}): top soft label ≥ t, bottom prediction ≥ t",
                    fontsize=10)
    figure.subplots_adjust(left=0.02, right=0.99, top=0.82, bottom=0.1, wspace=0.05,
                           hspace=0.22)
    return figure


# What each uncertainty map is, for its panel (softseg.inference.uncertainty).
UNCERTAINTY_TITLES = {"entropy": "entropy", "mi": "mutual information\n(seeds' disagreement)",
                      "expected_entropy": "expected entropy\n(each seed's own)"}


def uncertainty_panels(example: Example) -> Figure:
    """The probability map beside the uncertainty maps of one case as read (entropy, then
    mutual information and expected entropy where written), each on the scale [0, ln K]
    nats with a colour bar. Draws only what ``example.uncertainty`` holds."""
    kinds = [kind for kind in UNCERTAINTY_TITLES if kind in example.uncertainty]
    rows, cols = example.prob.shape
    panel = 2.4
    figure = Figure(figsize=(panel * (1 + len(kinds)) + 0.6 * len(kinds), panel * rows / cols + 1.0))
    grid = figure.subplots(1, 1 + len(kinds), squeeze=False)[0]
    shown = grid[0].imshow(example.prob, cmap="magma", vmin=0, vmax=1)
    grid[0].set_title("probability", fontsize=9)
    figure.colorbar(shown, ax=grid[0], fraction=0.046, pad=0.03)
    for axes, kind in zip(grid[1:], kinds):
        shown = axes.imshow(example.uncertainty[kind], cmap="viridis", vmin=0, vmax=example.max_nats)
        axes.set_title(UNCERTAINTY_TITLES[kind], fontsize=9)
        bar = figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.03)
        bar.set_label("nats", fontsize=8)
    for axes in grid:
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle(f"{example.case_id}, {example.task}: probability and uncertainty (nats, "
                    f"0 … ln K = {example.max_nats:.3f})", fontsize=10)
    figure.tight_layout()
    return figure


def _nanmean(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")
