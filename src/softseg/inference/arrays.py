"""Image arrays -> probability maps with one or more loaded runs (an ensemble of seeds).

Each image goes through exactly the steps of training (:mod:`softseg.model.preprocess`):
per-channel z-score (a volume as a whole), the run's resampling to a spacing if it has one,
then the run's mode over the whole image (:meth:`softseg.model.modes.Mode.outputs`: resized
and padded, slice by slice, or by sliding windows), the run's temperature (logits / T, when
the run has one) and its head's activation (:mod:`softseg.model.heads`), back onto the
source grid, so every pixel of the source grid gets a probability. Runs are averaged in
probability space (:func:`predict_images`); :func:`predict_ensemble` also returns each run's
maps, for the uncertainty maps. A sampling head's runs (the SSN) also give samples of their
segmentation (:func:`predict_samples`).

Test-time augmentation (``tta="flip"``) predicts each image also flipped, with the flips the
run was trained with (see :func:`tta_flips`), un-flips each prediction and averages the
probabilities (after the temperature) before the resize back and the mean over runs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from softseg.errors import SoftsegError
from softseg.inference import TTA_MODES
from softseg.inference.runs import LoadedRun, check_runs_compatible
from softseg.model.config import TrainConfig
from softseg.model.heads import head_of
from softseg.model.modes import Forward, mode_of
from softseg.model.preprocess import normalize, resample, to_spacing
from softseg.model.runtime import resolve_precision


# The flips of tta="flip" as torch dims of a (N, C, H, W) batch; the names predictions record.
# Only flips map any H x W grid onto itself (a transpose or 90-degree turn would not, unless
# square), and "horizontal" reverses the last axis as in softseg.training.augment. A 3D run
# flips the in-plane axes of its volumes instead (softseg.model.modes.Volume3D.flip_dims).
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


def _inputs(run: LoadedRun, images: list[np.ndarray], spacings) -> list[torch.Tensor]:
    """Each image checked against the run's mode, normalised and, for a run with a
    ``spacing``, resampled to it."""
    mode = mode_of(run.config)
    for index, image in enumerate(images):
        mode.check_image(index, image, run.config)
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


def _logits(run: LoadedRun, flip: tuple[int, ...] = ()) -> Forward:
    """The run's logits of whole model inputs seen through ``flip`` (a view of
    :data:`FLIP_NAMES`), flipped back so that every pixel stays where it was; on the run's
    device (2D modes) or the CPU (3D)."""
    mode, precision = mode_of(run.config), resolve_precision(run.config.precision, run.device)
    dims = mode.flip_dims(run.config, flip)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        x = batch.flip(dims) if dims else batch
        logits = mode.network_logits(run.model, x, run.config, precision, run.device)
        return logits.flip(dims) if dims else logits

    return forward


def _probabilities(run: LoadedRun, tta: str) -> Forward:
    """The run's head over ``logits / T`` averaged over the views of ``tta``, on the CPU."""
    head = head_of(run.config)
    views = [_logits(run, flip) for flip in tta_flips(run.config, tta)]

    def forward(batch: torch.Tensor) -> torch.Tensor:
        total = None
        for logits_of in views:
            logits = logits_of(batch)
            if run.temperature is not None:
                logits = logits / head.temperature_divisor(run.temperature, logits.ndim - 2, logits.device)
            prob = head.probabilities(logits)
            total = prob if total is None else total + prob
        return (total / len(views)).cpu()

    return forward


def predict_images(
    loaded_runs: Sequence[LoadedRun], images: Sequence[np.ndarray], tta: str = "none",
    spacings: Sequence[Sequence[float]] | None = None,
) -> list[np.ndarray]:
    """Probability maps ``(T, *spatial)`` float32 in [0, 1] for ``(C, *spatial)`` images.

    ``T`` follows the runs' ``tasks`` order; for multi-class runs the maps are the softmax's,
    one per class in ``config.classes`` order (background first), summing to 1 per pixel. All
    runs must share tasks, input channels and mode; their probabilities are averaged. A run
    with ``temperature`` has its logits divided by its task's T before the sigmoid. ``tta``:
    "none", or "flip" (see :func:`tta_flips`). 2D images ``(C, H, W)``; volumes
    ``(C, X, Y, Z)`` with runs trained on volumes, slice by slice along the run's
    ``slice_axis`` (the slices of several volumes share forward passes), or with 3D runs
    (dims 3d) by sliding windows (:func:`softseg.model.preprocess.predict_logits_volume`).
    """
    return _ensemble(loaded_runs, images, tta, spacings, each_run=False)[0]


