"""Image arrays -> probability maps with one or more loaded runs (an ensemble of seeds).

Each image goes through exactly the steps of training (:mod:`softseg.training.preprocess`):
per-channel z-score (a volume as a whole, then cut into slices along the run's ``slice_axis``),
the run's resize (if it was trained with one), zero-padding to a
multiple of 32; then the model, the run's temperature (logits / T, when the run has one), a
sigmoid, cropping back and undoing the resize, so every pixel of the source grid gets a
probability. Runs are averaged in probability space.

Test-time augmentation (``tta="flip"``) predicts each image also flipped, with the flips the
run was trained with (see :func:`tta_flips`), un-flips each prediction and averages the
probabilities (after the temperature) before the resize back and the mean over runs.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from softseg.training.runtime import resolve_precision
from softseg.errors import SoftsegError
from softseg.inference import TTA_MODES
from softseg.inference.runs import LoadedRun, check_runs_compatible
from softseg.training.config import TrainConfig
from softseg.training.model import output_probabilities
from softseg.training.preprocess import (
    normalize,
    padded_size,
    predict_logits_batch,
    predict_logits_volume,
    resample,
    resize,
    resize_input,
    stack_slices,
    to_spacing,
    volume_slices,
)


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


# The flips of tta="flip" as torch dims of a (N, C, H, W) batch; the names predictions record.
# Only flips map any H x W grid onto itself (a transpose or 90-degree turn would not, unless
# square), and "horizontal" reverses the last axis as in softseg.training.augment.
FLIP_NAMES = {(): "identity", (-1,): "horizontal", (-2,): "vertical", (-2, -1): "horizontal+vertical"}


def tta_flips(config: TrainConfig, tta: str = "none") -> tuple[tuple[int, ...], ...]:
    """The views averaged for ``tta``: always the image itself; with "flip" also the
    horizontal flip when the run was trained with ``hflip > 0``, the vertical one when
    ``vflip > 0``, and both together when both (training saw that combination too)."""
    if tta not in TTA_MODES:
        raise SoftsegError(f"tta {tta!r}: expected one of {', '.join(TTA_MODES)}")
    views: list[tuple[int, ...]] = [()]
    if tta == "flip":
        if config.hflip > 0:
            views.append((-1,))
        if config.vflip > 0:
            views.append((-2,))
        if config.hflip > 0 and config.vflip > 0:
            views.append((-2, -1))
    return tuple(views)


def _check_images(first: LoadedRun, images: list[np.ndarray]) -> None:
    axis = first.config.slice_axis
    for index, image in enumerate(images):
        if first.config.dims == "3d" and image.ndim != 4:
            raise SoftsegError(
                f"image {index}: shape {image.shape} (channels first), but the run is a 3D model "
                f"(dims 3d) that predicts volumes (C, X, Y, Z); use a 2D run for 2D images"
            )
        if image.ndim == 4 and axis is None:
            raise SoftsegError(
                f"image {index}: a volume {image.shape} (channels first), but the run was trained "
                "on 2D images (its config has no slice_axis); predict volumes with a run trained "
                "on volumes, or cut them into 2D images first"
            )
        if image.ndim not in (3, 4):
            raise SoftsegError(
                f"image {index}: expected a 2D image (C, H, W) or a volume (C, X, Y, Z), found "
                f"shape {image.shape}"
            )
        if image.shape[0] != first.config.in_channels:
            raise SoftsegError(
                f"image {index}: expected {first.config.in_channels} channel(s) as in training, "
                f"found {image.shape[0]} (shape {image.shape})"
            )


def _inputs(run: LoadedRun, images: list[np.ndarray], spacings) -> list[torch.Tensor]:
    """Each image normalised and, for a run with a ``spacing``, resampled to it."""
    if run.config.spacing and spacings is None:
        raise SoftsegError(
            f"{run.run_dir}: the run resamples images to {run.config.spacing} mm; pass each "
            f"image's voxel spacing (spacings=[case.spacing, ...])"
        )
    spacings = spacings if spacings is not None else [None] * len(images)
    return [to_spacing(normalize(image), spacing, run.config) for image, spacing in zip(images, spacings)]


def _on_source_grids(maps: list[torch.Tensor], images: list[np.ndarray], *, clamp01: bool) -> list[np.ndarray]:
    """Each output map resampled back onto its image's own grid (a no-op without a spacing)."""
    return [resample(m, tuple(image.shape[1:]), clamp01=clamp01).numpy().astype(np.float32)
            for m, image in zip(maps, images)]


