"""Datasets on disk -> :class:`Case` objects.

Three layouts are read (see docs/datasets.md): QUBIQ, rater folders and agreement maps.
This module knows layouts; only :mod:`softseg.data.io` knows file formats. The readers of each
layout live in :mod:`softseg.data._qubiq` and :mod:`softseg.data._folders`, the dataclasses they fill in
:mod:`softseg.data.cases`; this module detects the layout and holds :func:`load_dataset`.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from softseg.data import io
from softseg.data._folders import read_agreement, read_rater_folders
from softseg.data._qubiq import read_qubiq
from softseg.data.cases import LAYOUTS, QUBIQ_SPLITS, CaseQuery, Dataset, Scan, is_qubiq_case, natural_key
from softseg.errors import DatasetError, SoftsegError

log = logging.getLogger(__name__)

DATASET_JSON = "dataset.json"
_CLASS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def load_dataset(
    path: str | Path,
    layout: str = "auto",
    tasks: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    n_raters: int | Mapping[str, int] | None = None,
    strict: bool = False,
) -> Dataset:
    """Read a dataset folder into a :class:`Dataset`.

    ``layout`` is "auto" (detected from the folder), "qubiq", "raters" or "agreement".
    ``tasks`` selects tasks by name; for single-task rater-folder and agreement data, one
    name renames the task (default "task01"). ``splits`` selects QUBIQ splits (e.g.
    ``("Training",)``). ``n_raters`` is the number of raters behind agreement maps (an int,
    or one per task); it may also come from ``dataset.json`` in the folder. ``strict`` turns
    rater-set warnings (a case with fewer raters) into problems.

    Raises DatasetError listing every problem found, or SoftsegError when the folder
    cannot be read as a dataset at all. Warnings are logged.
    """
    scan = scan_dataset(path, layout, tasks=tasks, splits=splits, n_raters=n_raters, strict=strict)
    for warning in scan.warnings:
        log.warning("%s", warning)
    if scan.problems:
        raise DatasetError(
            list(scan.problems),
            header=f"{scan.dataset.root}: dataset has problems; `softseg check` lists them with a summary",
        )
    return scan.dataset


def load_query(path: str | Path, query: CaseQuery) -> Dataset:
    """:func:`load_dataset` with the query's layout and tasks, then the cases of its split
    and/or ids (in dataset order); ids the dataset lacks are the caller's to report."""
    dataset = load_dataset(path, layout=query.layout, tasks=query.tasks)
    if query.split is None and query.case_ids is None:
        return dataset
    return dataset.select(split=query.split, case_ids=query.case_ids)


def scan_dataset(
    path: str | Path,
    layout: str = "auto",
    tasks: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    n_raters: int | Mapping[str, int] | None = None,
    strict: bool = False,
) -> Scan:
    """Like :func:`load_dataset` but returns the problems instead of raising them."""

    root = Path(path).expanduser()
    if not root.is_dir():
        found = "a file" if root.exists() else "nothing"
        raise SoftsegError(f"{root}: expected a dataset folder, found {found}; check the path")
    options = read_dataset_json(root)
    if layout == "auto":
        layout = options.get("layout") or "auto"
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise SoftsegError(
            f"{root}: unknown layout {layout!r}; expected one of auto, {', '.join(LAYOUTS)}"
        )
    if splits is not None:
        unknown = [s for s in splits if s not in QUBIQ_SPLITS]
        if unknown:
            raise SoftsegError(
                f"unknown split(s) {', '.join(unknown)}; expected some of {', '.join(QUBIQ_SPLITS)}"
            )
        if layout != "qubiq":
            raise SoftsegError(f"{root}: splits apply to the QUBIQ layout only, this is {layout!r}")
    if tasks is None and options.get("tasks") is not None:
        tasks = options["tasks"]
    if n_raters is None:
        n_raters = options.get("n_raters")
    name = str(options.get("name") or root.resolve().name)
    classes = class_names(root / DATASET_JSON, options.get("labels"))
    if classes and layout == "agreement":
        raise SoftsegError(
            f"{root / DATASET_JSON}: \"labels\" declares class maps, but the agreement-map layout "
            "holds one map per task, not the raters' class maps; use rater folders or the QUBIQ "
            "layout with one class map per rater"
        )
    if layout == "qubiq":
        return read_qubiq(root, name, tasks, splits, strict, classes)
    if layout == "raters":
        return read_rater_folders(root, name, tasks, strict, classes)
    return read_agreement(root, name, tasks, n_raters)


