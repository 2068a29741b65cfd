"""`softseg check`: every problem of a dataset in one pass, plus a summary of what is there.

The problems come from reading the dataset (:func:`softseg.data.datasets.scan_dataset`); this
module adds the summary: cases per split, tasks, raters per task, image sizes, channels,
foreground fraction of the soft labels and mean pairwise rater Dice.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from softseg.data.cases import Dataset, channel_problems
from softseg.data.datasets import find_qubiq_datasets, is_qubiq_dataset, scan_dataset
from softseg.data.labels import soft_label


@dataclass(frozen=True)
class TaskSummary:
    """Statistics of one task over its labelled cases.

    ``foreground``: per-case mean of the soft label (fraction of the image, [0, 1]).
    ``pairwise_dice``: per-case mean Dice over all rater pairs (both empty -> 1), for cases
    with at least two rater masks; empty for agreement-map data.
    """

    task: str
    labelled: int
    raters_min: int
    raters_max: int
    rater_sets: int
    foreground: tuple[float, ...]
    pairwise_dice: tuple[float, ...]


@dataclass(frozen=True)
class CheckReport:
    """Everything `softseg check` prints."""

    dataset: Dataset
    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    splits: Mapping[str, int]
    tasks: tuple[TaskSummary, ...]
    sizes: Mapping[tuple[int, ...], int]
    channels: Mapping[int, int]

    @property
    def ok(self) -> bool:
        return not self.problems


def pairwise_dice(masks: np.ndarray) -> float:
    """Mean Dice over all pairs of raters.

    ``masks`` is ``(R, *spatial)`` bool with R >= 2. Dice(a, b) = 2|a∩b| / (|a| + |b|);
    two empty masks agree perfectly (Dice 1). Intersections for all pairs come from one
    matrix product, so ten raters on a large image cost one pass.
    """
    if masks.shape[0] < 2:
        raise ValueError(f"pairwise Dice needs at least 2 raters, got {masks.shape[0]}")
    flat = masks.reshape(masks.shape[0], -1).astype(np.float32)
    # float32 counts are exact up to 2**24 pixels per mask; use float64 beyond that.
    if flat.shape[1] >= 2**24:
        flat = flat.astype(np.float64)
    inter = (flat @ flat.T).astype(np.float64)  # exact counts; divide in float64
    sizes = np.diag(inter)
    values = []
    for i, j in itertools.combinations(range(masks.shape[0]), 2):
        total = sizes[i] + sizes[j]
        values.append(1.0 if total == 0 else 2.0 * inter[i, j] / total)
    return float(np.mean(values))


def summarize(dataset: Dataset) -> tuple[dict[str, int], tuple[TaskSummary, ...]]:
    """Cases per split (``"all"`` when the layout has no splits) and one summary per task."""
    splits = Counter(c.split or "all" for c in dataset.cases)
    summaries = []
    for task in dataset.tasks:
        labelled = [c for c in dataset.cases if c.is_labelled(task)]
        counts = [c.n_raters[task] for c in labelled]
        sets = {c.raters.get(task) for c in labelled if task in c.raters}
        foreground = tuple(float(soft_label(c, task).mean()) for c in labelled)
        dice = tuple(
            pairwise_dice(c.masks[task]) for c in labelled
            if task in c.masks and c.masks[task].shape[0] >= 2
        )
        summaries.append(TaskSummary(
            task=task, labelled=len(labelled), raters_min=min(counts, default=0),
            raters_max=max(counts, default=0), rater_sets=len(sets),
            foreground=foreground, pairwise_dice=dice,
        ))
    return dict(splits), tuple(summaries)


def check_dataset(
    path: str | Path,
    layout: str = "auto",
    tasks: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    n_raters: int | Mapping[str, int] | None = None,
    strict: bool = False,
) -> CheckReport:
    """Read a dataset, collecting every problem, and summarise it.

    Arguments as :func:`softseg.data.datasets.load_dataset`. Raises SoftsegError only when the
    folder cannot be read as a dataset at all (missing, no known layout); every other
    problem is in ``report.problems``, including one line per case whose image channel count
    differs from the one most cases have.
    """
    scan = scan_dataset(path, layout, tasks=tasks, splits=splits, n_raters=n_raters, strict=strict)
    per_split, summaries = summarize(scan.dataset)
    # A model takes one channel count: an image that differs from the majority is a
    # problem to fix before training, named case by case with the way out.
    channels = tuple(f"{line}; convert the images to one channel count (e.g. all grey or all RGB)"
                     for line in channel_problems(scan.dataset.cases))
    return CheckReport(
        dataset=scan.dataset,
        problems=scan.problems + channels,
        warnings=scan.warnings,
        splits=per_split,
        tasks=summaries,
        sizes=dict(Counter(c.spatial_shape for c in scan.dataset.cases)),
        channels=dict(Counter(c.channels for c in scan.dataset.cases)),
    )


def dataset_folders(path: str | Path, layout: str = "auto") -> list[Path]:
    """The dataset folders to check for ``path``: ``[path]``, or each QUBIQ dataset below
    ``path`` when it is a release root holding several (e.g. the demo-data output)."""
    path = Path(path)
    if layout not in ("auto", "qubiq") or not path.is_dir() or is_qubiq_dataset(path):
        return [path]
    if any((path / name).exists() for name in ("images", "dataset.json")):
        return [path]
    return find_qubiq_datasets(path) or [path]


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def _spread(values: Sequence[float], digits: int = 3) -> str:
    if not values:
        return "n/a"
    array = np.asarray(values)
    return (f"{array.mean():.{digits}f} ± {array.std():.{digits}f} "
            f"(min {array.min():.{digits}f}, max {array.max():.{digits}f})")


def format_report(report: CheckReport) -> str:
    """The text `softseg check` prints: problems, warnings, then the summary."""
    lines = [f"problem: {p}" for p in report.problems]
    lines += [f"warning: {w}" for w in report.warnings]
    data = report.dataset
    lines.append(f"dataset: {data.name} ({data.layout} layout) at {data.root}")
    split_text = ", ".join(f"{s} {n}" for s, n in report.splits.items())
    lines.append(f"cases: {len(data.cases)}" + (f" ({split_text})" if set(report.splits) != {"all"} else ""))
    if data.classes:
        values = ", ".join(f"{name} = {value}" for value, name in enumerate(data.classes))
        lines.append(f"classes: {values} (class maps; the tasks are the foreground classes)")
    lines.append(f"tasks: {', '.join(data.tasks) or 'none'}")
    for t in report.tasks:
        raters = f"{t.raters_min}" if t.raters_min == t.raters_max else f"{t.raters_min}-{t.raters_max}"
        sets = f", {t.rater_sets} rater sets" if t.rater_sets > 1 else ""
        lines.append(f"  {t.task}: {t.labelled} labelled cases, raters {raters}{sets}")
        lines.append(f"    foreground fraction of soft labels: {_spread(t.foreground)}")
        dice = _spread(t.pairwise_dice) if t.pairwise_dice else "n/a (no individual rater masks)"
        lines.append(f"    mean pairwise rater Dice: {dice}")
    if report.sizes:
        common = sorted(report.sizes.items(), key=lambda kv: (-kv[1], kv[0]))
        if len(common) <= 4:
            sizes = ", ".join(f"{_shape(s)} ({n})" for s, n in common)
        else:
            ordered = sorted(report.sizes, key=lambda s: (int(np.prod(s)), s))
            sizes = (f"{len(common)} sizes from {_shape(ordered[0])} to {_shape(ordered[-1])}, "
                     f"most common {_shape(common[0][0])} ({common[0][1]})")
        lines.append(f"image sizes: {sizes}")
        lines.append("channels: " + ", ".join(f"{c} ({n} cases)" for c, n in sorted(report.channels.items())))
    verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
    lines.append(f"result: {verdict}, {len(report.warnings)} warning(s)")
    return "\n".join(lines)