def _flatten(inputs: list[torch.Tensor], axis: int | None) -> tuple[list[torch.Tensor], list[int]]:
    """The 2D model inputs of the normalised ``inputs`` (a volume: its slices along ``axis``)
    and, per input, the index of the image it belongs to."""
    flat, owner = [], []
    for index, x in enumerate(inputs):
        parts = volume_slices(x, axis) if x.ndim == 4 else [x]
        flat += parts
        owner += [index] * len(parts)
    return flat, owner


def _assemble(flat: list[torch.Tensor], owner: list[int], images: list[np.ndarray],
              axis: int | None) -> list[torch.Tensor]:
    """Per image, its outputs ``(T, *spatial)``: a 2D image's one, a volume's stacked back."""
    parts: list[list[torch.Tensor]] = [[] for _ in images]
    for index, out in zip(owner, flat):
        parts[index].append(out)
    return [stack_slices(p, axis) if images[i].ndim == 4 else p[0] for i, p in enumerate(parts)]


def _passes(run: LoadedRun, normalized: list[torch.Tensor]) -> Iterator[tuple[list[int], torch.Tensor]]:
    """``(image indices, (n, C, h, w) model input)`` per forward pass of ``run``: the run's
    resize applied, images of one model-input shape together."""
    prepared = [resize_input(x, run.config) for x in normalized]
    # the caller bounds how many images come at once (predict's --batch-size)
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, x in enumerate(prepared):
        groups.setdefault(tuple(x.shape), []).append(index)
    for indices in _split_passes(groups.values(), prepared, run.device):
        yield indices, torch.stack([prepared[i] for i in indices])


def _logits(run: LoadedRun, batch: torch.Tensor, flip: tuple[int, ...] = ()) -> torch.Tensor:
    """The run's logits ``(n, T, h, w)`` float32 for ``batch`` seen through ``flip``, flipped
    back so that every pixel stays where it was."""
    precision = resolve_precision(run.config.precision, run.device)
    x = batch.flip(flip) if flip else batch
    logits = predict_logits_batch(run.model, x, precision, run.device)
    return logits.flip(flip) if flip else logits


def _scale(run: LoadedRun, spatial: int, device) -> torch.Tensor | None:
    """The run's temperatures shaped to divide ``(..., K, *spatial)`` logits: one per task
    (sigmoid), or the one shared by the softmax of a multi-class run; None without any."""
    if run.temperature is None:
        return None
    values = run.temperature[:1] if run.config.classes else run.temperature
    return torch.tensor(values, dtype=torch.float32, device=device).reshape(-1, *([1] * spatial))


def _probabilities(run: LoadedRun, batch: torch.Tensor, views: Sequence[tuple[int, ...]]) -> torch.Tensor:
    """``sigmoid(logits / T)`` (multi-class: the softmax) averaged over ``views``:
    ``(n, K, h, w)`` on the CPU."""
    scale = _scale(run, 2, run.device)
    total = None
    for flip in views:
        logits = _logits(run, batch, flip)
        prob = output_probabilities(logits if scale is None else logits / scale, run.config)
        total = prob if total is None else total + prob
    return (total / len(views)).cpu()


