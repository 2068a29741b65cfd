"""The 3D mode's patches and augmentation: :mod:`softseg.training.augment` for volumes.

Tensors are channels first: a volume ``(C, X, Y, Z)`` in the on-disk axis order, its soft
label ``(T, X, Y, Z)``, a batch of patches ``(N, C, *patch)``. ``axis`` is the through-plane
axis (the run's ``slice_axis``); the other two are the in-plane axes, in order: "vertical"
flip reverses the first of them and "horizontal" the second, as for a 2D slice ``(H, W)``
of :func:`softseg.model.preprocess.volume_slices`.

The originals of the growing batch are random patches (:func:`random_patches`), a third of
them centred on a labelled voxel (nnU-Net's foreground oversampling: a small structure
would otherwise rarely be in a patch). Each augmented copy is, as in 2D, its own random
window of the whole normalised volume, translated (a fraction of the volume's side, every
axis), rotated about the through-plane axis and zoomed (the same factor on every axis) about
the window's centre in millimetres, so anisotropic voxels are rotated as the anatomy is, then
flipped in-plane; one trilinear ``grid_sample`` for image and label together, reflection
beyond the border, labels clamped to [0, 1] and never re-thresholded.
"""

from __future__ import annotations

import math
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F

from softseg.model.modes import in_plane_axes

FOREGROUND_FRACTION = 1 / 3  # nnU-Net's share of patches forced onto foreground


class Augment3dSettings(Protocol):
    translate: float
    rotate: float
    zoom: float
    hflip: float
    vflip: float
    slice_axis: int | None
    voxel_spacing: tuple[float, ...]


def foreground_voxels(label: torch.Tensor) -> torch.Tensor:
    """``(n, 3)`` int64 coordinates of the voxels any rater marked in any task of ``label``."""
    return torch.nonzero(label.amax(dim=0) > 0)


