"""Paired statistics of compare: Wilcoxon, bootstrap CI, Holm, pairing and seed averaging,
checked by hand and against scipy."""

import math

import numpy as np
import pytest
from scipy import stats

from softseg.experiments.compare.statistics import (
    bootstrap_ci, better, holm, pair, paired_statistics, seed_average, wilcoxon_test,
)


def test_wilcoxon_exact_p_by_hand():
    # |d| ranks 1..7; the one negative difference has rank 1, so W = min(W+, W-) = 1.
    # Of the 2^7 sign patterns, W- <= 1 for 2 ({} and {1}); two-sided p = 2 * 2 / 128.
    d = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -0.5])
    statistic, p, note = wilcoxon_test(d)
    assert statistic == 1.0 and p == pytest.approx(4 / 128) and note == ""
    # n = 6, negatives of ranks 1 and 2: W- = 3; sign patterns with rank sum <= 3 out of
    # 2^6: {}, {1}, {2}, {3}, {1,2} = 5, so p = 2 * 5 / 64
    statistic, p, _ = wilcoxon_test(np.array([-0.1, -0.2, 0.3, 0.4, 0.5, 0.6]))
    assert statistic == 3.0 and p == pytest.approx(10 / 64)
    oracle = stats.wilcoxon(d)
    assert wilcoxon_test(d)[:2] == pytest.approx((oracle.statistic, oracle.pvalue))


def test_wilcoxon_zeros_and_few_pairs_are_stated():
    statistic, p, note = wilcoxon_test(np.zeros(4))
    assert (statistic, p) == (0.0, 1.0) and "all 4 differences are zero: p = 1" in note
    # five non-zero pairs all positive: the smallest p possible with 5 pairs, 2 / 2^5
    _, p, note = wilcoxon_test(np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5]))
    assert p == pytest.approx(2 / 32)
    assert "1 zero difference(s) dropped" in note and "only 5 non-zero pair(s)" in note
    assert "little power" in note and "0.0625" in note
    assert math.isnan(wilcoxon_test(np.array([]))[1])


def test_bootstrap_percentile_ci_matches_scipy_and_degenerate_cases():
    d = np.array([0.02, -0.01, 0.05, 0.03, 0.00, 0.04, 0.01, 0.06])
    low, high = bootstrap_ci(d, seed=7)
    expected = stats.bootstrap((d,), np.mean, n_resamples=10_000, method="percentile",
                               rng=np.random.default_rng(7)).confidence_interval
    assert (low, high) == pytest.approx((expected.low, expected.high))
    assert low < d.mean() < high and d.min() <= low and high <= d.max()
    assert bootstrap_ci(d, seed=7) == (low, high)  # seeded: the same again
    assert bootstrap_ci(np.full(5, 0.25)) == (0.25, 0.25)
    assert all(math.isnan(x) for x in bootstrap_ci(np.array([0.3])))


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, 2 * 0.03, max(0.06, 1 * 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
    adjusted = holm([0.02, float("nan")])  # NaN does not count in m
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1])
    assert holm([]) == []


def test_pairing_by_case_id_and_seed_average():
    reference = {"case10": 0.5, "case2": 0.7, "case1": 0.9}
    method = {"case1": 1.0, "case10": 0.4, "extra": 0.1, "case2": 0.8}  # other order, an extra case
    cases, values, ref = pair(method, reference)
    assert cases == ("case1", "case2", "case10")  # natural order, cases both have
    assert values.tolist() == [1.0, 0.8, 0.4] and ref.tolist() == [0.9, 0.7, 0.5]
    averaged = seed_average([{"a": 0.8, "b": float("nan")}, {"a": 0.6, "b": 0.2}, {"c": float("nan")}])
    assert averaged == pytest.approx({"a": 0.7, "b": 0.2})  # NaN seeds ignored, no value: no case


def test_better_direction():
    assert better(0.1, higher_is_better=True) == "method"
    assert better(0.1, higher_is_better=False) == "reference"
    assert better(-0.02, higher_is_better=False) == "method"
    assert better(0.0, True) == "neither" and better(float("nan"), True) == ""


def _values(task_values):
    """{case: value} per metric -> CaseValues of one seed with metric 'dice' and 'ece'."""
    return {"t": {c: {"dice": v, "ece": 1 - v} for c, v in task_values.items()}}


def test_paired_statistics_seeds_averaged_holm_across_methods():
    cases = [f"c{i}" for i in range(7)]
    ref = {c: 0.5 for c in cases}
    # method "a": two seeds whose mean is 0.5 + d with d = 1..6, -0.5 (hundredths); "b": equal to ref
    d = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, -0.005]
    seed0 = {c: 0.5 + x + 0.01 for c, x in zip(cases, d)}
    seed1 = {c: 0.5 + x - 0.01 for c, x in zip(reversed(cases), list(reversed(d)))}
    per_seed = {"ref": [_values(ref)], "a": [_values(seed0), _values(seed1)], "b": [_values(ref)]}
    result = paired_statistics(per_seed, "ref", ["t"], metrics=("dice", "ece"), seed=0)
    assert [(r.metric, r.method) for r in result] == [("dice", "a"), ("dice", "b"), ("ece", "a"), ("ece", "b")]
    a_dice, b_dice, a_ece, _ = result
    assert a_dice.mean_difference == pytest.approx(np.mean(d))
    assert a_dice.p_value == pytest.approx(4 / 128)  # the hand-computed p of the first test
    assert b_dice.p_value == 1.0 and "all 7 differences are zero" in b_dice.note
    assert a_dice.p_holm == pytest.approx(2 * 4 / 128)  # two methods: 2 * the smaller p
    assert b_dice.p_holm == 1.0
    # raw p 0.031 < 0.05, but not after Holm over the two methods (0.0625); alone it would be
    assert not a_dice.significant and a_dice.better == "method"
    alone = paired_statistics({"ref": per_seed["ref"], "a": per_seed["a"]}, "ref", ["t"], metrics=("dice",))
    assert alone[0].p_holm == pytest.approx(4 / 128) and alone[0].significant
    assert a_ece.better == "method" and a_ece.mean_difference == pytest.approx(-np.mean(d))  # lower ECE
    row = a_dice.row()
    assert row["n_pairs"] == 7 and row["reference_mean"] == pytest.approx(0.5)
    assert row["higher_is_better"] is True and row["ci_low"] < row["mean_difference"] < row["ci_high"]


def test_paired_statistics_pairs_only_common_cases():
    per_seed = {"ref": [_values({"x": 0.5, "y": 0.6})], "m": [_values({"y": 0.9, "z": 0.1})]}
    (dice,) = paired_statistics(per_seed, "ref", ["t"], metrics=("dice",))
    assert dice.cases == ("y",) and dice.mean_difference == pytest.approx(0.3)
    assert math.isnan(dice.ci_low) and "only 1 non-zero pair" in dice.note
