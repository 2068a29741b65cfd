"""The training losses: values by hand, minima, and MONAI's DiceLoss as an oracle."""

from __future__ import annotations

import pytest
import torch

from softseg.model.losses import (
    combined_loss,
    dice_semimetric_loss,
    loss_function,
    soft_cross_entropy,
)


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.logit(p.double().clamp(1e-6, 1 - 1e-6))


def _soft_dice(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss 1 - 2 sum(p g) / sum(p + g) over the whole tensor (one task)."""
    return 1 - 2 * (p * g).sum() / (p + g).sum()


def test_dml_hand_value():
    # p = (0.2, 0.6), g = (0.5, 0.5): sum min = 0.2 + 0.5 = 0.7, sum(p + g) = 1.8
    p = torch.tensor([0.2, 0.6], dtype=torch.float64).reshape(1, 1, 1, 2)
    g = torch.tensor([0.5, 0.5]).reshape(1, 1, 1, 2)
    assert float(dice_semimetric_loss(_logit(p), g)) == pytest.approx(1 - 1.4 / 1.8, abs=1e-5)


def test_dml_equals_soft_dice_on_hard_labels():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 8, 8, generator=generator)
    hard = (torch.rand(3, 1, 8, 8, generator=generator) > 0.6).float()
    p = torch.sigmoid(logits)
    assert float(dice_semimetric_loss(logits, hard)) == pytest.approx(float(_soft_dice(p, hard)), abs=1e-5)


@pytest.mark.parametrize("hard", [False, True])
def test_dml_matches_monai_dice_loss_soft_label(hard):
    from monai.losses import DiceLoss

    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 2, 16, 12, generator=generator) * 2
    target = torch.randint(0, 6, (4, 2, 16, 12), generator=generator) / 5  # soft, values k/5
    if hard:
        target = (target >= 0.5).float()
    # our sums run over the batch and the spatial axes of each task, then tasks are averaged
    oracle = DiceLoss(sigmoid=True, soft_label=True, batch=True)(logits, target)
    assert float(dice_semimetric_loss(logits, target)) == pytest.approx(float(oracle), abs=1e-6)


def test_dml_is_minimised_at_p_equal_g_unlike_soft_dice():
    g = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]).reshape(1, 1, 1, 7)
    at_target = float(dice_semimetric_loss(_logit(g), g))
    assert at_target == pytest.approx(0.0, abs=1e-5)
    generator = torch.Generator().manual_seed(2)
    for _ in range(50):
        other = (g + 0.2 * torch.randn(g.shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
        assert float(dice_semimetric_loss(_logit(other), g)) > at_target
    # soft Dice prefers the thresholded mask to the soft label itself: its minimum is not p = g
    assert float(_soft_dice((g >= 0.5).double(), g)) < float(_soft_dice(g.double(), g))


def test_dml_gradient_descent_recovers_the_soft_target():
    g = torch.tensor([0.1, 0.25, 0.5, 0.8]).reshape(1, 1, 2, 2)
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.05)
    for _ in range(1500):
        optimizer.zero_grad()
        dice_semimetric_loss(logits, g).backward()
        optimizer.step()
    torch.testing.assert_close(torch.sigmoid(logits.detach()), g, atol=0.02, rtol=0)


def test_dml_of_an_empty_batch_is_zero_and_fp32_under_bf16():
    logits = torch.full((2, 1, 4, 4), -30.0, dtype=torch.bfloat16)
    loss = dice_semimetric_loss(logits, torch.zeros(2, 1, 4, 4))
    assert loss.dtype == torch.float32 and float(loss) == pytest.approx(0.0, abs=1e-4)


def test_combined_loss_and_names():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 1, 6, 6, generator=generator)
    g = torch.rand(2, 1, 6, 6, generator=generator)
    ce, dml = soft_cross_entropy(logits, g), dice_semimetric_loss(logits, g)
    assert float(combined_loss(logits, g, 0.5)) == pytest.approx(float(ce + 0.5 * dml), rel=1e-6)
    assert loss_function("ce") is soft_cross_entropy
    assert loss_function("dml") is dice_semimetric_loss
    assert float(loss_function("ce+dml", 2.0)(logits, g)) == pytest.approx(float(ce + 2 * dml), rel=1e-6)
    with pytest.raises(ValueError, match="unknown loss 'dice'"):
        loss_function("dice")
