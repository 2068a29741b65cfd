"""Training data in memory: checked, normalised, resized once; batches are crops of it.

Everything a step needs is pre-computed here (z-scored images, soft or hard labels, rater
masks for the random-rater baseline), so a step costs one slice per sample: no loader
process is needed and data loading stays off the critical path even on 2 cores.
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass
from typing import Sequence

import torch

from softseg.model.config import TrainConfig
from softseg.data.cases import Case, Dataset, channel_problems
from softseg.errors import DatasetError, SoftsegError
from softseg.training.augment import random_crops
from softseg.model.heads import Head, head_of
from softseg.model.modes import mode_of
from softseg.model.preprocess import normalize, resize, resize_input, to_spacing, volume_slices


@dataclass(frozen=True)
class TrainData:
    """Per-sample tensors: a 2D case is one sample, a training volume one per slice (case id
    ``<case>:<k>``), a validation case one whole sample (image or volume), normalised, not
    resized. ``images[i]`` ``(C, H, W)`` float32 normalised (and, for training, resized);
    ``labels[i]`` ``(T, H, W)`` float32 in [0, 1] on the same grid (the training target for
    "soft"/"majority"/"staple"; the soft label for validation); ``raters[i][t]`` ``(R, H, W)`` float32
    rater masks (random-rater mode only); ``source_labels[i]`` the soft label on the source
    grid (validation only, to score on the original pixels). In the 3D mode every sample is a
    whole normalised volume, its targets ``(T, X, Y, Z)`` and ``foreground`` (see
    :func:`softseg.training.augment3d.foreground_voxels`)."""

    case_ids: tuple[str, ...]
    images: tuple[torch.Tensor, ...]
    labels: tuple[torch.Tensor, ...]
    raters: tuple[tuple[torch.Tensor, ...], ...] = ()
    source_labels: tuple[torch.Tensor, ...] = ()
    foreground: tuple[torch.Tensor, ...] = ()  # 3D mode: each volume's labelled voxels (n, 3)
    head: Head | None = None  # the run's output head: how a random-rater sample is drawn


def select_cases(dataset: Dataset, ids: Sequence[str], tasks: Sequence[str], role: str) -> list[Case]:
    """The cases named by ``ids`` (in that order), checked for 2D, channels and labels.

    Raises one DatasetError listing every problem.
    """
    by_id = {c.case_id: c for c in dataset.cases}
    problems = [f"{i}: no such case in {dataset.root}" for i in ids if i not in by_id]
    cases = [by_id[i] for i in ids if i in by_id]
    for case in cases:
        if case.image.ndim not in (3, 4):
            problems.append(
                f"{case.case_id}: image shape {case.image.shape} (channels first): expected a 2D "
                f"image (C, H, W) or a volume (C, X, Y, Z)"
            )
        missing = [t for t in tasks if not case.is_labelled(t)]
        if missing:
            problems.append(f"{case.case_id}: no label for task(s) {', '.join(missing)}; "
                            f"{role} cases need every trained task labelled")
    problems += channel_problems(cases)
    kinds = {case.image.ndim for case in cases} & {3, 4}
    if len(kinds) > 1:
        volumes = [c.case_id for c in cases if c.image.ndim == 4]
        problems.append(
            f"{role} cases mix 2D images and volumes ({len(volumes)} volume(s), e.g. "
            f"{', '.join(volumes[:3])}); train on one kind"
        )
    if problems:
        raise DatasetError(problems, header=f"cannot use these {role} cases")
    return cases


def through_plane_axis(cases: Sequence[Case]) -> int:
    """The spatial axis of largest voxel spacing, the most common over the volumes ``cases``
    (ties: the later axis, the through-plane axis of axial CT/MRI in NIfTI order)."""
    votes = [max(range(3), key=lambda a: (case.spacing[a], a)) for case in cases]
    return max(range(3), key=lambda a: (votes.count(a), a))


def _samples(case: Case, image: torch.Tensor, label: torch.Tensor, masks: list[torch.Tensor],
             config: TrainConfig) -> list[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]]:
    """A 2D case as one sample, a volume as one sample per slice along ``config.slice_axis``."""
    if image.ndim == 3:
        return [(image, label, masks)]
    axis = config.slice_axis
    per_mask = [volume_slices(m, axis) for m in masks]
    return [(x, y, [m[k] for m in per_mask])
            for k, (x, y) in enumerate(zip(volume_slices(image, axis), volume_slices(label, axis)))]


def prepare(cases: Sequence[Case], config: TrainConfig, *, validation: bool = False) -> TrainData:
    """Normalise/resize every case once; labels resized bilinearly exactly like the image.

    A volume is z-scored as a whole and, for training, cut into 2D slices along
    ``config.slice_axis``: every slice is a sample (slices without foreground included, so the
    model sees the anatomy around the structure as often as it occurs). The 3D mode and
    validation keep volumes whole (normalised, not resized): patches are cut per step, and
    validation scores per volume. With a ``spacing`` every image, target and rater mask is
    first resampled to it (validation's soft labels stay on the source grid, to be scored
    there).
    """
    images, targets, raters, source, ids = [], [], [], [], []
    size = (config.resize, config.resize) if config.resize is not None else None
    mode = "soft" if validation else config.label_mode
    head, whole = head_of(config), mode_of(config).whole_training_volumes
    for case in cases:
        label = torch.from_numpy(head.targets(case, config, mode))
        masks = head.rater_masks(case, config) if mode == "random_rater" else []
        if validation:
            source.append(label)
        image = to_spacing(normalize(case.image), case.spacing, config)
        label = to_spacing(label, case.spacing, config, clamp01=True)
        masks = [to_spacing(m, case.spacing, config, clamp01=True) for m in masks]
        # validation scores whole images and volumes, as prediction sees them; a 3D run's
        # training cuts its patches per step
        if validation or (case.image.ndim == 4 and whole):
            images.append(image)
            targets.append(label)
            ids.append(case.case_id)
            if mode == "random_rater":
                raters.append(tuple(masks))
            continue
        samples = _samples(case, image, label, masks, config)
        for k, (image, target, per_task) in enumerate(samples):
            images.append(resize_input(image, config))
            targets.append(resize(target, size, clamp01=True) if size else target)
            ids.append(case.case_id if len(samples) == 1 else f"{case.case_id}:{k}")
            if mode == "random_rater":
                raters.append(tuple(resize(m, size, clamp01=True) if size else m for m in per_task))
    foreground = ()
    if whole and not validation:
        from softseg.training.augment3d import foreground_voxels

        # multi-class: the background channel is not foreground
        foreground = tuple(foreground_voxels(label[head.task_channels()]) for label in targets)
    return TrainData(tuple(ids), tuple(images), tuple(targets), tuple(raters), tuple(source), foreground, head)


def sample_targets(
    data: TrainData, indices: Sequence[int], generator: torch.Generator
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The whole images ``(C, H, W)`` of the cases ``indices`` and their targets ``(T, H, W)``.

    In random-rater mode each sample's target is one rater per task, drawn from that
    case's own raters (a fresh draw every time the case is sampled).
    """
    images, labels = [], []
    for i in indices:
        if data.raters:
            label = data.head.draw_rater(data.raters[i], generator)
        else:
            label = data.labels[i]
        images.append(data.images[i])
        labels.append(label)
    return images, labels


