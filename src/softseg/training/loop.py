"""One training step, one epoch, one validation pass; the state a checkpoint holds.

The step: the global batch's cases and random crops, or 3D patches (shared sampling generator), this
process's slice, the growing batch on the model's device (the original crops + ``aug_copies``
augmented copies drawn from the whole images), the forward pass under the run's precision,
the run's loss (:mod:`softseg.training.losses`) in float32, backward, Adam. The learning rate
follows a cosine from ``lr`` at the first step to ``lr_min`` at the last, set per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from softseg.training import distributed as _distributed
from softseg.training.batches import TrainData, sample_targets
from softseg.training.runtime import autocast, memory_format, seeded_global_rng
from softseg.training.config import TrainConfig
from softseg.training.augment import as_class_distribution, growing_batch, random_crops
from softseg.training.augment3d import random_patches
from softseg.training.losses import loss_function
from softseg.training.model import output_probabilities
from softseg.training.preprocess import (
    predict_logits,
    predict_logits_volume,
    resample,
    resize,
    resize_input,
    stack_slices,
    volume_slices,
)


def lr_at(step: int, total_steps: int, lr: float, lr_min: float) -> float:
    """Cosine annealing per step: ``lr`` at step 0, ``lr_min`` at step ``total_steps - 1``."""
    if total_steps <= 1:
        return lr
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * step / (total_steps - 1)))


@dataclass
class LoopState:
    """What changes while training; all of it goes into ``last.pt``."""

    config: TrainConfig
    model: torch.nn.Module  # the bare model (weights saved from here)
    wrapped: torch.nn.Module  # the model the forward pass uses (DDP or the same model)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    device: torch.device
    dist: _distributed.Dist
    sampler: torch.Generator  # shared by all processes: batches, crops, rater draws
    steps_per_epoch: int
    epoch: int = 0
    step: int = 0
    best: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.config.epochs

    @property
    def precision(self) -> str:
        return self.config.precision


def epoch_batches(order: list[int], batch_size: int, world: int = 1) -> list[list[int]]:
    """Consecutive global batches of ``order``; a last partial batch is kept unless it has
    fewer cases than processes (a process would get none)."""
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < world:
        batches.pop()
    return batches


def steps_per_epoch(n_cases: int, batch_size: int, world: int = 1) -> int:
    return max(1, len(epoch_batches(list(range(n_cases)), batch_size, world)))


def train_step(state: LoopState, data: TrainData, indices: list[int]) -> float:
    """One optimiser step on the cases ``indices`` (the global batch); returns the global loss."""
    c, device = state.config, state.device
    source_images, source_labels = sample_targets(data, indices, state.sampler)
    if c.dims == "3d":
        foreground = [data.foreground[i] for i in indices] if data.foreground else []
        images, labels = random_patches(source_images, source_labels, c.patch_size, state.sampler, foreground)
    else:
        images, labels = random_crops(source_images, source_labels, c.crop_size, state.sampler)
    world, rank = state.dist.world, state.dist.rank
    if world > 1:
        images, labels = images[rank::world], labels[rank::world]
        source_images, source_labels = source_images[rank::world], source_labels[rank::world]
    images = images.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True)
    sources = ([x.to(device, non_blocking=True) for x in source_images],
               [y.to(device, non_blocking=True) for y in source_labels])
    # Augmentation and stochastic depth draw from generators seeded by (seed, rank, step):
    # reproducible, different per process, and nothing to carry across a resume.
    seed = int(np.random.SeedSequence([c.seed, rank, state.step]).generate_state(1)[0])
    augmenter = torch.Generator().manual_seed(seed)
    images, labels = growing_batch(images, labels, sources, c.aug_copies, c, augmenter)
    if c.classes:
        labels = as_class_distribution(labels)
    images = images.contiguous(memory_format=memory_format(state.precision, device, c.dims))

    lr = lr_at(state.step, state.total_steps, c.lr, c.lr_min)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    state.optimizer.zero_grad(set_to_none=True)
    # Stochastic depth draws from torch's global generators: seeded for this step, and the
    # caller's state restored afterwards.
    with seeded_global_rng(seed, device), autocast(state.precision, device):
        logits = state.wrapped(images)
    batch_sum = _distributed.sum_over_processes if state.dist.world > 1 else None
    loss = loss_function(c.loss, c.dml_weight, bool(c.classes), batch_sum)(logits, labels)
    if state.scaler is not None:
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        loss.backward()
        state.optimizer.step()
    state.step += 1
    return float(_distributed.mean_over_processes(loss.detach(), state.dist))


def train_epoch(state: LoopState, data: TrainData, progress: bool = True) -> float:
    """One pass over the training cases in a fresh seeded order; returns the mean step loss."""
    from tqdm import tqdm

    c = state.config
    order = torch.randperm(len(data.images), generator=state.sampler).tolist()
    batches = epoch_batches(order, c.batch_size, state.dist.world)
    state.wrapped.train()
    losses = []
    bar = tqdm(
        batches, desc=f"epoch {state.epoch + 1}/{c.epochs}", leave=False, unit="step",
        disable=not (progress and state.dist.is_main),
    )
    for indices in bar:
        losses.append(train_step(state, data, indices))
        bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{state.optimizer.param_groups[0]['lr']:.2e}")
    return float(np.mean(losses))


@torch.no_grad()
def validate(state: LoopState, data: TrainData) -> tuple[float, float]:
    """Mean loss (the run's) and mean QUBIQ score over validation cases and tasks (multi-class:
    foreground classes), whole images.

    Each image is predicted as in inference (padded to a multiple of 32, cropped back,
    un-resized) and compared with its soft label on the source grid; a volume slice by slice,
    or in the 3D mode by sliding windows, scored as one volume.
    """
    from softseg.evaluation.metrics import qubiq_score

    model = state.model
    was_training = model.training
    model.eval()
    losses, scores = [], []
    loss_fn = loss_function(state.config.loss, state.config.dml_weight, bool(state.config.classes))
    for image, soft in zip(data.images, data.source_labels):
        if state.config.dims == "3d":
            logits = predict_logits_volume(model, image, state.config.patch_size, state.precision, state.device)
        elif image.ndim == 4:  # a volume: its slices, predicted and stacked back in place
            slices = [resize(predict_logits(model, resize_input(x, state.config), state.precision,
                                            state.device).cpu(), tuple(x.shape[-2:]))
                      for x in volume_slices(image, state.config.slice_axis)]
            logits = stack_slices(slices, state.config.slice_axis)
        else:
            logits = predict_logits(model, image, state.precision, state.device).cpu()
            logits = resize(logits, tuple(soft.shape[-2:]))
        logits = resample(logits, tuple(soft.shape[1:]))  # a run's spacing undone
        losses.append(float(loss_fn(logits[None], soft[None])))
        prob = output_probabilities(logits, state.config, dim=0)[state.config.task_channels].numpy()
        target = soft[state.config.task_channels].numpy()
        scores.extend(qubiq_score(p, g) for p, g in zip(prob, target))
    model.train(was_training)
    return float(np.mean(losses)), float(np.mean(scores))


def rng_states(state: LoopState) -> dict[str, Any]:
    """The sampler's state: identical on every process, so rank 0's copy serves all."""
    return {"sampler": state.sampler.get_state()}


def restore_rng_states(state: LoopState, states: dict[str, Any]) -> None:
    state.sampler.set_state(states["sampler"])
