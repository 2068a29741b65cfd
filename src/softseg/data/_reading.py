"""What the layout readers share: reading one case, and the checks across a dataset's cases.

The readers of each layout (:mod:`softseg.data._qubiq`, :mod:`softseg.data._folders`) walk
their folders, read every file through :mod:`softseg.data.io`, and collect every problem
instead of stopping at the first: a :class:`softseg.data.cases.Scan` comes back. Problems
name the file, what was expected and what was found.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from softseg.data import io
from softseg.data.cases import Case, Dataset, Scan
from softseg.errors import SoftsegError

# A rater's mask is on its image's grid when their affines place every voxel within this
# fraction of the smallest voxel size of each other (a thousandth of a voxel: far above the
# rounding of float32 headers, far below any real misregistration).
GRID_TOLERANCE = 1e-3

log = logging.getLogger(__name__)

QUBIQ_MASK = re.compile(r"^(task\d+)_(seg\d+)\.nii(\.gz)?$", re.IGNORECASE)
DEFAULT_TASK = "task01"

# mask files of one case: task -> [(rater, path)], raters in natural order
MaskFiles = dict[str, list[tuple[str, Path]]]


# ----------------------------------------------------------------------------- one case


def read_case(
    case_id: str,
    image_path: Path | None,
    mask_files: MaskFiles,
    split: str | None,
    problems: list[str],
    agreement_files: Mapping[str, Path] | None = None,
    n_raters: Mapping[str, int] | None = None,
    image_hint: str = "",
    classes: Sequence[str] = (),
) -> Case | None:
    """Read one case; append its problems. None when the image cannot be read.

    ``image_hint`` says where the image was looked for, for the message when it is missing.
    With ``classes`` (multi-class data) each rater file is a class map with values
    0..len(classes)-1, and the case's masks are per foreground class (:func:`class_masks`).
    """
    masks: dict[str, list[tuple[str, np.ndarray, Path]]] = {}
    grids: dict[Path, io.Geometry] = {}
    for task, files in mask_files.items():
        for rater, path in files:
            try:
                if classes:
                    mask, grids[path] = io.read_class_map(path, len(classes))
                else:
                    mask, grids[path] = io.read_mask(path)
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
            elif (offset := _off_grid(geometry, grids[path], spacing)) is not None:
                problems.append(
                    f"{path}: {case_id} {task} rater '{rater}': expected the image's grid "
                    f"({image_path.name}), found an affine that places voxels up to {offset:.3g} mm "
                    "away; was it drawn on another series? Resample the mask onto the image, or "
                    "fix its header if only the header is wrong"
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
    if classes:
        stacked, raters = class_masks(stacked, raters, classes)
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


def class_masks(
    maps: Mapping[str, np.ndarray], raters: Mapping[str, tuple[str, ...]], classes: Sequence[str]
) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, ...]]]:
    """The raters' class maps ``(R, *spatial)`` of a case's one task as binary masks per
    foreground class: ``masks[classes[v]] = maps == v`` for v >= 1, raters alike. (The
    background is what no foreground mask covers, so it is not stored.)"""
    masks: dict[str, np.ndarray] = {}
    names: dict[str, tuple[str, ...]] = {}
    for task, stack in maps.items():
        for value, name in enumerate(classes[1:], start=1):
            masks[name] = stack == value
            names[name] = raters[task]
    return masks, names


def class_problems(cases: Sequence[Case], classes: Sequence[str], root: Path) -> list[str]:
    """A foreground class that no rater of any case drew: nothing to learn it from, and the
    sign of binary masks read as class maps (every map 0/1 under three or more labels)."""
    labelled = [c for c in cases if c.masks]
    if not labelled:
        return []
    return [
        f"{root}: class {name!r} (value {value} in dataset.json's labels) is drawn in no rater's "
        f"map of the {len(labelled)} labelled case(s); expected class maps with values "
        f"0..{len(classes) - 1}: are these binary masks? Remove the class from labels, or "
        "drop the labels entry for binary data"
        for value, name in enumerate(classes[1:], start=1)
        if not any(c.masks[name].any() for c in labelled if name in c.masks)
    ]


def multiclass_task(root: Path, found: Sequence[str], classes: Sequence[str]) -> None:
    """Raise unless multi-class data have at most one task of class maps: ``labels`` apply to
    one class map per rater (several structures are classes of that map)."""
    if classes and len(found) > 1:
        raise SoftsegError(
            f"{root}: dataset.json's labels make each rater's file one class map, but the layout "
            f"has {len(found)} tasks ({', '.join(found)}); put all classes into one map per rater, "
            "or drop the labels entry to train the tasks as binary masks"
        )


def _off_grid(image: io.Geometry, mask: io.Geometry, spacing: Sequence[float]) -> float | None:
    """How far (mm) a mask's grid is from its image's, when beyond :data:`GRID_TOLERANCE` of
    the smallest voxel (float32 headers round at about 1e-7 of a coordinate); else None."""
    offset = io.grid_difference(image, mask)
    sizes = [s for s in spacing if np.isfinite(s) and s > 0]
    if offset is None or offset <= GRID_TOLERANCE * (min(sizes) if sizes else 1.0):
        return None
    return offset


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


def select_tasks(root: Path, found: Sequence[str], tasks: Sequence[str] | None) -> tuple[str, ...]:
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


def check_rater_sets(
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


def make_scan(root, name, layout, tasks, cases, problems, warnings, classes=()) -> Scan:
    dataset = Dataset(root=root, name=name, layout=layout, tasks=tuple(tasks), cases=tuple(cases),
                      classes=tuple(classes))
    return Scan(dataset=dataset, problems=tuple(problems), warnings=tuple(warnings))


def restrict_tasks(mask_files: MaskFiles, tasks: Sequence[str]) -> MaskFiles:
    return {t: f for t, f in mask_files.items() if t in tasks}
