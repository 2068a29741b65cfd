"""The training losses: soft cross-entropy (the paper), the Dice semimetric loss, their sum.

All take logits and soft targets ``(N, T, *spatial)`` (one sigmoid channel per task, targets
in [0, 1]) and compute in float32 whatever the autocast dtype. Multi-class runs have one
softmax channel per class and targets ``(N, C, *spatial)`` that sum to 1 per pixel (the raters'
class frequencies): the cross-entropy is then against the class distribution, and the Dice
semimetric loss is taken per foreground class. Which one a run uses is ``TrainConfig.loss``
(and ``TrainConfig.classes``); :func:`loss_function` is the one place that maps them to a function.
"""

from __future__ import annotations

from functools import partial
from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SumFn = Callable[[torch.Tensor], torch.Tensor]

# Keeps the ratio defined for a batch where both prediction and target are empty (the loss is
# then ~0, as Dice(empty, empty) = 1 in our metrics); small enough not to move any other value.
_SMOOTH = 1e-5


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy between sigmoid(logits) and soft targets in [0, 1].

    Per pixel, -g log p - (1 - g) log(1 - p) is minimal at p = g, so the model is
    pushed to predict the raters' agreement itself (soft Dice would push it to 0/1).
    """
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def soft_cross_entropy_classes(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of ``-sum_c g_c log softmax(z)_c`` against class distributions g.

    Minimal, per pixel, at softmax(z) = g (the raters' class frequencies), as the binary soft
    cross-entropy is at sigmoid(z) = g; with two classes it equals the binary one.
    """
    return F.cross_entropy(logits.float(), target.float())


def _dml(p: torch.Tensor, g: torch.Tensor, batch_sum: SumFn | None = None) -> torch.Tensor:
    """Per channel of ``(N, K, *spatial)``, the Dice semimetric loss with batch sums, ``(K,)``.
    ``batch_sum`` completes the sums over the whole batch where it is split over processes
    (:func:`softseg.training.distributed.sum_over_processes`)."""
    dims = [0, *range(2, p.ndim)]
    sums = torch.stack([(p + g).sum(dims), (p - g).abs().sum(dims)])
    if batch_sum is not None:
        sums = batch_sum(sums)
    total, diff = sums[0], sums[1]
    overlap = total - diff  # = 2 sum min(p, g)
    return 1 - (overlap + _SMOOTH) / (total + _SMOOTH)


def dice_semimetric_loss_classes(logits: torch.Tensor, target: torch.Tensor,
                                 batch_sum: SumFn | None = None) -> torch.Tensor:
    """The Dice semimetric loss of the softmax probabilities per foreground class (channels 1..C-1),
    mean over those classes. The background is left out, as nnU-Net leaves it out of its Dice
    term: it covers most pixels, so its near-zero loss would only dilute the others."""
    p = torch.softmax(logits.float(), dim=1)
    return _dml(p[:, 1:], target.float()[:, 1:], batch_sum).mean()


def dice_semimetric_loss(logits: torch.Tensor, target: torch.Tensor, batch_sum: SumFn | None = None) -> torch.Tensor:
    """The Dice semimetric loss (Wang et al., MICCAI 2023), L1 form, per task, mean over tasks.

    With p = sigmoid(logits) and g the target, summed over the batch and the spatial axes of
    each task: ``DML = 1 - (|p|_1 + |g|_1 - |p - g|_1) / (|p|_1 + |g|_1)``, i.e.
    ``1 - 2 sum min(p, g) / sum (p + g)``. On hard targets (g in {0, 1}) min(p, g) = p g and
    it is the soft Dice loss; on soft targets it is 0 exactly at p = g (soft Dice is not
    minimised there). Sums run over the whole batch ("batch Dice", as nnU-Net does for
    crops), because a random crop often holds no foreground and a per-image Dice of an empty
    crop is unstable.
    """
    return _dml(torch.sigmoid(logits.float()), target.float(), batch_sum).mean()


def _terms(multiclass: bool) -> tuple[Callable, Callable]:
    """The (cross-entropy, Dice semimetric loss) pair of a sigmoid or a softmax head."""
    if multiclass:
        return soft_cross_entropy_classes, dice_semimetric_loss_classes
    return soft_cross_entropy, dice_semimetric_loss


def combined_loss(logits: torch.Tensor, target: torch.Tensor, dml_weight: float = 1.0,
                  multiclass: bool = False, batch_sum: SumFn | None = None) -> torch.Tensor:
    """``soft_cross_entropy + dml_weight * dice_semimetric_loss`` (their multi-class forms
    with ``multiclass``)."""
    ce, dml = _terms(multiclass)
    return ce(logits, target) + dml_weight * dml(logits, target, batch_sum)


def loss_function(name: str, dml_weight: float = 1.0, multiclass: bool = False,
                  batch_sum: SumFn | None = None) -> LossFn:
    """The loss a run trains with: "ce", "dml" or "ce+dml" (``TrainConfig.loss``); the softmax
    forms for a multi-class run (``multiclass``: ``TrainConfig.classes`` is set). ``batch_sum``:
    how the DML's batch sums are completed when the batch is split over processes (the CE is
    a mean, which DDP's gradient averaging already completes)."""
    ce, dml = _terms(multiclass)
    if name == "ce":
        return ce
    if name == "dml":
        return dml if batch_sum is None else partial(dml, batch_sum=batch_sum)
    if name == "ce+dml":
        return partial(combined_loss, dml_weight=dml_weight, multiclass=multiclass, batch_sum=batch_sum)
    raise ValueError(f"unknown loss {name!r}; expected ce, dml or ce+dml")