def sample_batch(
    data: TrainData, indices: Sequence[int], crop: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops ``(B, C, crop, crop)`` of :func:`sample_targets` and their targets
    ``(B, T, crop, crop)``."""
    images, labels = sample_targets(data, indices, generator)
    return random_crops(images, labels, crop, generator)


def split_ids(dataset: Dataset, val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Train/validation case ids: the official split where cases carry one (QUBIQ), else a
    seeded random ``val_fraction`` of the cases (at least one when the fraction is > 0)."""
    train = [c.case_id for c in dataset.cases if c.split == "Training"]
    val = [c.case_id for c in dataset.cases if c.split == "Validation"]
    if train and val:
        return train, val
    ids = [c.case_id for c in dataset.cases if c.split != "Testing"]
    if len(ids) < 2 and val_fraction > 0:
        raise SoftsegError(
            f"{dataset.root}: {len(ids)} labelled case(s); need at least 2 to hold one out for "
            f"validation (or set val_fraction: 0)"
        )
    n_val = 0 if val_fraction == 0 else max(1, round(len(ids) * val_fraction))
    shuffled = list(ids)
    _random.Random(seed).shuffle(shuffled)
    held = set(shuffled[:n_val])
    return [i for i in ids if i not in held], [i for i in ids if i in held]
