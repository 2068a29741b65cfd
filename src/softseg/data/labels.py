"""Soft labels from rater masks, their variance, hard-label baselines, and writing them.

Hard-label baselines: majority vote, one random rater, STAPLE consensus (SimpleITK).

Per SPEC.md: the soft label of a case and task is the pixel-wise mean of the binary masks
of the raters present *for that case* (a case with 5 of 6 raters averages 5), so its values
lie in {k/A}. Variance is p(1 - p) and is never predicted.

Multi-class data (``Dataset.classes``): the soft label is the per-pixel class frequency over
the case's raters, ``(C, *spatial)`` with values k/A summing to 1 (:func:`class_distribution`);
the hard-label baselines are one-hot ``(C, *spatial)`` maps of the same shape.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from softseg.data import io
from softseg.data.cases import Case, Dataset
from softseg.errors import SoftsegError
from softseg.files import prepare_out_dir

log = logging.getLogger(__name__)


def _unlabelled(case: Case, task: str) -> SoftsegError:
    known = ", ".join(sorted(set(case.masks) | set(case.agreement))) or "none"
    return SoftsegError(
        f"{case.case_id}: no label for task {task!r} (labelled tasks: {known}); "
        f"unlabelled cases (e.g. QUBIQ Testing) have no soft label, select labelled cases"
    )


def soft_label(case: Case, task: str) -> np.ndarray:
    """The soft label of one case and task.

    Returns ``(*spatial)`` float32 in {k/A : k = 0..A} where A = ``case.n_raters[task]``:
    the mean of the case's A rater masks, or its (already snapped) agreement map.
    Raises SoftsegError for an unlabelled case or unknown task.
    """
    if task in case.masks:
        masks = case.masks[task]
        # Count in int then divide once, so the value is exactly the float32 nearest k/A.
        return (masks.sum(axis=0, dtype=np.int64) / masks.shape[0]).astype(np.float32)
    if task in case.agreement:
        return np.asarray(case.agreement[task], dtype=np.float32).copy()
    raise _unlabelled(case, task)


def soft_variance(p: np.ndarray) -> np.ndarray:
    """Pixel-wise Bernoulli variance p(1 - p) of a soft label; same shape, float32 in [0, 0.25]."""
    p = np.asarray(p, dtype=np.float32)
    return p * (np.float32(1.0) - p)


def majority_label(case: Case, task: str) -> np.ndarray:
    """The majority vote, ``(*spatial)`` bool: soft label >= 0.5 (ties go to foreground)."""
    return soft_label(case, task) >= np.float32(0.5)


def staple_probability(case: Case, task: str) -> np.ndarray:
    """STAPLE's (Warfield et al. 2004) per-pixel probability of foreground, ``(*spatial)`` float64.

    SimpleITK's ``STAPLEImageFilter`` over the case's rater masks (foreground value 1, its
    default prior, iterations and convergence). STAPLE is undefined where the raters give it
    nothing to estimate from (every mask empty, or every mask full); such NaN pixels take the
    majority vote instead, so a case nobody marked gets an empty consensus. Raises
    SoftsegError for agreement-map data (no individual raters) or unlabelled cases.
    """
    import SimpleITK as sitk

    masks = _rater_masks(case, task, "the STAPLE baseline")
    staple = sitk.STAPLEImageFilter()
    staple.SetForegroundValue(1.0)
    prob = sitk.GetArrayFromImage(
        staple.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in masks])
    ).astype(np.float64)
    undefined = np.isnan(prob)
    if undefined.any():
        prob[undefined] = majority_label(case, task)[undefined]
    return prob


def staple_label(case: Case, task: str) -> np.ndarray:
    """The STAPLE consensus, ``(*spatial)`` bool: :func:`staple_probability` >= 0.5."""
    return staple_probability(case, task) >= 0.5


def _rater_masks(case: Case, task: str, needed_by: str) -> np.ndarray:
    if task in case.masks:
        return case.masks[task]
    if task in case.agreement:
        raise SoftsegError(
            f"{case.case_id}: task {task!r} has only an agreement map, no individual rater "
            f"masks; {needed_by} needs rater-folder or QUBIQ data"
        )
    raise _unlabelled(case, task)


def random_rater_label(case: Case, task: str, rng: np.random.Generator) -> np.ndarray:
    """One rater's mask chosen uniformly with ``rng``; ``(*spatial)`` bool (a copy).

    Raises SoftsegError for agreement-map data (no individual raters) or unlabelled cases.
    """
    masks = _rater_masks(case, task, "the random-rater baseline")
    return masks[int(rng.integers(masks.shape[0]))].copy()


# ----------------------------------------------------------------------------- multi-class


def rater_class_maps(case: Case, classes: tuple[str, ...]) -> np.ndarray:
    """The raters' class maps ``(R, *spatial)`` uint8 (values 0..C-1) of a multi-class case,
    rebuilt from its per-class masks (:func:`softseg.data._reading.class_masks`)."""
    masks = [_rater_masks(case, name, "multi-class labels") for name in classes[1:]]
    maps = np.zeros(masks[0].shape, np.uint8)
    for value, mask in enumerate(masks, start=1):
        maps[mask] = value
    return maps


def _class_counts(case: Case, classes: tuple[str, ...]) -> np.ndarray:
    """``(C, *spatial)`` int64: how many of the case's raters put each pixel in each class."""
    fg = np.stack([_rater_masks(case, n, "multi-class labels").sum(axis=0, dtype=np.int64) for n in classes[1:]])
    return np.concatenate([case.n_raters[classes[1]] - fg.sum(axis=0, keepdims=True), fg])


