"""Model input preparation, shared by training and inference: the one place that defines it.

An image becomes a model input the same way in training, validation and prediction:
per-image, per-channel z-score (:func:`normalize`), the run's resampling to a voxel spacing
if it has one (:func:`to_spacing`; undone on the outputs by :func:`resample`), the run's
resize if it was trained with one (:func:`resize_input`), zero-padding at the end of each spatial axis to a multiple of 32
(:func:`pad_to_multiple`; the U-Net downsamples 5 times), and cropping the logits back.
Tensors are torch, channels first: ``(C, H, W)`` for one image, ``(N, C, H, W)`` for a batch.

A volume ``(C, X, Y, Z)`` is z-scored as a whole (so every slice of it keeps the volume's
intensity scale), then cut into 2D slices along the run's ``slice_axis``
(:func:`volume_slices`); each slice is then an image as above, and the slices' outputs are
stacked back in place (:func:`stack_slices`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from softseg.model.config import TrainConfig
from softseg.model.runtime import autocast, memory_format

MULTIPLE = 32  # the U-Net downsamples 5 times


def normalize(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel z-score of a ``(C, *spatial)`` image -> float32 tensor.

    Each channel gets mean 0 and standard deviation 1; a constant channel becomes all zeros
    (its std is 0, so it carries no information to scale).
    """
    x = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    x = x.to(torch.float32)
    dims = tuple(range(1, x.ndim))
    mean = x.mean(dim=dims, keepdim=True, dtype=torch.float64).to(torch.float32)
    std = x.to(torch.float64).std(dim=dims, keepdim=True, unbiased=False).to(torch.float32)
    return (x - mean) / torch.where(std > 1e-8, std, torch.ones_like(std))


def volume_slices(volume: torch.Tensor, axis: int) -> list[torch.Tensor]:
    """The 2D slices ``(C, H, W)`` of a ``(C, X, Y, Z)`` volume along spatial ``axis`` (0-2),
    in order; H and W are the other two spatial axes in their order."""
    return list(torch.movedim(volume, axis + 1, 0).unbind(0))


def stack_slices(slices: list[torch.Tensor], axis: int) -> torch.Tensor:
    """The inverse of :func:`volume_slices`: ``(T, H, W)`` slices -> ``(T, X, Y, Z)``."""
    return torch.movedim(torch.stack(slices), 0, axis + 1)


