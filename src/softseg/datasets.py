"""Datasets on disk -> :class:`Case` objects.

Three layouts are read (see docs/datasets.md): QUBIQ, rater folders and agreement maps.
This module knows layouts; only :mod:`softseg.io` knows file formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """What is needed to write an output exactly like its source file.

    ``disk_shape`` is the array shape as stored (e.g. ``(240, 240, 4)`` for a channels-last
    NIfTI, ``(H, W, 3)`` for an RGB PNG). ``affine``/``header`` are set for NIfTI only,
    ``png_mode``/``bit_depth`` for PNG only.
    """

    format: str
    disk_shape: tuple[int, ...]
    affine: np.ndarray | None = None
    header: Any | None = None
    png_mode: str | None = None
    bit_depth: int | None = None


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
    """A set of cases sharing tasks. ``layout`` is "qubiq", "raters" or "agreement"."""

    root: Path
    name: str
    layout: str
    tasks: tuple[str, ...]
    cases: tuple[Case, ...]

    def select(self, split: str | None = None, case_ids=None) -> "Dataset":
        """The cases of one split and/or with the given ids, in dataset order."""
        wanted = None if case_ids is None else set(case_ids)
        cases = tuple(
            c
            for c in self.cases
            if (split is None or c.split == split) and (wanted is None or c.case_id in wanted)
        )
        return Dataset(self.root, self.name, self.layout, self.tasks, cases)
