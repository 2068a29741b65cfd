"""Hand-computed values for every metric and every empty-mask rule."""

import numpy as np
import pytest

from softseg import metrics
from softseg.errors import SoftsegError


def test_thresholds_are_exact_tenths():
    assert metrics.THRESHOLDS.tolist() == [k / 10 for k in range(1, 10)]
    assert metrics.THRESHOLDS[2] == 0.3  # linspace would give 0.30000000000000004


def test_qubiq_score_hand_computed():
    # soft: one pixel per level; prob fixed at 0.5 on the first four pixels.
    soft = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    prob = np.array([0.5, 0.5, 0.5, 0.5, 0.0, 0.0])
    # t=0.1,0.2: pred {0,1,2,3}, gt {1..5}: tp 3, dice 6/9
    # t=0.3,0.4: gt {2..5}: tp 2, dice 4/8
    # t=0.5: pred {0..3}, gt {3,4,5}: tp 1, dice 2/7
    # t=0.6: pred empty, gt {3,4,5}: 0 ; t=0.7,0.8: gt {4,5}: 0 ; t=0.9: gt {5}: 0
    expected = (2 * 6 / 9 + 2 * 4 / 8 + 2 / 7) / 9
    assert metrics.qubiq_score(prob, soft) == pytest.approx(expected, abs=1e-12)


def test_qubiq_score_both_empty_counts_as_one():
    soft = np.zeros((4, 4), np.float32)
    soft[0, 0] = 0.3
    prob = np.zeros((4, 4), np.float32)
    prob[0, 0] = 0.3
    # t=0.1..0.3: identical single-pixel masks (Dice 1); t=0.4..0.9: both empty (Dice 1).
    assert metrics.qubiq_score(prob, soft) == 1.0
    assert metrics.qubiq_score(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0


def test_qubiq_score_float32_ties_at_seven_tenths():
    # 7 of 10 raters: float32(0.7) < 0.7 as float64, but the tie must count as >= 0.7.
    soft = np.full((2, 2), 7 / 10, dtype=np.float32)
    prob = np.full((2, 2), 0.7, dtype=np.float32)
    # t=0.1..0.7: both full (Dice 1); t=0.8, 0.9: both empty (Dice 1).
    assert metrics.qubiq_score(prob, soft) == 1.0
    prob = np.full((2, 2), 0.65, dtype=np.float32)
    # t=0.7: prediction empty, soft label full -> 0; all others 1.
    assert metrics.qubiq_score(prob, soft) == pytest.approx(8 / 9)


def test_qubiq_score_3d():
    soft = np.zeros((2, 2, 2))
    soft[0] = 1.0
    prob = np.zeros((2, 2, 2))
    prob[0, 0] = 1.0
    # every threshold: pred 2 voxels inside gt of 4 voxels -> dice 4/6
    assert metrics.qubiq_score(prob, soft) == pytest.approx(4 / 6)


def test_qubiq_score_errors():
    with pytest.raises(SoftsegError, match=r"prediction shape \(2, 2\) != soft label shape \(3, 3\)"):
        metrics.qubiq_score(np.zeros((2, 2)), np.zeros((3, 3)))
    with pytest.raises(SoftsegError, match=r"prediction: expected values in \[0, 1\].*max 2.0"):
        metrics.qubiq_score(np.full((2, 2), 2.0), np.zeros((2, 2)))
    with pytest.raises(SoftsegError, match=r"soft label: expected values in \[0, 1\] without NaN"):
        metrics.qubiq_score(np.zeros((2, 2)), np.full((2, 2), np.nan))
