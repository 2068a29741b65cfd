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


def _dml(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per channel of ``(N, K, *spatial)``, the Dice semimetric loss with batch sums, ``(K,)``."""
    dims = [0, *range(2, p.ndim)]
    total = (p + g).sum(dims)
    overlap = total - (p - g).abs().sum(dims)  # = 2 sum min(p, g)
    return 1 - (overlap + _SMOOTH) / (total + _SMOOTH)


def dice_semimetric_loss_classes(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The Dice semimetric loss of the softmax probabilities per foreground class (channels 1..C-1),
    mean over those classes. The background is left out, as nnU-Net leaves it out of its Dice
    term: it covers most pixels, so its near-zero loss would only dilute the others."""
    p = torch.softmax(logits.float(), dim=1)
    return _dml(p[:, 1:], target.float()[:, 1:]).mean()


def dice_semimetric_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The Dice semimetric loss (Wang et al., MICCAI 2023), L1 form, per task, mean over tasks.

    With p = sigmoid(logits) and g the target, summed over the batch and the spatial axes of
    each task: ``DML = 1 - (|p|_1 + |g|_1 - |p - g|_1) / (|p|_1 + |g|_1)``, i.e.
    ``1 - 2 sum min(p, g) / sum (p + g)``. On hard targets (g in {0, 1}) min(p, g) = p g and
    it is the soft Dice loss; on soft targets it is 0 exactly at p = g (soft Dice is not
    minimised there). Sums run over the whole batch ("batch Dice", as nnU-Net does for
    crops), because a random crop often holds no foreground and a per-image Dice of an empty
    crop is unstable.
    """
    return _dml(torch.sigmoid(logits.float()), target.float()).mean()


def combined_loss(logits: torch.Tensor, target: torch.Tensor, dml_weight: float = 1.0,
                  multiclass: bool = False) -> torch.Tensor:
    """``soft_cross_entropy + dml_weight * dice_semimetric_loss`` (their multi-class forms
    with ``multiclass``)."""
    if multiclass:
        return soft_cross_entropy_classes(logits, target) + dml_weight * dice_semimetric_loss_classes(logits, target)
    return soft_cross_entropy(logits, target) + dml_weight * dice_semimetric_loss(logits, target)


def loss_function(name: str, dml_weight: float = 1.0, multiclass: bool = False) -> LossFn:
    """The loss a run trains with: "ce", "dml" or "ce+dml" (``TrainConfig.loss``); the softmax
    forms for a multi-class run (``multiclass``: ``TrainConfig.classes`` is set)."""
    if name == "ce":
        return soft_cross_entropy_classes if multiclass else soft_cross_entropy
    if name == "dml":
        return dice_semimetric_loss_classes if multiclass else dice_semimetric_loss
    if name == "ce+dml":
        return partial(combined_loss, dml_weight=dml_weight, multiclass=multiclass)
    raise ValueError(f"unknown loss {name!r}; expected ce, dml or ce+dml")