def class_names(path: Path, labels: Any) -> tuple[str, ...]:
    """The classes of a ``labels`` entry (nnU-Net v2's ``{"background": 0, "rim": 1, ...}``) in
    value order, background first; ``()`` without one (binary data).

    The values must be 0..C-1 without gaps, because value i is the model's output channel i
    (a gap would be a channel no pixel can take: remap the maps). nnU-Net's region labels
    (a list of values) are refused: nested regions train as binary tasks, one per region.
    """
    if labels is None:
        return ()
    where = f"{path}: \"labels\""
    if not isinstance(labels, dict) or not labels:
        raise SoftsegError(f'{where} must map class names to values, e.g. {{"background": 0, "rim": 1}}; found {labels!r}')
    problems = []
    for name, value in labels.items():
        if isinstance(value, list):
            problems.append(
                f"{name!r}: a region (list of values) as in nnU-Net's region training; softseg trains "
                "nested regions as binary tasks (one mask per region, no labels entry)"
            )
        elif isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{name!r}: expected an integer value, found {value!r}")
        elif (not _CLASS_NAME.fullmatch(name) or name == io.LABEL_MAP or "_std" in name or "_mask-" in name
              or name.endswith(tuple(f"_{kind}" for kind in io.UNCERTAINTY_MAPS))):
            problems.append(
                f"{name!r}: expected a class name usable as a file name (letters, digits, '-', '.', "
                "'_'; not 'label-map', '_std' or '_mask-', nor ending in '_entropy' or '_mi', which "
                "prediction files use)"
            )
    if problems:
        raise SoftsegError(f"{where}: " + "; ".join(problems))
    if labels.get("background") != 0:
        found = labels.get("background", "no such entry")
        raise SoftsegError(
            f'{where}: expected the background class as "background": 0 (nnU-Net\'s convention), found {found!r}'
        )
    values = sorted(labels.values())
    if values != list(range(len(labels))):
        raise SoftsegError(
            f"{where}: expected the values 0..{len(labels) - 1} once each (value i is output channel i), "
            f"found {', '.join(map(str, values))}; remap the class maps so their values have no gaps"
        )
    if len(labels) < 2:
        raise SoftsegError(f"{where}: expected a background and at least one foreground class, found {labels!r}")
    return tuple(sorted(labels, key=labels.get))


def read_dataset_json(root: Path) -> dict[str, Any]:
    """Options from ``<root>/dataset.json`` (all optional): ``layout``, ``name``, ``tasks``
    (list of names), ``n_raters`` (int or {task: int}), ``labels`` (class name -> value: the
    rater masks are class maps, see :func:`class_names`). ``{}`` when the file is absent."""
    path = root / DATASET_JSON
    if not path.is_file():
        return {}
    try:
        options = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SoftsegError(f"{path}: cannot read as JSON ({error}); fix or remove the file") from error
    if not isinstance(options, dict):
        raise SoftsegError(f"{path}: expected a JSON object, found {type(options).__name__}")
    allowed = {"layout", "name", "tasks", "n_raters", "labels"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise SoftsegError(
            f"{path}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(allowed))}"
        )
    tasks = options.get("tasks")
    if tasks is not None and not (
        isinstance(tasks, list) and tasks and all(isinstance(t, str) and t for t in tasks)
    ):
        raise SoftsegError(f"{path}: \"tasks\" must be a non-empty list of names, found {tasks!r}")
    return options


def is_qubiq_dataset(folder: Path) -> bool:
    """Split folders (Training/Validation/Testing) with cases, or case folders directly."""
    if not folder.is_dir():
        return False
    for child in _subdirs(folder):
        if child.name in QUBIQ_SPLITS and any(is_qubiq_case(c) for c in _subdirs(child)):
            return True
        if is_qubiq_case(child):
            return True
    return False


def find_qubiq_datasets(root: str | Path, max_depth: int = 3) -> list[Path]:
    """QUBIQ dataset folders at or below ``root`` (e.g. a release root such as
    ``training_data_v3/`` holding brain-growth, kidney, ...), sorted by path.

    Looks ``max_depth`` folder levels down and does not descend into a dataset.
    """
    root = Path(root)
    found: list[Path] = []

    def visit(folder: Path, depth: int) -> None:
        if is_qubiq_dataset(folder):
            found.append(folder)
            return
        if depth < max_depth:
            for child in _subdirs(folder):
                visit(child, depth + 1)

    visit(root, 0)
    return sorted(found)


def detect_layout(root: Path) -> str:
    """The layout of ``root`` from its contents; raises SoftsegError naming what was looked for."""
    if (root / "images").is_dir() and (root / "agreement").is_dir():
        return "agreement"
    if (root / "images").is_dir() and (root / "raters").is_dir():
        return "raters"
    if is_qubiq_dataset(root):
        return "qubiq"
    nested = find_qubiq_datasets(root)
    if nested:
        listed = ", ".join(str(p) for p in nested)
        raise SoftsegError(
            f"{root}: holds {len(nested)} QUBIQ dataset(s) ({listed}); "
            f"expected one dataset folder, pass one of them"
        )
    raise SoftsegError(
        f"{root}: no dataset layout found; looked for QUBIQ "
        f"(Training|Validation|Testing/caseNN/image.nii.gz, or caseNN/image.nii.gz), "
        f"rater folders (images/ and raters/) and agreement maps (images/ and agreement/); "
        f"point at the dataset folder or name the layout"
    )


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: natural_key(p.name))
    except OSError:
        return []
