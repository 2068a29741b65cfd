"""Hand-computed values for every metric and every empty-mask rule (tests/test_metrics_oracle.py
cross-checks against MONAI and direct implementations)."""

import math

import numpy as np
import pytest

from softseg.evaluation import metrics
from softseg.errors import SoftsegError


def row(*pixels, length=8):
    """A 1 x length mask: in a single row every foreground pixel is a border pixel."""
    mask = np.zeros((1, length), dtype=bool)
    mask[0, list(pixels)] = True
    return mask


def test_thresholds_are_exact_tenths():
    assert metrics.THRESHOLDS.tolist() == [k / 10 for k in range(1, 10)]
    assert metrics.THRESHOLDS[2] == 0.3  # linspace would give 0.30000000000000004
    # case_metrics derives the 9 bins from the 99 fine ones: k/10 must equal 10k/100.
    assert metrics.FINE_THRESHOLDS[9::10].tolist() == metrics.THRESHOLDS.tolist()


# --- overlap ---------------------------------------------------------------------------


def test_overlap_hand_computed():
    pred = row(0, 1, 2, 3)
    truth = row(2, 3, 4)
    # tp 2, |P| 4, |T| 3, union 5
    assert metrics.dice(pred, truth) == pytest.approx(4 / 7, abs=1e-15)
    assert metrics.iou(pred, truth) == pytest.approx(2 / 5, abs=1e-15)
    assert metrics.precision(pred, truth) == pytest.approx(2 / 4, abs=1e-15)
    assert metrics.recall(pred, truth) == pytest.approx(2 / 3, abs=1e-15)


def test_overlap_disjoint_is_zero():
    pred, truth = row(0), row(5)
    for fn in (metrics.dice, metrics.iou, metrics.precision, metrics.recall):
        assert fn(pred, truth) == 0.0


@pytest.mark.parametrize("fn", [metrics.dice, metrics.iou, metrics.precision, metrics.recall])
def test_overlap_both_empty_is_one(fn):
    assert fn(row(), row()) == 1.0


def test_overlap_one_empty():
    # empty prediction, non-empty truth: nothing predicted is right -> precision 0, recall 0
    assert metrics.precision(row(), row(1)) == 0.0
    assert metrics.recall(row(), row(1)) == 0.0
    # empty truth, non-empty prediction: recall 0, precision 0
    assert metrics.recall(row(1), row()) == 0.0
    assert metrics.precision(row(1), row()) == 0.0
    for pred, truth in ((row(), row(1)), (row(1), row())):
        assert metrics.dice(pred, truth) == 0.0
        assert metrics.iou(pred, truth) == 0.0


def test_overlap_errors():
    with pytest.raises(SoftsegError, match=r"prediction: expected a bool mask, got dtype float64"):
        metrics.dice(np.zeros((2, 2)), np.zeros((2, 2), bool))
    with pytest.raises(SoftsegError, match=r"prediction shape \(2, 2\) != truth shape \(2, 3\)"):
        metrics.iou(np.zeros((2, 2), bool), np.zeros((2, 3), bool))


# --- borders and HD95 ------------------------------------------------------------------


def test_border_of_square_and_edge():
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    expected = mask.copy()
    expected[2, 2] = False  # the only pixel whose 4 neighbours are all foreground
    assert np.array_equal(metrics.border(mask), expected)
    # Outside the image is background: a full image is all border except its inside.
    full = np.ones((4, 4), bool)
    inner = np.zeros((4, 4), bool)
    inner[1:3, 1:3] = True
    assert np.array_equal(metrics.border(full), full & ~inner)
    # Cross element: a pixel whose diagonal neighbour is missing is still interior.
    plus = np.ones((3, 3), bool)
    plus[0, 0] = False
    assert not metrics.border(plus)[1, 1]


def test_border_3d():
    cube = np.ones((3, 3, 3), bool)
    expected = np.ones((3, 3, 3), bool)
    expected[1, 1, 1] = False
    assert np.array_equal(metrics.border(cube), expected)


def test_hd95_percentile_is_linear_interpolation():
    # distances pred -> truth: 0, 1, 2, 3 -> 95th percentile 0.95 * 3 = 2.85; other way 0
    assert metrics.hd95(row(0, 1, 2, 3), row(0)) == pytest.approx(2.85, abs=1e-12)
    # symmetric: the maximum of the two directions
    assert metrics.hd95(row(0), row(0, 1, 2, 3)) == pytest.approx(2.85, abs=1e-12)


