"""Random crops, joint image + soft-label augmentation and the growing batch.

Tensors are torch, channels first: one image is ``(C, H, W)``, a batch ``(N, C, H, W)``;
soft labels are ``(T, H, W)`` / ``(N, T, H, W)`` float32 in [0, 1] (one channel per task).
Spatial axes keep the on-disk order; "horizontal" flip reverses the last axis, "vertical"
flip the second-to-last.

Augmentation follows SPEC.md step 5 and runs on whole batches on the model's device: one
``grid_sample`` call warps images and labels together (translation, then rotation, then
zoom, composed into one affine map), then flips. Image and label share the sampling grid,
so they stay aligned by construction; labels are resampled bilinearly, never re-thresholded,
and clamped to [0, 1] against rounding. Outside the image is 0 for both: the mean of a
z-scored image, background for the label.
"""

from __future__ import annotations

import math
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F


class AugmentSettings(Protocol):
    """The fields of :class:`softseg.training.config.TrainConfig` augmentation reads."""

    translate: float  # fraction of the side, +- (both axes)
    rotate: float  # degrees, +-
    zoom: float  # fraction, scale in [1 - zoom, 1 + zoom]
    hflip: float  # probability
    vflip: float  # probability


def random_crop(
    image: torch.Tensor, label: torch.Tensor, size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random ``size x size`` window of a ``(C, H, W)`` image and ``(T, H, W)`` label.

    An axis shorter than ``size`` is zero-padded (centred) to ``size`` first.
    """
    h, w = image.shape[-2:]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        image, label = F.pad(image, pad), F.pad(label, pad)
        h, w = image.shape[-2:]
    top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    window = (..., slice(top, top + size), slice(left, left + size))
    return image[window], label[window]


def random_crops(
    images: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop each (image, label) pair with :func:`random_crop` and stack: ``(N, C, s, s)``, ``(N, T, s, s)``."""
    pairs = [random_crop(i, l, size, generator) for i, l in zip(images, labels)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def affine_matrices(
    n: int, height: int, width: int, settings: AugmentSettings, generator: torch.Generator
) -> torch.Tensor:
    """``(n, 2, 3)`` float32 ``affine_grid`` matrices for random translate -> rotate -> zoom.

    The forward map of a point p (pixels from the image centre) is ``s * R(a) @ (p + t)``
    with t uniform in +-translate of each side, a uniform in +-rotate degrees and s uniform
    in [1 - zoom, 1 + zoom]. ``affine_grid`` wants the inverse (output -> input) in
    normalised coordinates ``u = p / (side / 2)``: ``u_in = S^-1 R(-a) S u_out / s - S^-1 t``.
    Drawn on the CPU from ``generator`` so results do not depend on the device.
    """
    u = torch.rand(n, 4, generator=generator, dtype=torch.float64) * 2 - 1
    tx, ty = u[:, 0] * settings.translate * width, u[:, 1] * settings.translate * height
    angle = u[:, 2] * math.radians(settings.rotate)
    scale = 1 + u[:, 3] * settings.zoom
    cos, sin = torch.cos(angle), torch.sin(angle)
    hw, hh = width / 2, height / 2
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    # S^-1 R(-a) S / s, with S = diag(W/2, H/2) and R(-a) = [[cos, sin], [-sin, cos]]
    theta[:, 0, 0] = cos / scale
    theta[:, 0, 1] = sin * hh / hw / scale
    theta[:, 1, 0] = -sin * hw / hh / scale
    theta[:, 1, 1] = cos / scale
    theta[:, 0, 2] = -tx / hw
    theta[:, 1, 2] = -ty / hh
    return theta.float()


def augment_batch(
    images: torch.Tensor, labels: torch.Tensor, settings: AugmentSettings, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment ``(N, C, H, W)`` images and ``(N, T, H, W)`` soft labels identically, per sample.

    Returns new tensors on the input device; labels stay in [0, 1]. See the module docstring.
    """
    n, c, h, w = images.shape
    device = images.device
    warp = settings.translate > 0 or settings.rotate > 0 or settings.zoom > 0
    # Always draw the same random numbers, so switching one augmentation off does not
    # reshuffle the others.
    theta = affine_matrices(n, h, w, settings, generator)
    flips = torch.rand(n, 2, generator=generator)
    if warp:
        both = torch.cat([images.float(), labels.float()], dim=1)
        grid = F.affine_grid(theta.to(device), [n, both.shape[1], h, w], align_corners=False)
        both = F.grid_sample(both, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        images, labels = both[:, :c].to(images.dtype), both[:, c:].clamp_(0.0, 1.0)
    hflip = (flips[:, 0] < settings.hflip).to(device)[:, None, None, None]
    vflip = (flips[:, 1] < settings.vflip).to(device)[:, None, None, None]
    images = torch.where(hflip, images.flip(-1), images)
    labels = torch.where(hflip, labels.flip(-1), labels)
    images = torch.where(vflip, images.flip(-2), images)
    labels = torch.where(vflip, labels.flip(-2), labels)
    return images, labels


def growing_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    copies: int,
    settings: AugmentSettings,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The growing batch (Fort et al. 2021): the B originals, then ``copies`` augmented copies
    of each: ``(B * (1 + copies), ...)``. Row ``k * B + i`` (k >= 1) is a copy of original i."""
    if copies == 0:
        return images, labels
    aug_i, aug_l = augment_batch(
        images.repeat(copies, 1, 1, 1), labels.repeat(copies, 1, 1, 1), settings, generator
    )
    return torch.cat([images, aug_i]), torch.cat([labels.float(), aug_l])
