"""The 3D mode's network: MONAI's DynUNet, planned from the patch and the voxel spacing as
nnU-Net plans its 3D U-Net (Isensee et al. 2021), and the patch planned from the data.

Planning (:func:`plan_network`), in nnU-Net's way: at every level, an axis whose spacing is
at most twice the finest spacing is downsampled (stride 2) while its feature map still has
at least 8 voxels, and gets 3-voxel kernels; a coarser axis keeps stride 1 and gets 1-voxel
kernels until the others catch up, so an anisotropic CT (0.8 x 0.8 x 2.5 mm) is first
downsampled in-plane only. At most :data:`MAX_DOWNSAMPLINGS` levels. The patch must be a
multiple of the product of each axis's strides (its *divisor*).

Patch planning (:func:`plan_patch`), where no ``patch_size`` is given: start from the
training volumes' median shape, shrink the axis of largest physical extent by 10 % until
the patch holds at most :data:`PATCH_VOXELS` voxels, then round each axis down to a
multiple of its divisor. nnU-Net sizes its patch to a GPU's memory; this budget is sized
for a CPU (docs/training.md gives the memory it takes), so on a GPU give ``--patch-size``.

Filters: ``base_filters`` doubled per level and capped at 10 x base (nnU-Net's 32 ... 320);
instance norm and leaky ReLU (DynUNet's and nnU-Net's defaults); no deep supervision (the
loss is the run's, on the full-resolution output only).
"""

from __future__ import annotations

import math
from typing import Sequence

from torch import nn

from softseg.errors import SoftsegError

MAX_DOWNSAMPLINGS = 5
MIN_FEATURE_MAP = 8  # an axis is downsampled only while its feature map has this many voxels
PATCH_VOXELS = 96 * 96 * 32


def plan_network(patch: Sequence[int], spacing: Sequence[float]) -> tuple[list[list[int]], list[list[int]]]:
    """``(kernels, strides)`` per level for DynUNet (the first stride is 1, the input level)."""
    sizes, spacings = [float(n) for n in patch], [float(s) for s in spacing]
    kernels, strides = [], [[1, 1, 1]]
    while len(strides) <= MAX_DOWNSAMPLINGS:
        finest = min(spacings)
        stride = [2 if s <= 2 * finest and n >= MIN_FEATURE_MAP else 1 for s, n in zip(spacings, sizes)]
        if all(s == 1 for s in stride):
            break
        kernels.append([3 if s <= 2 * finest else 1 for s in spacings])
        strides.append(stride)
        sizes = [n / s for n, s in zip(sizes, stride)]
        spacings = [sp * s for sp, s in zip(spacings, stride)]
    kernels.append([3, 3, 3])  # the bottleneck
    return kernels, strides


def divisor(strides: Sequence[Sequence[int]]) -> list[int]:
    """Per axis, the product of the strides: a patch side must be a multiple of it."""
    return [math.prod(level[axis] for level in strides) for axis in range(3)]


def plan_patch(shapes: Sequence[Sequence[int]], spacing: Sequence[float]) -> tuple[int, ...]:
    """A patch for volumes of ``shapes`` (voxels) at ``spacing`` (mm); see the module doc."""
    median = [sorted(int(s[a]) for s in shapes)[len(shapes) // 2] for a in range(3)]
    patch = [float(n) for n in median]
    while math.prod(patch) > PATCH_VOXELS:
        axis = max(range(3), key=lambda a: (patch[a] * spacing[a], patch[a]))
        patch[axis] *= 0.9
    patch = [max(MIN_FEATURE_MAP, int(n)) for n in patch]
    _, strides = plan_network(patch, spacing)
    div = divisor(strides)
    return tuple(max(d, n // d * d) for n, d in zip(patch, div))


def check_patch(patch: Sequence[int], spacing: Sequence[float]) -> None:
    """Raise SoftsegError when ``patch`` is too small to downsample twice, or not a multiple
    of its network's divisor."""
    _, strides = plan_network(patch, spacing)
    if len(strides) < 3:  # DynUNet needs an input level and two downsamplings
        raise SoftsegError(
            f"patch_size {tuple(patch)}: too small for a U-Net at spacing "
            f"{tuple(round(s, 3) for s in spacing)} mm: it must downsample at least twice, which "
            f"needs {2 * MIN_FEATURE_MAP} voxels on the finely spaced axes; give a larger --patch-size"
        )
    div = divisor(strides)
    if any(n % d for n, d in zip(patch, div)):
        fixed = tuple(max(d, round(n / d) * d) for n, d in zip(patch, div))
        raise SoftsegError(
            f"patch_size {tuple(patch)}: expected multiples of {tuple(div)} per axis (the 3D U-Net "
            f"planned for spacing {tuple(round(s, 3) for s in spacing)} mm downsamples by that much); "
            f"use e.g. --patch-size {' '.join(map(str, fixed))}"
        )


def create_model_3d(in_channels: int, n_tasks: int, patch: Sequence[int], spacing: Sequence[float],
                    base_filters: int = 32) -> nn.Module:
    """A DynUNet taking ``(N, in_channels, *patch)`` to ``(N, n_tasks, *patch)`` logits
    (any input whose sides are multiples of the divisor, e.g. a sliding window)."""
    from monai.networks.nets import DynUNet

    check_patch(patch, spacing)
    kernels, strides = plan_network(patch, spacing)
    filters = [min(base_filters * 2**level, 10 * base_filters) for level in range(len(strides))]
    return DynUNet(
        spatial_dims=3, in_channels=in_channels, out_channels=n_tasks, kernel_size=kernels,
        strides=strides, upsample_kernel_size=strides[1:], filters=filters,
        norm_name="instance", deep_supervision=False, res_block=False,
    )
