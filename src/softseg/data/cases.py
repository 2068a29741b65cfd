"""The dataclasses every step passes around: :class:`Case` (one image with its raters' masks),
:class:`Dataset` and :class:`Scan` (what reading a dataset found), and their naming helpers."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from softseg.data.io import Geometry
from softseg.errors import SoftsegError

LAYOUTS = ("qubiq", "raters", "agreement")
QUBIQ_SPLITS = ("Training", "Validation", "Testing")


@dataclass(frozen=True)
class Case:
    """One image with its raters' masks for every task.

    ``image`` is ``(C, *spatial)`` float32, channels first; spatial axes keep the on-disk
    array order. ``masks[task]`` is ``(R, *spatial)`` bool with raters in ``raters[task]``
    order; it is absent for unlabelled cases and for agreement-map data, where
    ``agreement[task]`` holds the ``(*spatial)`` float32 map in [0, 1] instead.
    ``n_raters[task]`` is the number of raters behind the label.
    """

    case_id: str
    image: np.ndarray
    spacing: tuple[float, ...]
    geometry: Geometry
    image_path: Path
    masks: Mapping[str, np.ndarray] = field(default_factory=dict)
    raters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    agreement: Mapping[str, np.ndarray] = field(default_factory=dict)
    n_raters: Mapping[str, int] = field(default_factory=dict)
    split: str | None = None

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[1:])

    @property
    def channels(self) -> int:
        return int(self.image.shape[0])

    def is_labelled(self, task: str) -> bool:
        return task in self.masks or task in self.agreement


@dataclass(frozen=True)
class Dataset:
    """A set of cases sharing tasks. ``layout`` is "qubiq", "raters" or "agreement".

    ``classes`` is empty for binary data (one sigmoid task per region). For multi-class data
    (a ``labels`` entry in ``dataset.json``, see :func:`softseg.data.datasets.read_dataset_json`)
    it names the classes in value order, background first (value i is class ``classes[i]``);
    the tasks are then the foreground classes, ``tasks == classes[1:]`` (or a selection of
    them), and each case's ``masks[c]`` holds every rater's ``map == value of c``.
    """

    root: Path
    name: str
    layout: str
    tasks: tuple[str, ...]
    cases: tuple[Case, ...]
    classes: tuple[str, ...] = ()

    def select(self, split: str | None = None, case_ids=None) -> "Dataset":
        """The cases of one split and/or with the given ids, in dataset order."""
        wanted = None if case_ids is None else set(case_ids)
        cases = tuple(
            c
            for c in self.cases
            if (split is None or c.split == split) and (wanted is None or c.case_id in wanted)
        )
        return replace(self, cases=cases)


@dataclass(frozen=True)
class CaseQuery:
    """Which cases of a dataset folder a command uses: the folder's ``layout`` ("auto" detects
    it), the ``tasks`` (None: all), and the cases of one ``split`` and/or with ``case_ids``
    (None: all). Read with :func:`softseg.data.datasets.load_query`."""

    layout: str = "auto"
    tasks: tuple[str, ...] | None = None
    split: str | None = None
    case_ids: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Scan:
    """What reading a dataset found: the cases that could be read, plus every problem.

    ``problems`` make the dataset unusable (load_dataset raises them); ``warnings`` are
    worth knowing (a case with fewer raters, rater sets that vary between cases).
    """

    dataset: Dataset
    problems: tuple[str, ...]
    warnings: tuple[str, ...]


def is_qubiq_case(folder: Path) -> bool:
    """A QUBIQ case folder holds ``image.nii.gz`` (or ``image.nii``)."""
    return (folder / "image.nii.gz").is_file() or (folder / "image.nii").is_file()


def natural_key(text: str) -> list:
    """Sort key that orders case2 before case10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def channel_problems(cases: Sequence[Case], expected: int | None = None) -> list[str]:
    """One line per case whose image channel count differs from ``expected``.

    ``expected`` defaults to the count most cases have (ties to the smaller count), so a
    dataset with one RGB image among grey ones names that one case. Empty when all agree.
    """
    counts = Counter(c.channels for c in cases)
    if not counts:
        return []
    if expected is None:
        expected = min(counts, key=lambda n: (-counts[n], n))
        if len(counts) == 1:
            return []
    return [
        f"{c.case_id}: image has {c.channels} channel(s), expected {expected} ({c.image_path})"
        for c in cases
        if c.channels != expected
    ]


def check_channels(cases: Sequence[Case], expected: int | None, *, reason: str) -> None:
    """Raise :class:`SoftsegError` naming every case whose channel count is not ``expected``
    (``None``: the majority count); ``reason`` says where the expectation comes from, e.g.
    "the run runs/x/seed0 was trained on 1 channel" or "in_channels in the configuration"."""
    wrong = channel_problems(cases, expected)
    if wrong:
        shown = "; ".join(wrong[:10]) + (f"; ... ({len(wrong) - 10} more)" if len(wrong) > 10 else "")
        raise SoftsegError(
            f"{len(wrong)} image(s) have another channel count than {reason}: {shown}; "
            f"convert the images (e.g. all grey or all RGB) or use a matching run"
        )