def predict_ensemble(
    loaded_runs: Sequence[LoadedRun], images: Sequence[np.ndarray], tta: str = "none",
    spacings: Sequence[Sequence[float]] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The ensemble's maps and each run's, from one pass: ``(means, per_run)``.

    ``means[i]`` is exactly :func:`predict_images`' map of image i; ``per_run[i]`` is
    ``(M, T, *spatial)`` float32, run m's map of image i on its source grid (its temperature
    and test-time views applied), which is ``predict_images([runs[m]], ...)``'s. Their mean
    over runs is ``means[i]`` up to float rounding (the mean is taken before the resampling
    back from a run's ``spacing``, and is exact without one). For the uncertainty maps
    (:mod:`softseg.inference.uncertainty`).
    """
    return _ensemble(loaded_runs, images, tta, spacings, each_run=True)


def _ensemble(loaded_runs, images, tta, spacings, *, each_run: bool):
    """The runs' mean maps on the source grids and, with ``each_run``, every run's there too
    (stacked per image); the one path of :func:`predict_images` and :func:`predict_ensemble`."""
    runs = list(loaded_runs)
    check_runs_compatible(runs)
    images = [np.asarray(image) for image in images]
    inputs = _inputs(runs[0], images, spacings)  # the same for every run
    totals: list[torch.Tensor] | None = None
    kept: list[list[torch.Tensor]] = []
    for run in runs:
        maps = mode_of(run.config).outputs(_probabilities(run, tta), inputs, run.config, run.device, clamp01=True)
        if each_run:
            kept.append(maps)
        totals = maps if totals is None else [a + b for a, b in zip(totals, maps)]
    means = _on_source_grids([total / len(runs) for total in totals], images, clamp01=True)
    if not each_run:
        return means, None
    on_grids = [_on_source_grids(maps, images, clamp01=True) for maps in kept]
    return means, [np.stack(per_image) for per_image in zip(*on_grids)]


def predict_source_logits(run: LoadedRun, images: Sequence[np.ndarray],
                          spacings: Sequence[Sequence[float]] | None = None) -> list[np.ndarray]:
    """One run's logits ``(T, *spatial)`` float32 on each ``(C, *spatial)`` image's own grid:
    the steps of :func:`predict_images` up to the activation, the logits (not probabilities)
    resized back. No temperature, no TTA: what :mod:`softseg.inference.calibration` fits."""
    images = [np.asarray(image) for image in images]
    inputs = _inputs(run, images, spacings)
    forward = _logits(run)
    logits = mode_of(run.config).outputs(lambda batch: forward(batch).cpu(), inputs, run.config, run.device,
                                         clamp01=False)
    return _on_source_grids(logits, images, clamp01=False)


def predict_samples(
    loaded_runs: Sequence[LoadedRun], images: Sequence[np.ndarray], n: int,
    spacings: Sequence[Sequence[float]] | None = None,
) -> list[np.ndarray]:
    """``n`` sampled probability maps ``(n, K, *spatial)`` float32 in [0, 1] per image, from
    runs whose head samples (head ssn): the activation of sampled logits, on each image's grid.

    Sample k comes from run ``k mod R`` of the R runs (its ``k // R``-th sample): the ensemble's
    mixture, each run equally often. A run's samples are the first of those its probability
    map averages (:meth:`softseg.model.heads.StochasticSegmentation.probabilities`: the same
    seeded generator per image). They are drawn from the image itself: no test-time views and
    no temperature. Volumes of a 2D run are sampled slice by slice (the slices' samples are
    independent draws, as the 2D network models them).
    """
    runs = list(loaded_runs)
    check_runs_compatible(runs)
    flat = [run for run in runs if not head_of(run.config).sampling]
    if flat:
        raise SoftsegError(
            f"{flat[0].run_dir}: a deterministic run (head {head_of(flat[0].config).name}) predicts one map, "
            "not samples; samples need a run trained with --head ssn (its level sets: "
            "softseg.evaluation.hypotheses; for the seeds' spread use --uncertainty)"
        )
    if n < 1:
        raise SoftsegError(f"samples: expected at least 1, got {n}")
    images = [np.asarray(image) for image in images]
    inputs = _inputs(runs[0], images, spacings)
    per_run = []
    for index, run in enumerate(runs):
        count = len(range(index, n, len(runs)))
        head, logits_of = head_of(run.config), _logits(run)

        def forward(batch: torch.Tensor, head=head, logits_of=logits_of, count=count) -> torch.Tensor:
            return head.samples(logits_of(batch), count).flatten(1, 2).cpu()

        maps = mode_of(run.config).outputs(forward, inputs, run.config, run.device, clamp01=True) if count else []
        per_run.append([m.reshape(count, -1, *m.shape[1:]) for m in maps])
    mixed = [torch.stack([per_run[k % len(runs)][i][k // len(runs)] for k in range(n)]).flatten(0, 1)
             for i in range(len(images))]
    return [m.reshape(n, -1, *m.shape[1:]) for m in _on_source_grids(mixed, images, clamp01=True)]
