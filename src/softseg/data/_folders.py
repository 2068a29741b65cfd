"""Readers of the rater-folder and agreement-map layouts (``images/`` + ``raters/`` or ``agreement/``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence


from softseg.data import io
from softseg.data.cases import Scan, natural_key
from softseg.errors import SoftsegError

from softseg.data._reading import (
    DEFAULT_TASK,
    MaskFiles,
    check_rater_sets,
    class_problems,
    multiclass_task,
    read_case,
    restrict_tasks,
    make_scan,
    select_tasks,
)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- rater folders


def _require_folders(root: Path, layout: str, names: Sequence[str]) -> None:
    missing = [n for n in names if not (root / n).is_dir()]
    if missing:
        raise SoftsegError(
            f"{root}: the {layout} layout needs folders {', '.join(n + '/' for n in names)}; "
            f"found no {', '.join(n + '/' for n in missing)}"
        )


def _files_by_stem(folder: Path, problems: list[str], warnings: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if path.name.startswith(".") or path.is_dir():
            continue
        if not io.is_supported(path):
            warnings.append(f"{path}: ignored; expected {io.SUPPORTED}")
            continue
        key = io.stem(path)
        if key in out:
            problems.append(f"{path}: expected one file named {key}, found also {out[key].name}")
            continue
        out[key] = path
    return out


def _single_task_name(root: Path, tasks: Sequence[str] | None) -> str:
    if tasks is None:
        return DEFAULT_TASK
    if len(tasks) != 1:
        raise SoftsegError(
            f"{root}: single-task data take one task name, found {len(tasks)} ({', '.join(tasks)})"
        )
    return tasks[0]


def read_rater_folders(root: Path, name: str, tasks: Sequence[str] | None, strict: bool,
                       classes: Sequence[str] = ()) -> Scan:
    """``images/<case>.<ext>`` with ``raters/<case>/<rater>.<ext>`` (one task) or
    ``raters/<case>/<task>/<rater>.<ext>`` (several tasks). With ``classes`` each rater file
    is a class map (one task at most), and ``tasks`` selects among the foreground classes."""
    _require_folders(root, "rater-folder", ("images", "raters"))
    problems: list[str] = []
    warnings: list[str] = []
    images = _files_by_stem(root / "images", problems, warnings)
    case_dirs = {d.name: d for d in sorted((root / "raters").iterdir()) if d.is_dir() and not d.name.startswith(".")}
    multi = any(any(c.is_dir() for c in d.iterdir()) for d in case_dirs.values())
    per_case: dict[str, MaskFiles] = {}
    for case_id, folder in case_dirs.items():
        has_files = any(p.is_file() and not p.name.startswith(".") for p in folder.iterdir())
        if multi:
            if has_files:
                problems.append(
                    f"{folder}: expected task folders (raters/<case>/<task>/<rater>.<ext>) as in "
                    f"other cases, found rater files directly"
                )
            groups = {d.name: d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")}
        else:
            groups = {None: folder}
        files: MaskFiles = {}
        for task, group in groups.items():
            found = _files_by_stem(group, problems, warnings)
            if not found:
                problems.append(f"{group}: expected rater masks <rater>.png|.nii.gz, found none")
                continue
            files[task] = list(found.items())
        per_case[case_id] = files

    if multi:
        found_tasks = sorted({t for f in per_case.values() for t in f}, key=natural_key)
        multiclass_task(root, found_tasks, classes)
        selected = tuple(found_tasks) if classes else select_tasks(root, found_tasks, tasks)
    else:
        task_name = DEFAULT_TASK if classes else _single_task_name(root, tasks)
        per_case = {c: ({task_name: f[None]} if None in f else {}) for c, f in per_case.items()}
        found_tasks, selected = [task_name], (task_name,)

    cases = []
    declared: dict[str, MaskFiles] = {}
    for case_id in sorted(set(images) | set(case_dirs), key=natural_key):
        files = per_case.get(case_id, {})
        if case_id not in case_dirs:
            problems.append(
                f"{images[case_id]}: {case_id}: expected rater masks in "
                f"{root / 'raters' / case_id}/, found no such folder"
            )
        elif multi:
            for task in selected:
                if task not in files:
                    problems.append(
                        f"{case_dirs[case_id]}: {case_id}: expected a task folder {task}/ like "
                        f"other cases, found none"
                    )
        case = read_case(case_id, images.get(case_id), restrict_tasks(files, selected), None, problems,
                          image_hint=f"{root / 'images' / case_id}.png|.nii.gz", classes=classes)
        if case is not None:
            cases.append(case)
            declared[case_id] = files
    check_rater_sets(declared, selected, "raters", strict, problems, warnings)
    if classes:
        problems += class_problems(cases, classes, root)
        selected = select_tasks(root, classes[1:], tasks)
    return make_scan(root, name, "raters", selected, cases, problems, warnings, classes)


# ----------------------------------------------------------------------------- agreement maps


def _rater_counts(root: Path, n_raters, tasks: Sequence[str]) -> dict[str, int]:
    if n_raters is None:
        raise SoftsegError(
            f"{root}: agreement maps need the number of raters A behind them; pass it "
            f"(--n-raters A) or write {{\"n_raters\": A}} into {root / 'dataset.json'}"
        )
    counts = dict(n_raters) if isinstance(n_raters, Mapping) else {t: n_raters for t in tasks}
    for task in tasks:
        value = counts.get(task)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SoftsegError(
                f"{root}: expected a whole number of raters >= 1 for task {task}, found {value!r}"
            )
    return counts


def read_agreement(root: Path, name: str, tasks: Sequence[str] | None, n_raters) -> Scan:
    """``images/<case>.<ext>`` with ``agreement/<case>.<ext>`` (one task) or
    ``agreement/<case>/<task>.<ext>``, plus the number of raters A per task."""
    _require_folders(root, "agreement-map", ("images", "agreement"))
    problems: list[str] = []
    warnings: list[str] = []
    images = _files_by_stem(root / "images", problems, warnings)
    folder = root / "agreement"
    per_case: dict[str, dict[str, Path]] = {}
    for case_id, path in _files_by_stem(folder, problems, warnings).items():
        per_case[case_id] = {None: path}
    multi = False
    for sub in sorted(folder.iterdir()):
        if sub.is_dir() and not sub.name.startswith("."):
            multi = True
            if sub.name in per_case:
                problems.append(f"{sub}: expected either {sub.name}.<ext> or {sub.name}/, found both")
            per_case[sub.name] = dict(_files_by_stem(sub, problems, warnings))
    if multi:
        flat = [c for c, f in per_case.items() if None in f]
        for case_id in flat:
            problems.append(
                f"{per_case[case_id][None]}: expected a folder agreement/{case_id}/<task>.<ext> "
                f"as for other cases, found a single map"
            )
            del per_case[case_id]
        found_tasks = sorted({t for f in per_case.values() for t in f}, key=natural_key)
        selected = select_tasks(root, found_tasks, tasks)
    else:
        task_name = _single_task_name(root, tasks)
        per_case = {c: {task_name: f[None]} for c, f in per_case.items()}
        found_tasks, selected = [task_name], (task_name,)
    counts = _rater_counts(root, n_raters, selected)

    cases = []
    for case_id in sorted(set(images) | set(per_case), key=natural_key):
        maps = per_case.get(case_id)
        if maps is None:
            problems.append(
                f"{images[case_id]}: {case_id}: expected an agreement map in {folder}/, found none"
            )
            maps = {}
        elif not maps:
            problems.append(f"{folder / case_id}: {case_id}: expected agreement maps <task>.<ext>, found none")
        for task in selected:
            if maps and task not in maps:
                problems.append(f"{folder / case_id}: {case_id}: expected {task}.<ext> like other cases, found none")
        chosen = {t: p for t, p in maps.items() if t in selected}
        case = read_case(case_id, images.get(case_id), {}, None, problems, chosen, counts,
                          image_hint=f"{root / 'images' / case_id}.png|.nii.gz")
        if case is not None:
            cases.append(case)
    return make_scan(root, name, "agreement", selected, cases, problems, warnings)