def test_hd95_max_of_directions_not_pooled():
    pred = row(*range(21), length=21)  # distances to pixel 0: 0 .. 20 -> p95 = 19
    truth = row(0, length=21)  # distance 0 to pred
    assert metrics.hd95(pred, truth) == pytest.approx(19.0, abs=1e-12)
    # pooled (medpy) would be the p95 of 0..20 plus one more 0: 0.95*21 -> 18.95


def test_hd95_spacing_scales_axis():
    assert metrics.hd95(row(0, 1, 2, 3), row(0), spacing=(5.0, 2.0)) == pytest.approx(5.7)
    # two single pixels one row apart, spacing 3 along rows
    a = np.zeros((2, 2), bool)
    b = np.zeros((2, 2), bool)
    a[0, 0], b[1, 1] = True, True
    assert metrics.hd95(a, b, spacing=(3.0, 4.0)) == pytest.approx(5.0, abs=1e-12)


def test_hd95_3d():
    a = np.zeros((2, 1, 4), bool)
    b = np.zeros((2, 1, 4), bool)
    a[0, 0, 0] = True
    b[1, 0, 3] = True
    assert metrics.hd95(a, b, spacing=(2.0, 1.0, 1.0)) == pytest.approx(math.sqrt(4 + 9))


def test_hd95_empty_rules():
    assert metrics.hd95(row(), row()) == 0.0
    assert math.isnan(metrics.hd95(row(), row(2)))
    assert math.isnan(metrics.hd95(row(2), row()))
    assert metrics.hd95(row(1, 2), row(1, 2)) == 0.0


def test_hd95_status():
    status = metrics.hd95_status(np.array([0, 0, 3, 2]), np.array([0, 1, 0, 5]))
    assert status.tolist() == ["both_empty", "one_empty", "one_empty", "ok"]


def test_hd95_errors():
    with pytest.raises(SoftsegError, match=r"spacing \(1.0,\): expected 2 positive finite values"):
        metrics.hd95(row(1), row(1), spacing=(1.0,))
    with pytest.raises(SoftsegError, match=r"spacing \(1.0, 0.0\): expected 2 positive"):
        metrics.hd95(row(1), row(1), spacing=(1.0, 0.0))


# --- QUBIQ score and Table 2 -----------------------------------------------------------

SOFT6 = np.array([[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]])
PROB6 = np.array([[0.5, 0.5, 0.5, 0.5, 0.0, 0.0]])


def test_qubiq_score_hand_computed():
    # t=0.1,0.2: pred {0,1,2,3}, gt {1..5}: tp 3, dice 6/9
    # t=0.3,0.4: gt {2..5}: tp 2, dice 4/8
    # t=0.5: pred {0..3}, gt {3,4,5}: tp 1, dice 2/7
    # t=0.6: pred empty, gt {3,4,5}: 0 ; t=0.7,0.8: gt {4,5}: 0 ; t=0.9: gt {5}: 0
    expected = (2 * 6 / 9 + 2 * 4 / 8 + 2 / 7) / 9
    assert metrics.qubiq_score(PROB6, SOFT6) == pytest.approx(expected, abs=1e-12)


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
    assert metrics.qubiq_score(prob, soft) == 1.0
    prob = np.full((2, 2), 0.65, dtype=np.float32)
    # t=0.7: prediction empty, soft label full -> 0; all others 1.
    assert metrics.qubiq_score(prob, soft) == pytest.approx(8 / 9)


def test_qubiq_score_3d():
    soft = np.zeros((2, 2, 2))
    soft[0] = 1.0
    prob = np.zeros((2, 2, 2))
    prob[0, 0] = 1.0
    assert metrics.qubiq_score(prob, soft) == pytest.approx(4 / 6)


def test_map_errors():
    with pytest.raises(SoftsegError, match=r"prediction shape \(2, 2\) != soft label shape \(3, 3\)"):
        metrics.qubiq_score(np.zeros((2, 2)), np.zeros((3, 3)))
    with pytest.raises(SoftsegError, match=r"prediction: expected values in \[0, 1\].*max 2.0"):
        metrics.qubiq_score(np.full((2, 2), 2.0), np.zeros((2, 2)))
    with pytest.raises(SoftsegError, match=r"soft label: expected values in \[0, 1\] without NaN"):
        metrics.table2(np.zeros((2, 2)), np.full((2, 2), np.nan))
    with pytest.raises(SoftsegError, match=r"prediction: expected a non-empty array"):
        metrics.calibration(np.zeros((0, 2)), np.zeros((0, 2)))


