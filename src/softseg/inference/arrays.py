"""Image arrays -> probability maps with one or more loaded runs (an ensemble of seeds).

Each image goes through exactly the steps of training: per-channel z-score, the run's
resize (if it was trained with one), zero-padding to a multiple of 32; then the model, a
sigmoid, cropping back and undoing the resize, so every pixel of the source grid gets a
probability. Runs are averaged in probability space.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from softseg.training.runtime import autocast, memory_format, resolve_precision
from softseg.training.config import TrainConfig
from softseg.errors import SoftsegError
from softseg.inference.runs import LoadedRun, check_runs_compatible
from softseg.training.augment import normalize, pad_to_multiple, padded_size, resize


def prepare_image(image: np.ndarray | torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """``(C, H, W)`` raw image -> ``(C, H', W')`` float32 normalised (and resized) model input."""
    return resize_input(normalize(image), config)


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


# On a CPU, a forward pass holds at most this many input pixels, which bounds the memory of
# its activations whatever --batch-size asks. Measured with the paper's model in bf16 (freed
# memory kept, see _train_runtime.keep_freed_memory): four 480x480 images in one pass were 6%
# faster per image than one at a time, larger passes no faster; at 256x256 passes of 4 to 32
# images ran alike.
CPU_BATCH_PIXELS = 2**20


def _split_passes(groups, prepared: list[torch.Tensor], device: torch.device) -> list[list[int]]:
    """Split groups of same-shaped image indices into forward passes; on a CPU each pass
    holds at most :data:`CPU_BATCH_PIXELS` padded pixels (but always at least one image)."""
    passes = []
    for indices in groups:
        if device.type != "cpu":
            passes.append(list(indices))
            continue
        h, w = prepared[indices[0]].shape[-2:]
        per_pass = max(1, CPU_BATCH_PIXELS // (padded_size(h) * padded_size(w)))
        passes.extend(list(indices[i : i + per_pass]) for i in range(0, len(indices), per_pass))
    return passes


def predict_images(
    loaded_runs: Sequence[LoadedRun], images: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """Probability maps ``(T, H, W)`` float32 in [0, 1] for ``(C, H, W)`` images.

    ``T`` follows the runs' ``tasks`` order. All runs must share tasks and input channels;
    their probabilities are averaged. Only 2D images are supported.
    """
    runs = list(loaded_runs)
    check_runs_compatible(runs)
    first = runs[0]
    images = [np.asarray(image) for image in images]
    for index, image in enumerate(images):
        if image.ndim != 3:
            raise SoftsegError(
                f"image {index}: expected a 2D image (C, H, W), found shape {image.shape}; "
                f"3D volumes must be predicted slice by slice"
            )
        if image.shape[0] != first.config.in_channels:
            raise SoftsegError(
                f"image {index}: expected {first.config.in_channels} channel(s) as in training, "
                f"found {image.shape[0]} (shape {image.shape})"
            )
    totals: list[torch.Tensor | None] = [None] * len(images)
    normalized = [normalize(image) for image in images]  # the same for every run
    for run in runs:
        precision = resolve_precision(run.config.precision, run.device)
        prepared = [resize_input(x, run.config) for x in normalized]
        # Images of one model-input shape share a forward pass; the caller bounds how many
        # images come at once (predict's --batch-size).
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, x in enumerate(prepared):
            groups.setdefault(tuple(x.shape), []).append(index)
        for indices in _split_passes(groups.values(), prepared, run.device):
            batch = torch.stack([prepared[i] for i in indices])
            probs = torch.sigmoid(predict_logits_batch(run.model, batch, precision, run.device)).cpu()
            for i, prob in zip(indices, probs):
                prob = resize(prob, tuple(images[i].shape[1:]), clamp01=True)
                totals[i] = prob if totals[i] is None else totals[i] + prob
    return [(total / len(runs)).numpy().astype(np.float32) for total in totals]
