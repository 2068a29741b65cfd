"""Matching prediction files to the labelled cases and tasks of a dataset (for evaluation).

Either layout ``softseg predict`` writes is read::

    PREDICTIONS/<case_id>/<task>.nii.gz | .nii | .png         ("cases")
    PREDICTIONS/<dataset name>/<case_id>/<task>.nii.gz         ("qubiq", the submission layout)

Side outputs (``<task>_std.*``, ``<task>_mask-*.*``, the uncertainty maps ``<task>_entropy.*``,
``<task>_mi.*``, ``<task>_expected_entropy.*``, an SSN's samples ``<task>_sample-NN.*``) and
files that are not maps are ignored, as are a multi-class prediction's background map and
label map (the tasks of multi-class data are its foreground classes).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from softseg.data import io
from softseg.data.cases import Case, Dataset
from softseg.errors import DatasetError, SoftsegError

log = logging.getLogger(__name__)

_SIDE_OUTPUT = re.compile(r"_(std|mask-[0-9.]+|sample-[0-9]+|" + "|".join(io.UNCERTAINTY_MAPS) + r")$")


@dataclass(frozen=True)
class Prediction:
    """One probability file matched to a labelled case and task."""

    case: Case
    task: str
    path: Path


def _map_name(path: Path) -> str | None:
    """Task name of a map file (``task01.nii.gz`` -> ``task01``); None for non-maps."""
    if path.name.startswith(".") or not path.is_file() or not io.is_supported(path):
        return None
    return io.stem(path)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def prediction_root(predictions: Path, dataset: Dataset) -> tuple[Path, str]:
    """The folder holding ``<case_id>/`` folders and the layout name ("cases" or "qubiq")."""
    if not predictions.is_dir():
        found = "a file" if predictions.exists() else "nothing"
        raise SoftsegError(
            f"{predictions}: expected a folder of predictions (written by `softseg predict`), "
            f"found {found}; check the path"
        )
    case_ids = {c.case_id for c in dataset.cases}
    names = {p.name for p in _subfolders(predictions)}
    nested = predictions / dataset.name
    if nested.is_dir() and dataset.name not in case_ids and not (names & case_ids):
        return nested, "qubiq"
    return predictions, "cases"


def match_predictions(
    predictions: Path,
    dataset: Dataset,
    tasks: Sequence[str],
    case_ids: set[str] | None = None,
) -> tuple[list[Prediction], str]:
    """Pair every labelled case (of ``case_ids``, default all) and task with its file.

    Returns the matches in dataset order and the predictions layout. Predictions for other
    cases of the dataset (another split, unlabelled) are skipped with a log line; a folder
    that is no case of the dataset is an extra. Raises DatasetError listing every missing,
    extra or ambiguous file.
    """
    root, layout = prediction_root(Path(predictions), dataset)
    selected = {
        c.case_id: c for c in dataset.cases
        if (case_ids is None or c.case_id in case_ids) and any(c.is_labelled(t) for t in tasks)
    }
    if not selected:
        raise SoftsegError(
            f"{dataset.root}: no case labelled for task(s) {', '.join(tasks)} in the selection; "
            "evaluation needs rater masks or agreement maps (choose another --split or --tasks)"
        )
    known = {c.case_id for c in dataset.cases}
    problems: list[str] = []
    found: dict[tuple[str, str], Path] = {}
    for item in sorted(root.iterdir()):
        if item.name.startswith("."):
            continue
        if item.is_file():
            if io.is_supported(item):
                problems.append(f"{item}: extra map at the top level; expected one folder per "
                                f"case, <case>/<task>{io.map_suffix(dataset.cases[0].geometry)}")
            continue
        if item.name not in selected:
            if layout == "qubiq" or item.name in known:
                log.info("%s: not a labelled case of the selection, skipped", item)
            else:
                problems.append(f"{item}: extra folder, matches no case of dataset "
                                f"{dataset.name!r}; remove it or evaluate against the right data")
            continue
        for file in sorted(item.iterdir()):
            task = _map_name(file)
            if task is None or _SIDE_OUTPUT.search(task):
                continue
            if dataset.classes and task in (dataset.classes[0], io.LABEL_MAP):
                continue  # a multi-class prediction's background and label map: not a task
            if task not in tasks:
                if task not in dataset.tasks:
                    problems.append(f"{file}: extra prediction for unknown task {task!r}; "
                                    f"dataset tasks are {', '.join(dataset.tasks)}")
                continue
            key = (item.name, task)
            if key in found:
                problems.append(f"{file}: second prediction for {item.name}/{task} "
                                f"(also {found[key].name}); keep one")
                continue
            found[key] = file
    matched: list[Prediction] = []
    for case in selected.values():
        for task in tasks:
            if not case.is_labelled(task):
                continue
            path = found.get((case.case_id, task))
            if path is None:
                problems.append(f"{root / case.case_id / task}.*: missing prediction for case "
                                f"{case.case_id}, task {task} (labelled in the data)")
            else:
                matched.append(Prediction(case, task, path))
    if problems:
        raise DatasetError(problems, header=f"{predictions}: predictions do not match "
                           f"{dataset.root}; pass --split/--tasks to evaluate a subset")
    return matched, layout
