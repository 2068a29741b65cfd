"""Image arrays -> probability maps with one or more loaded runs (an ensemble of seeds).

Each image goes through exactly the steps of training (:mod:`softseg.training.preprocess`):
per-channel z-score, the run's resize (if it was trained with one), zero-padding to a
multiple of 32; then the model, a
sigmoid, cropping back and undoing the resize, so every pixel of the source grid gets a
probability. Runs are averaged in probability space.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from softseg.training.runtime import resolve_precision
from softseg.errors import SoftsegError
from softseg.inference.runs import LoadedRun, check_runs_compatible
from softseg.training.preprocess import normalize, padded_size, predict_logits_batch, resize, resize_input


# On a CPU, a forward pass holds at most this many input pixels, which bounds the memory of
# its activations whatever --batch-size asks. Measured with the paper's model in bf16 (freed
# memory kept, see softseg.training.runtime.keep_freed_memory): four 480x480 images in one pass were 6%
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