def class_distribution(case: Case, classes: tuple[str, ...]) -> np.ndarray:
    """The multi-class soft label ``(C, *spatial)`` float32: per pixel, the fraction k/A of
    the case's A raters that chose each class (class i = ``classes[i]``, background first).
    Each value is the float32 nearest k/A, so the classes sum to 1 within float32 rounding."""
    counts = _class_counts(case, classes)
    return (counts / case.n_raters[classes[1]]).astype(np.float32)


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``(*spatial)`` integer labels -> ``(n_classes, *spatial)`` float32 one-hot."""
    return (np.arange(n_classes).reshape(-1, *([1] * labels.ndim)) == labels[None]).astype(np.float32)


def majority_classes(case: Case, classes: tuple[str, ...]) -> np.ndarray:
    """The multi-class majority vote, one-hot ``(C, *spatial)`` float32: per pixel the class
    most raters chose (the mode); a tie goes to the lower class value, as argmax breaks
    ties, so two raters each for rim (1) and cup (2) give rim. (The binary majority vote
    breaks a tie towards foreground, as thresholding the soft label at 0.5 does.)"""
    return one_hot(np.argmax(_class_counts(case, classes), axis=0), len(classes))


def staple_classes(case: Case, classes: tuple[str, ...]) -> np.ndarray:
    """Multi-label STAPLE (Rohlfing et al. 2004; SimpleITK's ``MultiLabelSTAPLEImageFilter``
    with its default priors and iterations) over the raters' class maps, one-hot
    ``(C, *spatial)`` float32. Pixels it leaves undecided take the majority vote."""
    import SimpleITK as sitk

    maps = rater_class_maps(case, classes)
    undecided = 255
    staple = sitk.MultiLabelSTAPLEImageFilter()
    staple.SetLabelForUndecidedPixels(undecided)
    labels = sitk.GetArrayFromImage(staple.Execute([sitk.GetImageFromArray(m) for m in maps]))
    fallback = np.argmax(_class_counts(case, classes), axis=0)
    labels = np.where(labels == undecided, fallback, labels)
    return one_hot(labels, len(classes))


def random_rater_classes(case: Case, classes: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
    """One rater's class map, chosen uniformly with ``rng``, one-hot ``(C, *spatial)`` float32."""
    maps = rater_class_maps(case, classes)
    return one_hot(maps[int(rng.integers(maps.shape[0]))], len(classes))


def write_soft_labels(
    dataset: Dataset, out: str | Path, *, variance: bool = False, overwrite: bool = False
) -> list[Path]:
    """Write the soft label (and optionally its variance) of every labelled case and task.

    Files: ``OUT/<case_id>/<task>.<ext>`` and ``OUT/<case_id>/<task>_variance.<ext>`` (for
    multi-class data one file per class, background included, named by the class), where
    ``<ext>`` follows the source image: float32 ``.nii.gz`` with the image's affine and
    header, or 16-bit grey ``.png`` with value ``round(p * 65535)``. Unlabelled cases are
    skipped. Refuses a non-empty OUT unless ``overwrite`` (then files of the same names are
    replaced). Returns the written paths.
    """
    out = prepare_out_dir(out, overwrite=overwrite, resume=None, what="labels", option="OUT")
    written: list[Path] = []
    for case in tqdm(dataset.cases, desc="soft labels", unit="case", disable=None):
        suffix = io.map_suffix(case.geometry)
        for task, p in _soft_maps(dataset, case):
            folder = out / case.case_id
            written.append(io.write_map(folder / f"{task}{suffix}", p, case.geometry, overwrite=overwrite))
            if variance:
                written.append(
                    io.write_map(folder / f"{task}_variance{suffix}", soft_variance(p),
                                 case.geometry, overwrite=overwrite)
                )
    return written


def _soft_maps(dataset: Dataset, case: Case):
    """``(name, soft label)`` of a case: per task, or per class for multi-class data."""
    if dataset.classes:
        if not case.masks:
            log.info("%s: no label; skipped", case.case_id)
            return []
        return list(zip(dataset.classes, class_distribution(case, dataset.classes)))
    maps = []
    for task in dataset.tasks:
        if not case.is_labelled(task):
            log.info("%s: no label for %s; skipped", case.case_id, task)
            continue
        maps.append((task, soft_label(case, task)))
    return maps