def test_table2_hand_computed():
    table = metrics.table2(PROB6, SOFT6)
    assert table["dice"].tolist() == pytest.approx([6 / 9, 6 / 9, 0.5, 0.5, 2 / 7, 0, 0, 0, 0])
    assert table["precision"].tolist() == pytest.approx([3 / 4, 3 / 4, 2 / 4, 2 / 4, 1 / 4, 0, 0, 0, 0])
    assert table["recall"].tolist() == pytest.approx([3 / 5, 3 / 5, 2 / 4, 2 / 4, 1 / 3, 0, 0, 0, 0])
    assert table["gt_area_frac"].tolist() == pytest.approx([5 / 6, 5 / 6, 4 / 6, 4 / 6, 3 / 6, 3 / 6, 2 / 6, 2 / 6, 1 / 6])
    assert table["hd95_status"].tolist() == ["ok"] * 5 + ["one_empty"] * 4
    # t=0.1: pred {0..3}, gt {1..5}: pred->gt 1,0,0,0 (p95 0.85); gt->pred 0,0,0,1,2 (p95 1.8)
    # t=0.3: pred {0..3}, gt {2..5}: pred->gt 2,1,0,0 -> p95 1.85; gt->pred 0,0,1,2 -> 1.85
    # t=0.5: pred {0..3}, gt {3,4,5}: pred->gt 3,2,1,0 -> 2.85; gt->pred 0,1,2 -> 1.9
    assert table["hd95"][:5].tolist() == pytest.approx([1.8, 1.8, 1.85, 1.85, 2.85], abs=1e-12)
    assert np.isnan(table["hd95"][5:]).all()


def test_table2_both_empty_rows():
    table = metrics.table2(np.zeros((3, 3)), np.zeros((3, 3)))
    assert table["hd95_status"].tolist() == ["both_empty"] * 9
    assert table["hd95"].tolist() == [0.0] * 9
    for key in ("dice", "precision", "recall", "iou"):
        assert table[key].tolist() == [1.0] * 9
    assert table["gt_area_frac"].tolist() == [0.0] * 9


def test_threshold_curves_hand_computed():
    curves = metrics.threshold_curves(PROB6, SOFT6, thresholds=[0.25, 0.5, 0.55])
    assert curves["tp"].tolist() == [2, 1, 0]
    assert curves["precision"].tolist() == pytest.approx([0.5, 0.25, 0.0])
    assert curves["recall"].tolist() == pytest.approx([0.5, 1 / 3, 0.0])
    with pytest.raises(SoftsegError, match=r"expected a non-empty increasing 1-D sequence"):
        metrics.threshold_curves(PROB6, SOFT6, thresholds=[0.5, 0.4])


# --- Table 3 ----------------------------------------------------------------------------


def test_rater_metrics_hand_computed():
    raters = np.concatenate([row(0, 1, length=4), row(1, 2, length=4)])[:, None, :]
    prob = np.array([[0.9, 0.5, 0.49, 0.0]])  # >= 0.5: {0, 1}
    result = metrics.rater_metrics(prob, raters)
    # d(y1, ŷ) = 0, d(y2, ŷ) = 1 - 1/3; diversity d(y1, y2) = 2/3
    assert result["pred_rater_dist"] == pytest.approx(1 / 3)
    assert result["rater_diversity"] == pytest.approx(2 / 3)
    assert result["ged2"] == pytest.approx(0.0, abs=1e-15)
    assert result["expected_dice"] == pytest.approx((1 + 0.5) / 2)


def test_rater_metrics_three_raters_and_empty():
    raters = np.stack([row(), row(0), row(0, 1)])  # (3, 1, 8)
    prob = np.zeros((1, 8))
    result = metrics.rater_metrics(prob, raters)
    # ŷ empty: d(∅, ∅) = 0, d(∅, {0}) = 1, d(∅, {0,1}) = 1 -> 2/3
    assert result["pred_rater_dist"] == pytest.approx(2 / 3)
    # pairs: (∅,{0}) 1, (∅,{0,1}) 1, ({0},{0,1}) 1/2 -> 2.5/3
    assert result["rater_diversity"] == pytest.approx(2.5 / 3)
    assert result["ged2"] == pytest.approx(4 / 3 - 2.5 / 3)
    # Dice(∅, ∅) = 1, others 0
    assert result["expected_dice"] == pytest.approx(1 / 3)


def test_rater_metrics_single_rater_has_no_diversity():
    result = metrics.rater_metrics(np.ones((1, 8)), row(0)[None])
    assert result["pred_rater_dist"] == pytest.approx(7 / 8)
    assert math.isnan(result["rater_diversity"]) and math.isnan(result["ged2"])


