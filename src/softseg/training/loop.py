"""One training step, one epoch, one validation pass; the state a checkpoint holds.

The step: the global batch's cases and random crops, or 3D patches (shared sampling generator), this
process's slice, the growing batch on the model's device (the original crops + ``aug_copies``
augmented copies drawn from the whole images), the forward pass under the run's precision,
the run's loss (:mod:`softseg.model.losses`) in float32, backward, Adam. The learning rate
follows a cosine from ``lr`` at the first step to ``lr_min`` at the last, set per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from softseg.model.config import TrainConfig
from softseg.model.heads import head_of
from softseg.model.modes import mode_of
from softseg.model.preprocess import resample
from softseg.model.runtime import autocast, seeded_global_rng
from softseg.training import distributed as _distributed
from softseg.training.augment import growing_batch, random_crops
from softseg.training.augment3d import random_patches
from softseg.training.batches import TrainData, sample_targets


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


def epoch_batches(order: list[int], batch_size: int, world: int = 1, per_process: int = 1) -> list[list[int]]:
    """Consecutive global batches of ``order``; a last partial batch is kept unless it has
    fewer than ``per_process`` cases for each process (see :func:`smallest_share`)."""
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < world * per_process:
        batches.pop()
    return batches


def smallest_share(config: TrainConfig) -> int:
    """The fewest cases a process's share of a batch may hold: one when augmented copies
    grow it, else two, since batch norm cannot train on a single sample (it crashed on a last
    batch of one with ``aug_copies`` 0)."""
    return 1 if config.aug_copies > 0 else 2


def steps_per_epoch(n_cases: int, batch_size: int, world: int = 1, per_process: int = 1) -> int:
    return max(1, len(epoch_batches(list(range(n_cases)), batch_size, world, per_process)))


def _crops(images, labels, config: TrainConfig, generator: torch.Generator, foreground):
    return random_crops(images, labels, config.crop_size, generator)


def _patches(images, labels, config: TrainConfig, generator: torch.Generator, foreground):
    return random_patches(images, labels, config.patch_size, generator, foreground)


# The training windows of each mode (softseg.model.modes.Mode.window): random crops of whole
# images or slices, random 3D patches (foreground-oversampled) of whole volumes.
WINDOWS = {"crop": _crops, "patch": _patches}


def train_step(state: LoopState, data: TrainData, indices: list[int]) -> float:
    """One optimiser step on the cases ``indices`` (the global batch); returns the global loss."""
    c, device = state.config, state.device
    mode, head = mode_of(c), head_of(c)
    source_images, source_labels = sample_targets(data, indices, state.sampler)
    foreground = [data.foreground[i] for i in indices] if data.foreground else []
    images, labels = WINDOWS[mode.window](source_images, source_labels, c, state.sampler, foreground)
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
    labels = head.loss_targets(labels)
    images = images.contiguous(memory_format=mode.memory_format(state.precision, device))

    lr = lr_at(state.step, state.total_steps, c.lr, c.lr_min)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    state.optimizer.zero_grad(set_to_none=True)
    # Stochastic depth and a sampling head's loss (the SSN's Monte Carlo samples) draw from
    # torch's global generators: seeded for this step, and the caller's state restored afterwards.
    batch_sum = _distributed.sum_over_processes if state.dist.world > 1 else None
    with seeded_global_rng(seed, device):
        with autocast(state.precision, device):
            logits = state.wrapped(images)
        loss = head.loss(c, batch_sum)(logits, labels)  # float32: the losses leave autocast
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
    batches = epoch_batches(order, c.batch_size, state.dist.world, smallest_share(c))
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

    Each image goes through the run's mode as in inference (:meth:`softseg.model.modes.Mode.outputs`:
    resized and padded, slice by slice, or by sliding windows) and is compared with its soft
    label on the source grid, a volume scored as one volume.
    """
    from softseg.evaluation.metrics import qubiq_score

    config, model = state.config, state.model
    mode, head = mode_of(config), head_of(config)
    was_training = model.training
    model.eval()
    losses, scores = [], []
    loss_fn = head.loss(config)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return mode.network_logits(model, batch, config, state.precision, state.device).cpu()

    tasks = head.task_channels()
    for image, soft in zip(data.images, data.source_labels):
        (logits,) = mode.outputs(forward, [image], config, state.device, clamp01=False)
        logits = resample(logits, tuple(soft.shape[1:]))  # a run's spacing undone
        with seeded_global_rng(config.seed):  # a sampling loss: the same draws every validation
            losses.append(float(loss_fn(logits[None], soft[None])))
        prob = head.probabilities(logits, dim=0)[tasks].numpy()
        scores.extend(qubiq_score(p, g) for p, g in zip(prob, soft[tasks].numpy()))
    model.train(was_training)
    return float(np.mean(losses)), float(np.mean(scores))


def rng_states(state: LoopState) -> dict[str, Any]:
    """The sampler's state: identical on every process, so rank 0's copy serves all."""
    return {"sampler": state.sampler.get_state()}


def restore_rng_states(state: LoopState, states: dict[str, Any]) -> None:
    state.sampler.set_state(states["sampler"])
