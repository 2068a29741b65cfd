"""Random crops, joint image + soft-label augmentation and the growing batch.

Tensors are torch, channels first: one image is ``(C, H, W)``, a batch ``(N, C, H, W)``;
soft labels are ``(T, H, W)`` / ``(N, T, H, W)`` float32 in [0, 1] (one channel per task).
Spatial axes keep the on-disk order; "horizontal" flip reverses the last axis, "vertical"
flip the second-to-last.

Augmentation follows SPEC.md step 5 (translation, then rotation, then zoom, composed into
one affine map, then flips) where SPEC.md is silent on the rest: the originals of the growing
batch are plain random crops; each augmented copy is its own random window of the whole
normalised image, warped about the window's centre by one ``grid_sample`` call for image and
label together (on the model's device), with reflection beyond the image border. So copies
are independent of each other and of the original's window, translation moves real image
content into view, and no constant fill appears. See :func:`augmented_crops`.
"""

from __future__ import annotations

import math
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F


class AugmentSettings(Protocol):
    """The fields of :class:`softseg.model.config.TrainConfig` augmentation reads."""

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


def _draw_windows(
    shapes: Sequence[tuple[int, int]], size: int, generator: torch.Generator
) -> torch.Tensor:
    """``(n, 2)`` float64 top-left corners (row, column) of random ``size`` windows, one per
    ``(H, W)`` shape; an axis shorter than ``size`` gets the centred window (starting < 0)."""
    u = torch.rand(len(shapes), 2, generator=generator, dtype=torch.float64)
    corners = torch.empty(len(shapes), 2, dtype=torch.float64)
    for k, shape in enumerate(shapes):
        for axis, side in enumerate(shape):
            if side >= size:
                # integer offsets, uniform over the side - size + 1 positions
                corners[k, axis] = torch.floor(u[k, axis] * (side - size + 1)).clamp(max=side - size)
            else:
                corners[k, axis] = -((size - side) // 2)
    return corners


def copy_transforms(
    shapes: Sequence[tuple[int, int]], size: int, settings: AugmentSettings, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """The random numbers of :func:`augmented_crops`, drawn on the CPU from ``generator`` so
    results do not depend on the device. Per copy, float64 ``(n,)`` each: the window corner
    ``top``/``left`` (pixels), the translation ``tx``/``ty`` (pixels, uniform in +-translate of
    the source image's width/height), ``angle`` (radians, uniform in +-rotate) and ``scale``
    (uniform in [1 - zoom, 1 + zoom]); ``hflip``/``vflip`` bool."""
    corners = _draw_windows(shapes, size, generator)
    # Always draw the same random numbers, so switching one augmentation off does not
    # reshuffle the others.
    u = torch.rand(len(shapes), 4, generator=generator, dtype=torch.float64) * 2 - 1
    flips = torch.rand(len(shapes), 2, generator=generator)
    heights = torch.tensor([h for h, _ in shapes], dtype=torch.float64)
    widths = torch.tensor([w for _, w in shapes], dtype=torch.float64)
    return {
        "top": corners[:, 0], "left": corners[:, 1],
        "tx": u[:, 0] * settings.translate * widths, "ty": u[:, 1] * settings.translate * heights,
        "angle": u[:, 2] * math.radians(settings.rotate), "scale": 1 + u[:, 3] * settings.zoom,
        "hflip": flips[:, 0] < settings.hflip, "vflip": flips[:, 1] < settings.vflip,
    }


def sampling_grid(
    shape: tuple[int, int], size: int, top: float, left: float, tx: float, ty: float, angle: float,
    scale: float,
) -> torch.Tensor:
    """``(size, size, 2)`` float32 ``grid_sample`` coordinates (align_corners=False) of one copy.

    The forward map of a point p (pixels from the window centre) is ``s * R(a) @ (p + t)``, so
    output pixel o samples the source at ``window centre + R(-a) o / s - t``.
    """
    h, w = shape
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    oy, ox = torch.meshgrid(offsets, offsets, indexing="ij")
    cos, sin = math.cos(angle), math.sin(angle)
    px = (cos * ox + sin * oy) / scale - tx
    py = (-sin * ox + cos * oy) / scale - ty
    x = left + (size - 1) / 2 + px
    y = top + (size - 1) / 2 + py
    return torch.stack([(2 * x + 1) / w - 1, (2 * y + 1) / h - 1], dim=-1).float()


def augmented_crops(
    images: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    size: int,
    settings: AugmentSettings,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented ``size x size`` copy of each ``(C, H, W)`` image and ``(T, H, W)`` soft label.

    Each copy has its own random window and its own translate -> rotate -> zoom about the
    window's centre, sampled from the whole normalised image, so the content that
    translation and rotation bring into the window is the image's own; only beyond the image
    border does anything get filled, by reflection (never a constant wedge, which after
    z-scoring would be a mid-grey block with straight edges). Then the flips. Image and label
    share the sampling grid, so they stay aligned by construction; labels are resampled
    bilinearly, never re-thresholded, and clamped to [0, 1] against rounding. Returns
    ``(N, C, s, s)`` and ``(N, T, s, s)`` float tensors on the inputs' device.
    """
    shapes = [tuple(int(v) for v in image.shape[-2:]) for image in images]
    draw = copy_transforms(shapes, size, settings, generator)
    warp = settings.translate > 0 or settings.rotate > 0 or settings.zoom > 0
    channels = images[0].shape[0]
    out: list[torch.Tensor | None] = [None] * len(images)
    groups: dict[tuple[int, int], list[int]] = {}
    for k, shape in enumerate(shapes):
        groups.setdefault(shape, []).append(k)
    for shape, members in groups.items():
        both = torch.stack([torch.cat([images[k].float(), labels[k].float()]) for k in members])
        if warp or min(shape) < size:
            grids = torch.stack([
                sampling_grid(shape, size, *(float(draw[key][k]) for key in
                                             ("top", "left", "tx", "ty", "angle", "scale")))
                for k in members
            ]).to(both.device)
            both = F.grid_sample(both, grids, mode="bilinear", padding_mode="reflection",
                                 align_corners=False)
        else:  # no warp: a plain window, exact
            both = torch.stack([
                both[i, :, int(draw["top"][k]):int(draw["top"][k]) + size,
                     int(draw["left"][k]):int(draw["left"][k]) + size]
                for i, k in enumerate(members)
            ])
        for i, k in enumerate(members):
            out[k] = both[i]
    stacked = torch.stack(out)
    device = stacked.device
    hflip = draw["hflip"].to(device)[:, None, None, None]
    vflip = draw["vflip"].to(device)[:, None, None, None]
    stacked = torch.where(hflip, stacked.flip(-1), stacked)
    stacked = torch.where(vflip, stacked.flip(-2), stacked)
    return stacked[:, :channels].to(images[0].dtype), stacked[:, channels:].clamp_(0.0, 1.0)


def growing_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    sources: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]],
    copies: int,
    settings: AugmentSettings,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The growing batch (Fort et al. 2021): the B original crops ``images``/``labels``, then
    ``copies`` augmented copies of each case drawn from ``sources`` (the B whole images and
    targets the crops came from, on the model's device) by :func:`augmented_crops`, or for
    3D patches ``(B, C, X, Y, Z)`` by :func:`softseg.training.augment3d.augmented_patches`:
    ``(B * (1 + copies), ...)``. Row ``k * B + i`` (k >= 1) is a copy of case i."""
    if copies == 0:
        return images, labels
    source_images, source_labels = sources
    if images.ndim == 5:
        from softseg.training.augment3d import augmented_patches

        aug_i, aug_l = augmented_patches(list(source_images) * copies, list(source_labels) * copies,
                                         tuple(images.shape[2:]), settings, generator)
    else:
        aug_i, aug_l = augmented_crops(
            list(source_images) * copies, list(source_labels) * copies, images.shape[-1], settings, generator
        )
    return torch.cat([images, aug_i.to(images.dtype)]), torch.cat([labels.float(), aug_l])