def predict_images(
    loaded_runs: Sequence[LoadedRun], images: Sequence[np.ndarray], tta: str = "none",
    spacings: Sequence[Sequence[float]] | None = None,
) -> list[np.ndarray]:
    """Probability maps ``(T, *spatial)`` float32 in [0, 1] for ``(C, *spatial)`` images.

    ``T`` follows the runs' ``tasks`` order; for multi-class runs the maps are the softmax's,
    one per class in ``config.classes`` order (background first), summing to 1 per pixel. All runs must share tasks and input channels;
    their probabilities are averaged. A run with ``temperature`` has its logits divided by
    its task's T before the sigmoid. ``tta``: "none", or "flip" (see :func:`tta_flips`).
    2D images ``(C, H, W)``; volumes ``(C, X, Y, Z)`` with runs trained on volumes, slice by
    slice along the run's ``slice_axis`` (the slices of several volumes share forward passes),
    or with 3D runs (dims 3d) by sliding windows
    (:func:`softseg.training.preprocess.predict_logits_volume`).
    """
    runs = list(loaded_runs)
    check_runs_compatible(runs)
    images = [np.asarray(image) for image in images]
    _check_images(runs[0], images)
    inputs = _inputs(runs[0], images, spacings)  # the same for every run
    if runs[0].config.dims == "3d":
        return _on_source_grids([_predict_volume(runs, x, tta) for x in inputs], images, clamp01=True)
    axis = runs[0].config.slice_axis
    normalized, owner = _flatten(inputs, axis)
    totals: list[torch.Tensor | None] = [None] * len(normalized)
    for run in runs:
        views = tta_flips(run.config, tta)
        for indices, batch in _passes(run, normalized):
            for i, prob in zip(indices, _probabilities(run, batch, views)):
                prob = resize(prob, tuple(normalized[i].shape[1:]), clamp01=True)
                totals[i] = prob if totals[i] is None else totals[i] + prob
    maps = _assemble([total / len(runs) for total in totals], owner, images, axis)
    return _on_source_grids(maps, images, clamp01=True)


def predict_source_logits(run: LoadedRun, images: Sequence[np.ndarray],
                          spacings: Sequence[Sequence[float]] | None = None) -> list[np.ndarray]:
    """One run's logits ``(T, *spatial)`` float32 on each ``(C, *spatial)`` image's own grid:
    the steps of :func:`predict_images` up to the sigmoid, the logits (not probabilities)
    resized back. No temperature, no TTA: what :mod:`softseg.inference.calibration` fits."""
    images = [np.asarray(image) for image in images]
    _check_images(run, images)
    inputs = _inputs(run, images, spacings)
    if run.config.dims == "3d":
        return _on_source_grids([_volume_logits(run, x) for x in inputs], images, clamp01=False)
    normalized, owner = _flatten(inputs, run.config.slice_axis)
    out: list[torch.Tensor | None] = [None] * len(normalized)
    for indices, batch in _passes(run, normalized):
        for i, logits in zip(indices, _logits(run, batch).cpu()):
            out[i] = resize(logits, tuple(normalized[i].shape[1:]))
    return _on_source_grids(_assemble(out, owner, images, run.config.slice_axis), images, clamp01=False)


def _volume_flip_dims(config: TrainConfig, flip: tuple[int, ...]) -> tuple[int, ...]:
    """A 2D view's flip (dims of ``(N, C, H, W)``: -1 horizontal, -2 vertical) as dims of a
    ``(1, C, X, Y, Z)`` volume: the in-plane axes of the run's through-plane ``slice_axis``,
    as :mod:`softseg.training.augment3d` flips them in training."""
    from softseg.training.augment3d import in_plane_axes

    vertical, horizontal = in_plane_axes(config.slice_axis)
    return tuple(sorted(horizontal + 2 if d == -1 else vertical + 2 for d in flip))


def _volume_logits(run: LoadedRun, volume: torch.Tensor, flip: tuple[int, ...] = ()) -> torch.Tensor:
    """The 3D run's logits ``(T, X, Y, Z)`` on the CPU for a normalised volume seen through
    ``flip`` (2D view dims, see :func:`_volume_flip_dims`), flipped back."""
    precision = resolve_precision(run.config.precision, run.device)
    dims = tuple(d - 1 for d in _volume_flip_dims(run.config, flip))  # no batch axis here
    x = volume.flip(dims) if dims else volume
    logits = predict_logits_volume(run.model, x, run.config.patch_size, precision, run.device)
    return logits.flip(dims) if dims else logits


def _predict_volume(runs: Sequence[LoadedRun], volume: torch.Tensor, tta: str) -> torch.Tensor:
    """``sigmoid(logits / T)`` of 3D runs, averaged over each run's views, then over runs."""
    total = None
    for run in runs:
        views = tta_flips(run.config, tta)
        scale = _scale(run, 3, "cpu")
        for flip in views:
            logits = _volume_logits(run, volume, flip)
            prob = output_probabilities(logits if scale is None else logits / scale, run.config, dim=0)
            prob = prob / (len(views) * len(runs))
            total = prob if total is None else total + prob
    return total.clamp_(0.0, 1.0).to(torch.float32)