def test_rater_metrics_errors():
    with pytest.raises(SoftsegError, match=r"rater masks shape \(2, 8\): expected \(R, \*\(1, 8\)\)"):
        metrics.rater_metrics(np.zeros((1, 8)), np.zeros((2, 8), bool))
    with pytest.raises(SoftsegError, match=r"rater masks: expected a bool mask, got dtype uint8"):
        metrics.rater_metrics(np.zeros((1, 8)), np.zeros((2, 1, 8), np.uint8))


# --- calibration ------------------------------------------------------------------------


def test_calibration_hand_computed():
    prob = np.array([0.05, 0.05, 0.95, 0.55])
    soft = np.array([0.0, 0.5, 1.0, 0.5])
    result = metrics.calibration(prob, soft)
    # bin 0: |0.05 - 0.25| * 2, bin 9: |0.95 - 1| * 1, bin 5: |0.55 - 0.5| * 1, over 4 pixels
    assert result["ece"] == pytest.approx((0.4 + 0.05 + 0.05) / 4, abs=1e-12)
    assert result["brier"] == pytest.approx((0.0025 + 0.2025 + 0.0025 + 0.0025) / 4, abs=1e-12)
    rel = result["reliability"]
    assert rel["count"].tolist() == [2, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert rel["mean_soft"][0] == pytest.approx(0.25)
    assert np.isnan(rel["mean_pred"][1])
    assert rel["bin_edges"][0] == 0.0 and rel["bin_edges"][-1] == 1.0


def test_calibration_bin_edges():
    # p = 0.1 opens bin 1, p = 1.0 belongs to the last bin; perfect calibration -> 0
    prob = np.array([0.1, 1.0, 0.0])
    result = metrics.calibration(prob, prob.copy(), n_bins=10)
    assert result["reliability"]["count"].tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert result["ece"] == 0.0 and result["brier"] == 0.0
    two = metrics.calibration(np.array([0.25, 0.5, 0.75]), np.array([0.0, 0.0, 1.0]), n_bins=2)
    # bin 0: {0.25} vs 0 ; bin 1: {0.5, 0.75} mean 0.625 vs 0.5
    assert two["reliability"]["count"].tolist() == [1, 2]
    assert two["ece"] == pytest.approx((0.25 + 2 * 0.125) / 3)
    with pytest.raises(SoftsegError, match=r"n_bins 0: expected a positive integer"):
        metrics.calibration(prob, prob, n_bins=0)


# --- everything at once -----------------------------------------------------------------


def test_case_metrics_agrees_with_the_single_functions():
    rng = np.random.default_rng(3)
    raters = rng.random((4, 12, 10)) < np.linspace(0.1, 0.9, 10)
    soft = raters.mean(axis=0).astype(np.float32)
    prob = np.clip(soft + rng.normal(0, 0.2, soft.shape), 0, 1).astype(np.float32)
    result = metrics.case_metrics(prob, soft, raters, spacing=(1.0, 2.0))
    table = metrics.table2(prob, soft)
    for key in ("dice", "precision", "recall", "gt_area_frac"):
        assert result["table2"][key].tolist() == table[key].tolist()
    np.testing.assert_array_equal(result["table2"]["hd95"], table["hd95"])
    np.testing.assert_array_equal(
        result["table2"]["hd95_mm"], metrics.table2(prob, soft, spacing=(1.0, 2.0))["hd95"]
    )
    assert result["qubiq"] == metrics.qubiq_score(prob, soft)
    assert result["table3"] == metrics.rater_metrics(prob, raters)
    calib = metrics.calibration(prob, soft)
    assert result["calibration"]["ece"] == pytest.approx(calib["ece"], abs=1e-15)
    assert result["calibration"]["brier"] == calib["brier"]
    curves = metrics.threshold_curves(prob, soft)
    for key in ("dice", "precision", "recall"):
        assert result["curves"][key].tolist() == curves[key].tolist()
        # the fine curve passes through Table 2 at every tenth
        assert result["curves"][key][9::10].tolist() == table[key].tolist()


def test_case_metrics_without_raters_or_spacing():
    result = metrics.case_metrics(PROB6, SOFT6)
    assert result["table3"] is None
    assert result["table2"]["hd95_mm"] is None
    same = metrics.case_metrics(PROB6, SOFT6, spacing=(1.0, 1.0))
    np.testing.assert_array_equal(same["table2"]["hd95_mm"], same["table2"]["hd95"])