def _corners(shapes: Sequence[Sequence[int]], patch: Sequence[int], foreground: Sequence[torch.Tensor],
             generator: torch.Generator) -> torch.Tensor:
    """``(n, 3)`` int64 patch corners: uniform, or (a third, where there is foreground)
    around a random labelled voxel, kept inside the volume."""
    u = torch.rand(len(shapes), 5, generator=generator, dtype=torch.float64)
    corners = torch.empty(len(shapes), 3, dtype=torch.int64)
    for k, shape in enumerate(shapes):
        room = [int(s) - p for s, p in zip(shape, patch)]
        fg = foreground[k] if k < len(foreground) else None
        if fg is not None and len(fg) and u[k, 3] < FOREGROUND_FRACTION:
            centre = fg[min(len(fg) - 1, int(u[k, 4] * len(fg)))]
            corners[k] = torch.tensor([min(max(0, int(c) - p // 2), r) for c, p, r in zip(centre, patch, room)])
        else:
            corners[k] = torch.tensor([min(int(u[k, a] * (room[a] + 1)), room[a]) for a in range(3)])
    return corners


def random_patches(
    images: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], patch: Sequence[int],
    generator: torch.Generator, foreground: Sequence[torch.Tensor] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random ``patch`` window of each ``(C, X, Y, Z)`` volume and its label, stacked:
    ``(N, C, *patch)`` and ``(N, T, *patch)``. ``foreground[i]`` (from :func:`foreground_voxels`)
    enables the oversampling; every volume must be at least ``patch`` on every axis."""
    corners = _corners([x.shape[1:] for x in images], patch, foreground, generator)
    out_i, out_l = [], []
    for image, label, corner in zip(images, labels, corners.tolist()):
        window = (slice(None),) + tuple(slice(c, c + p) for c, p in zip(corner, patch))
        out_i.append(image[window])
        out_l.append(label[window])
    return torch.stack(out_i), torch.stack(out_l)


def patch_transforms(shapes: Sequence[Sequence[int]], patch: Sequence[int], settings: Augment3dSettings,
                     generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The random numbers of :func:`augmented_patches`, drawn on the CPU: per copy the
    window ``corner`` (voxels, float64 ``(n, 3)``), ``shift`` (voxels, uniform in
    +-translate of each side, ``(n, 3)``), ``angle`` (radians), ``scale``, and ``vflip`` /
    ``hflip`` (bool)."""
    n = len(shapes)
    u = torch.rand(n, 3, generator=generator, dtype=torch.float64)
    sides = torch.tensor([[float(s) for s in shape] for shape in shapes], dtype=torch.float64).reshape(n, 3)
    size = torch.tensor([float(p) for p in patch], dtype=torch.float64)
    room = sides - size
    corner = torch.where(room >= 0, torch.floor(u * (room + 1)).clamp(max=room.clamp(min=0)), room / 2)
    v = torch.rand(n, 5, generator=generator, dtype=torch.float64) * 2 - 1
    flips = torch.rand(n, 2, generator=generator)
    return {
        "corner": corner, "shift": v[:, :3] * settings.translate * sides,
        "angle": v[:, 3] * math.radians(settings.rotate), "scale": 1 + v[:, 4] * settings.zoom,
        "vflip": flips[:, 0] < settings.vflip, "hflip": flips[:, 1] < settings.hflip,
    }


def sampling_grid_3d(shape: Sequence[int], patch: Sequence[int], corner: Sequence[float],
                     shift: Sequence[float], angle: float, scale: float, axis: int,
                     spacing: Sequence[float]) -> torch.Tensor:
    """``(*patch, 3)`` float32 ``grid_sample`` coordinates (align_corners=False) of one copy.

    An output voxel at offset o (voxels, from the window centre) samples the source at
    ``window centre + D^-1 R(-angle) D o / scale - shift``, with D the voxel spacing (mm) and R
    the rotation in the in-plane axes' plane."""
    offsets = [torch.arange(p, dtype=torch.float64) - (p - 1) / 2 for p in patch]
    grids = torch.meshgrid(*offsets, indexing="ij")
    mm = [g * s for g, s in zip(grids, spacing)]
    first, second = in_plane_axes(axis)
    cos, sin = math.cos(angle), math.sin(angle)
    rotated = list(mm)
    rotated[first] = cos * mm[first] + sin * mm[second]
    rotated[second] = -sin * mm[first] + cos * mm[second]
    source = [corner[a] + (patch[a] - 1) / 2 + rotated[a] / spacing[a] / scale - shift[a] for a in range(3)]
    normalised = [(2 * source[a] + 1) / shape[a] - 1 for a in range(3)]
    # grid_sample's last axis lists (x, y, z) = the input's last, middle, first spatial axis
    return torch.stack(normalised[::-1], dim=-1).float()


def augmented_patches(images: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], patch: Sequence[int],
                      settings: Augment3dSettings, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented ``patch`` copy of each ``(C, X, Y, Z)`` volume and ``(T, X, Y, Z)`` soft
    label (see the module doc): ``(N, C, *patch)`` and ``(N, T, *patch)`` on the inputs' device."""
    patch = [int(p) for p in patch]
    shapes = [[int(s) for s in image.shape[1:]] for image in images]
    draw = patch_transforms(shapes, patch, settings, generator)
    spacing = settings.voxel_spacing or (1.0, 1.0, 1.0)
    axis = settings.slice_axis if settings.slice_axis is not None else 2
    channels = images[0].shape[0]
    out = []
    for k, (image, label) in enumerate(zip(images, labels)):
        both = torch.cat([image.float(), label.float()])[None]
        grid = sampling_grid_3d(shapes[k], patch, draw["corner"][k].tolist(), draw["shift"][k].tolist(),
                                float(draw["angle"][k]), float(draw["scale"][k]), axis, spacing)
        out.append(F.grid_sample(both, grid[None].to(both.device), mode="bilinear",
                                 padding_mode="reflection", align_corners=False)[0])
    stacked = torch.stack(out)
    first, second = in_plane_axes(axis)
    vflip = draw["vflip"].to(stacked.device)[:, None, None, None, None]
    hflip = draw["hflip"].to(stacked.device)[:, None, None, None, None]
    stacked = torch.where(vflip, stacked.flip(first + 2), stacked)
    stacked = torch.where(hflip, stacked.flip(second + 2), stacked)
    return stacked[:, :channels].to(images[0].dtype), stacked[:, channels:].clamp_(0.0, 1.0)
