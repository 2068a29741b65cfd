"""Readers of the three dataset layouts (QUBIQ, rater folders, agreement maps).

Each reader walks its folder, reads every file through :mod:`softseg.data.io`, and collects
every problem instead of stopping at the first: a :class:`softseg.data.datasets.Scan` comes
back. Problems name the file, what was expected and what was found.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from softseg.data import io
from softseg.data.cases import QUBIQ_SPLITS, Case, Dataset, Scan, is_qubiq_case, natural_key
from softseg.errors import SoftsegError

log = logging.getLogger(__name__)

QUBIQ_MASK = re.compile(r"^(task\d+)_(seg\d+)\.nii(\.gz)?$", re.IGNORECASE)
DEFAULT_TASK = "task01"

# mask files of one case: task -> [(rater, path)], raters in natural order
MaskFiles = dict[str, list[tuple[str, Path]]]


# ----------------------------------------------------------------------------- one case


def _read_case(
    case_id: str,
    image_path: Path | None,
    mask_files: MaskFiles,
    split: str | None,
    problems: list[str],
    agreement_files: Mapping[str, Path] | None = None,
    n_raters: Mapping[str, int] | None = None,
    image_hint: str = "",
) -> Case | None:
    """Read one case; append its problems. None when the image cannot be read.

    ``image_hint`` says where the image was looked for, for the message when it is missing.
    """
    masks: dict[str, list[tuple[str, np.ndarray, Path]]] = {}
    for task, files in mask_files.items():
        for rater, path in files:
            try:
                mask, _ = io.read_mask(path)
            except SoftsegError as error:
                problems.append(f"{case_id}: {error}")
                continue
            masks.setdefault(task, []).append((rater, mask, path))
    maps: dict[str, tuple[np.ndarray, Path]] = {}
    for task, path in (agreement_files or {}).items():
        try:
            maps[task] = (_read_agreement_map(path, n_raters[task]), path)
        except SoftsegError as error:
            problems.append(f"{case_id}: {error}")

    if image_path is None:
        where = next((p for f in mask_files.values() for _, p in f), None)
        where = where or next(iter((agreement_files or {}).values()), None)
        problems.append(
            f"{case_id}: expected an image {image_hint} for the labels at {where}, found none"
        )
        return None
    shapes = [m.shape for found in masks.values() for _, m, _ in found]
    shapes += [a.shape for a, _ in maps.values()]
    reference = Counter(shapes).most_common(1)[0][0] if shapes else None
    try:
        image, spacing, geometry = io.read_image(image_path, spatial_shape=reference)
    except SoftsegError as error:
        problems.append(f"{case_id}: {error}")
        return None
    bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
    if bad:
        problems.append(
            f"{image_path}: {case_id}: expected finite image values, found {bad} NaN/inf; "
            f"fix or remove these voxels"
        )
    spatial = tuple(image.shape[1:])

    stacked: dict[str, np.ndarray] = {}
    raters: dict[str, tuple[str, ...]] = {}
    for task, found in masks.items():
        kept = []
        for rater, mask, path in found:
            if mask.shape != spatial:
                problems.append(
                    f"{path}: {case_id} {task} rater '{rater}': expected mask shape {spatial} "
                    f"(the image's), found {mask.shape}"
                )
            else:
                kept.append((rater, mask))
        if kept:
            stacked[task] = np.stack([m for _, m in kept])
            raters[task] = tuple(r for r, _ in kept)
    agreement: dict[str, np.ndarray] = {}
    for task, (array, path) in maps.items():
        if array.shape != spatial:
            problems.append(
                f"{path}: {case_id} {task}: expected agreement map shape {spatial} "
                f"(the image's), found {array.shape}"
            )
        else:
            agreement[task] = array
    counts = {t: int(m.shape[0]) for t, m in stacked.items()}
    counts.update({t: int(n_raters[t]) for t in agreement})
    return Case(
        case_id=case_id,
        image=image,
        spacing=spacing,
        geometry=geometry,
        image_path=image_path,
        masks=stacked,
        raters=raters,
        agreement=agreement,
        n_raters=counts,
        split=split,
    )


def _read_agreement_map(path: Path, n_raters: int) -> np.ndarray:
    """An agreement map snapped to the nearest k/A, checked to lie close to it."""
    array, geometry = io.read_probability(path)
    snapped = np.round(array.astype(np.float64) * n_raters) / n_raters
    # Integer PNGs store k/A rounded to their grid; floats must be k/A to within 1e-3.
    if geometry.format == "png" and geometry.bit_depth in (8, 16):
        tolerance = 0.5 / (2 ** geometry.bit_depth - 1) + 1e-6
    else:
        tolerance = 1e-3
    off = np.abs(snapped - array) > tolerance
    if off.any():
        worst = float(array[off][np.argmax(np.abs(snapped - array)[off])])
        raise SoftsegError(
            f"{path}: expected agreement values k/{n_raters} (k = 0..{n_raters}), found "
            f"{int(off.sum())} values that are not, e.g. {worst:.4f}; check the number of raters"
        )
    return snapped.astype(np.float32)


# ----------------------------------------------------------------------------- dataset checks


def _select_tasks(root: Path, found: Sequence[str], tasks: Sequence[str] | None) -> tuple[str, ...]:
    if tasks is None:
        return tuple(found)
    unknown = [t for t in tasks if t not in found]
    if unknown:
        raise SoftsegError(
            f"{root}: unknown task(s) {', '.join(unknown)}; this dataset has "
            f"{', '.join(found) or 'no labelled tasks'}"
        )
    return tuple(tasks)


def _rater_list(raters: Sequence[str]) -> str:
    return ", ".join(raters)


def _check_rater_sets(
    declared: Mapping[str, MaskFiles], tasks: Sequence[str], layout: str, strict: bool,
    problems: list[str], warnings: list[str],
) -> None:
    """Raters per task across cases, and across tasks within a case.

    Uses the rater files present (``declared``: case -> task -> files), so a mask that
    failed to read is reported once, not again as a missing rater.
    """
    named = {
        case_id: {t: tuple(r for r, _ in files[t]) for t in tasks if files.get(t)}
        for case_id, files in declared.items()
    }
    for task in tasks:
        sets = {case_id: found[task] for case_id, found in named.items() if task in found}
        if not sets:
            continue
        counts = Counter(sets.values())
        reference = max(counts, key=lambda s: (counts[s], len(s)))
        if layout == "raters" and len(counts) > 1:
            sizes = sorted(len(s) for s in counts)
            line = (
                f"{task}: rater sets vary between cases ({len(counts)} distinct sets, "
                f"{sizes[0]}-{sizes[-1]} raters); each soft label averages the raters its case has"
            )
            (problems if strict else warnings).append(line)
            continue
        for case_id, found in sets.items():
            if found == reference:
                continue
            if set(found) < set(reference):
                missing = [r for r in reference if r not in found]
                line = (
                    f"{case_id} {task}: {len(found)} raters where most cases have "
                    f"{len(reference)} (missing {_rater_list(missing)}); its soft label is the "
                    f"mean over the {len(found)} present"
                )
                (problems if strict else warnings).append(line)
            else:
                problems.append(
                    f"{case_id} {task}: expected raters {_rater_list(reference)} like most cases, "
                    f"found {_rater_list(found)}"
                )
    for case_id, found in named.items():
        if len(set(found.values())) > 1:
            listed = "; ".join(f"{t}: {_rater_list(r)}" for t, r in found.items())
            line = f"{case_id}: tasks have different rater sets ({listed})"
            (problems if layout == "qubiq" or strict else warnings).append(line)


def _scan(root, name, layout, tasks, cases, problems, warnings) -> Scan:
    channels = Counter(c.channels for c in cases)
    if len(channels) > 1:
        listed = ", ".join(f"{n} channel(s) in {k} case(s)" for n, k in sorted(channels.items()))
        warnings.append(
            f"{root}: images have different channel counts ({listed}); a model takes one "
            f"count, so convert the images (e.g. all grey or all RGB)"
        )
    dataset = Dataset(root=root, name=name, layout=layout, tasks=tuple(tasks), cases=tuple(cases))
    return Scan(dataset=dataset, problems=tuple(problems), warnings=tuple(warnings))


def _restrict(mask_files: MaskFiles, tasks: Sequence[str]) -> MaskFiles:
    return {t: f for t, f in mask_files.items() if t in tasks}


# ----------------------------------------------------------------------------- QUBIQ


def read_qubiq(
    root: Path, name: str, tasks: Sequence[str] | None, splits: Sequence[str] | None, strict: bool
) -> Scan:
    """``<root>/{Training,Validation,Testing}/caseNN/`` or ``<root>/caseNN/``, each with
    ``image.nii.gz`` and ``taskTT_segRR.nii.gz``."""
    problems: list[str] = []
    warnings: list[str] = []
    folders = _qubiq_case_folders(root, splits)
    listed: list[tuple[str, str | None, Path, MaskFiles]] = []
    seen: set[str] = set()
    for split, folder in folders:
        case_id = folder.name
        if case_id in seen:
            renamed = f"{(split or '').lower()}-{case_id}"
            warnings.append(f"{folder}: case id {case_id} is used in another split; named {renamed}")
            case_id = renamed
        seen.add(case_id)
        files: MaskFiles = {}
        for path in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
            match = QUBIQ_MASK.match(path.name)
            if match and path.is_file():
                files.setdefault(match.group(1).lower(), []).append((match.group(2).lower(), path))
            elif path.name not in ("image.nii.gz", "image.nii") and not path.name.startswith("."):
                log.info("%s: ignored (not image.nii.gz or taskTT_segRR.nii.gz)", path)
        listed.append((case_id, split, folder, files))

    found_tasks = sorted({t for *_, files in listed for t in files}, key=natural_key)
    selected = _select_tasks(root, found_tasks, tasks)
    cases = []
    declared: dict[str, MaskFiles] = {}
    for case_id, split, folder, files in listed:
        image = next((folder / n for n in ("image.nii.gz", "image.nii") if (folder / n).is_file()), None)
        if image is None and not files:
            continue
        if not files and split not in ("Testing",) and found_tasks:
            problems.append(
                f"{folder}: {case_id}: expected rater masks taskTT_segRR.nii.gz "
                f"({', '.join(found_tasks)}) in a {split or 'labelled'} case, found none"
            )
        elif files:
            for task in selected:
                if task not in files:
                    problems.append(
                        f"{folder}: {case_id}: expected masks {task}_segRR.nii.gz like other "
                        f"cases, found none"
                    )
        case = _read_case(case_id, image, _restrict(files, selected), split, problems,
                          image_hint=str(folder / "image.nii.gz"))
        if case is not None:
            cases.append(case)
            declared[case_id] = files
    if not found_tasks and cases:
        warnings.append(f"{root}: no rater masks in any case; all {len(cases)} cases are unlabelled")
    _check_rater_sets(declared, selected, "qubiq", strict, problems, warnings)
    return _scan(root, name, "qubiq", selected, cases, problems, warnings)


def _qubiq_case_folders(root: Path, splits: Sequence[str] | None) -> list[tuple[str | None, Path]]:
    split_dirs = [s for s in QUBIQ_SPLITS if (root / s).is_dir()]
    if not split_dirs:
        if splits is not None:
            raise SoftsegError(
                f"{root}: splits {', '.join(splits)} were asked for but the dataset has no "
                f"Training/Validation/Testing folders; leave the split selection out"
            )
        return [(None, f) for f in _case_like(root)]
    missing = [s for s in (splits or ()) if s not in split_dirs]
    if missing:
        raise SoftsegError(
            f"{root}: expected split folder(s) {', '.join(missing)}, found only "
            f"{', '.join(split_dirs)}; choose among those splits"
        )
    wanted = [s for s in split_dirs if splits is None or s in splits]
    return [(s, f) for s in wanted for f in _case_like(root / s)]


def _case_like(folder: Path) -> list[Path]:
    out = []
    for child in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if child.is_dir() and not child.name.startswith("."):
            if is_qubiq_case(child) or any(QUBIQ_MASK.match(p.name) for p in child.iterdir()):
                out.append(child)
    return out


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


def read_rater_folders(root: Path, name: str, tasks: Sequence[str] | None, strict: bool) -> Scan:
    """``images/<case>.<ext>`` with ``raters/<case>/<rater>.<ext>`` (one task) or
    ``raters/<case>/<task>/<rater>.<ext>`` (several tasks)."""
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
        selected = _select_tasks(root, found_tasks, tasks)
    else:
        task_name = _single_task_name(root, tasks)
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
        case = _read_case(case_id, images.get(case_id), _restrict(files, selected), None, problems,
                          image_hint=f"{root / 'images' / case_id}.png|.nii.gz")
        if case is not None:
            cases.append(case)
            declared[case_id] = files
    _check_rater_sets(declared, selected, "raters", strict, problems, warnings)
    return _scan(root, name, "raters", selected, cases, problems, warnings)


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
        selected = _select_tasks(root, found_tasks, tasks)
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
        case = _read_case(case_id, images.get(case_id), {}, None, problems, chosen, counts,
                          image_hint=f"{root / 'images' / case_id}.png|.nii.gz")
        if case is not None:
            cases.append(case)
    return _scan(root, name, "agreement", selected, cases, problems, warnings)