def resize(x: torch.Tensor, size: tuple[int, int], *, clamp01: bool = False) -> torch.Tensor:
    """Bilinear resize of ``(C, H, W)`` or ``(N, C, H, W)`` to ``size`` = (H', W').

    Antialiased when shrinking (the filter weights are non-negative and sum to 1, so soft
    labels stay in [0, 1]; ``clamp01`` removes rounding excursions). Used identically for
    images and labels, and to undo a resize on predictions.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    batched = x.ndim == 4
    y = x if batched else x[None]
    shrink = size[0] < y.shape[-2] or size[1] < y.shape[-1]
    y = F.interpolate(y.float(), size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink)
    if clamp01:
        y = y.clamp_(0.0, 1.0)
    return y if batched else y[0]


def resampled_shape(shape, spacing, target) -> tuple[int, ...]:
    """The grid of ``shape`` voxels of ``spacing`` mm resampled to ``target`` mm (at least 1)."""
    return tuple(max(1, round(int(n) * float(s) / float(t))) for n, s, t in zip(shape, spacing, target))


def resample(x: torch.Tensor, shape: tuple[int, ...], *, clamp01: bool = False) -> torch.Tensor:
    """Linear resampling (bilinear in 2D, trilinear in 3D, align_corners=False: voxel centres
    keep their physical place) of ``(C, *spatial)`` to ``shape``, for images, soft labels and,
    back onto the source grid, predictions alike. ``clamp01`` removes rounding excursions."""
    if tuple(x.shape[1:]) == tuple(shape):
        return x
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    y = F.interpolate(x[None].float(), size=tuple(shape), mode=mode, align_corners=False)[0]
    return y.clamp_(0.0, 1.0) if clamp01 else y


def to_spacing(x: torch.Tensor, spacing, config: TrainConfig, *, clamp01: bool = False) -> torch.Tensor:
    """``(C, *spatial)`` of voxel ``spacing`` resampled to the run's ``spacing`` (unchanged
    when the run has none)."""
    if not config.spacing:
        return x
    return resample(x, resampled_shape(x.shape[1:], spacing, config.spacing), clamp01=clamp01)


def padded_size(n: int, multiple: int = MULTIPLE) -> int:
    """``n`` rounded up to a multiple of ``multiple``."""
    return -(-n // multiple) * multiple


def pad_to_multiple(x: torch.Tensor, multiple: int = MULTIPLE) -> torch.Tensor:
    """Zero-pad the last two axes at their ends up to multiples of ``multiple``.

    Crop back with ``y[..., :H, :W]``: every original pixel keeps its position.
    """
    h, w = x.shape[-2:]
    return F.pad(x, (0, padded_size(w, multiple) - w, 0, padded_size(h, multiple) - h))


def resize_input(x: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """A normalised ``(C, H, W)`` image resized as the run was trained (unchanged without a resize)."""
    if config.resize is not None:
        x = resize(x, (config.resize, config.resize))
    return x


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module, image: torch.Tensor, precision: str, device: torch.device
) -> torch.Tensor:
    """Logits ``(T, H, W)`` float32 on ``device`` for one prepared ``(C, H, W)`` image.

    The image is padded to a multiple of 32 and the logits cropped back to ``(H, W)``.
    """
    return predict_logits_batch(model, image[None], precision, device)[0]


@torch.no_grad()
def predict_logits_batch(
    model: torch.nn.Module, images: torch.Tensor, precision: str, device: torch.device
) -> torch.Tensor:
    """Logits ``(N, T, H, W)`` float32 on ``device`` for prepared ``(N, C, H, W)`` images,
    in one forward pass (padded to a multiple of 32, cropped back)."""
    h, w = images.shape[-2:]
    x = pad_to_multiple(images.to(device)).contiguous(memory_format=memory_format(precision, device))
    with autocast(precision, device):
        logits = model(x)
    return logits[:, :, :h, :w].float()


# Sliding-window prediction of the 3D mode (MONAI's sliding_window_inference): windows of the
# training patch overlapping by half (nnU-Net's step size), blended with a Gaussian importance
# map (sigma 1/8 of the window, nnU-Net's and MONAI's default) so that window borders, where a
# convolution sees the least context, count least.
SLIDING_OVERLAP = 0.5
SLIDING_SIGMA = 0.125


# Windows per forward pass. On a CPU a pass has a large fixed cost: one window of 32x32x16 took
# 0.23 s, eight in one pass 0.51 s (base 8 filters, one thread, fp32 on AVX2).
SLIDING_BATCH = 4


@torch.no_grad()
def predict_logits_volume(
    model: torch.nn.Module, volume: torch.Tensor, patch: tuple[int, ...], precision: str,
    device: torch.device,
) -> torch.Tensor:
    """Logits ``(T, X, Y, Z)`` float32 on the CPU for one normalised ``(C, X, Y, Z)`` volume,
    by sliding ``patch`` windows over it (see :data:`SLIDING_OVERLAP`), :data:`SLIDING_BATCH`
    at a time. The stitched output is kept on the CPU, so device memory holds the windows, not
    the volume. A volume smaller
    than the window on some axis is padded for the pass and cropped back (MONAI does both)."""
    from monai.inferers import sliding_window_inference

    def forward(x: torch.Tensor) -> torch.Tensor:
        with autocast(precision, device):
            return model(x).float()

    logits = sliding_window_inference(
        volume[None].float(), roi_size=tuple(patch), sw_batch_size=SLIDING_BATCH,
        predictor=forward, overlap=SLIDING_OVERLAP, mode="gaussian", sigma_scale=SLIDING_SIGMA,
        sw_device=device, device=torch.device("cpu"), progress=False,
    )
    return torch.as_tensor(logits)[0].float()
