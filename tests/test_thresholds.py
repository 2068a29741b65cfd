"""Operating-threshold picker: hand-computed cases and a brute-force search as the oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest

from softseg.errors import SoftsegError
from softseg.thresholds import (
    THRESHOLD_GRID,
    OperatingPoint,
    format_tradeoff,
    pick_threshold,
    pooled_counts,
    read_threshold_file,
    tradeoff,
    write_threshold_file,
)


def brute_force_counts(probs, refs, thresholds):
    """Pixel by pixel, threshold by threshold: no sorting, no vectorisation."""
    rows = []
    for t in thresholds:
        tp = fp = fn = 0
        for prob, ref in zip(probs, refs):
            for p, r in zip(np.ravel(prob).tolist(), np.ravel(ref).tolist()):
                predicted = p >= t
                tp += predicted and r
                fp += predicted and not r
                fn += (not predicted) and r
        rows.append((tp, fp, fn))
    return np.array(rows).T


def brute_force_pick(probs, refs, thresholds, criterion, target):
    """Enumerate every threshold with plain Python and pick by the documented rule."""
    best = None  # (score, threshold)
    for t in thresholds:
        tp, fp, fn = brute_force_counts(probs, refs, [t])[:, 0]
        precision = tp / (tp + fp) if tp + fp else None
        recall = tp / (tp + fn)
        f1 = 2 * tp / (2 * tp + fp + fn)
        if criterion == "target_recall":
            ok, score = recall >= target, precision
        elif criterion == "target_precision":
            ok, score = precision is not None and precision >= target, recall
        else:
            ok, score = True, f1
        if not ok:
            continue
        score = -1.0 if score is None else score
        if best is None or score >= best[0]:  # >= : ties move to the later, higher threshold
            best = (score, t)
    return None if best is None else best[1]


def test_hand_computed_counts_and_measures():
    # one case, 6 pixels; reference = first three
    prob = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.05])
    ref = np.array([True, True, True, False, False, False])
    table = tradeoff([prob], [ref], np.array([0.1, 0.5, 0.6, 0.8, 0.95]))
    # t=0.1: predicted {0.9,0.6,0.2,0.7,0.1} -> tp 3, fp 2, fn 0
    # t=0.5: {0.9,0.6,0.7} -> tp 2, fp 1, fn 1 ; t=0.6 same (0.6 >= 0.6)
    # t=0.8: {0.9} -> tp 1 fp 0 fn 2 ; t=0.95: nothing -> precision undefined
    np.testing.assert_array_equal(table.tp, [3, 2, 2, 1, 0])
    np.testing.assert_array_equal(table.fp, [2, 1, 1, 0, 0])
    np.testing.assert_array_equal(table.fn, [0, 1, 1, 2, 3])
    np.testing.assert_allclose(table.precision[:4], [3 / 5, 2 / 3, 2 / 3, 1.0])
    assert np.isnan(table.precision[4])
    np.testing.assert_allclose(table.recall, [1.0, 2 / 3, 2 / 3, 1 / 3, 0.0])
    np.testing.assert_allclose(table.f1, [6 / 8, 4 / 6, 4 / 6, 2 / 4, 0.0])


def test_counts_are_pooled_over_cases_not_averaged():
    big = (np.full(100, 0.9), np.ones(100, bool))  # all found
    small = (np.array([0.1, 0.2]), np.array([True, True]))  # none found at 0.5
    tp, fp, fn = pooled_counts([big[0], small[0]], [big[1], small[1]], np.array([0.5]))
    assert (tp[0], fp[0], fn[0]) == (100, 0, 2)
    table = tradeoff([big[0], small[0]], [big[1], small[1]], np.array([0.5]))
    assert table.recall[0] == pytest.approx(100 / 102)  # a case average would give 0.5


def test_exact_hundredths_tie():
    # a rater fraction 3/10 must count as >= 0.3 (np.linspace would say 0.30000000000000004)
    table = tradeoff([np.array([3 / 10])], [np.array([True])])
    index = int(np.flatnonzero(np.isclose(THRESHOLD_GRID, 0.3))[0])
    assert THRESHOLD_GRID[index] == 0.3
    assert table.tp[index] == 1 and table.tp[index + 1] == 0


def test_float32_maps_compare_at_their_own_precision():
    # float32 0.7 is 0.69999999; like metrics.py it still counts as >= 0.7
    prob = np.array([0.7, 0.69], dtype=np.float32)
    tp, _, fn = pooled_counts([prob], [np.array([True, True])], np.array([0.7]))
    assert (tp[0], fn[0]) == (1, 1)


@pytest.mark.parametrize("seed", range(6))
def test_counts_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    shapes = [(7, 5), (4, 9), (3, 3, 2)]
    # values on the grid and off it, to exercise exact ties
    probs = [np.round(rng.random(s), 2 if seed % 2 else 6) for s in shapes]
    refs = [rng.random(s) < 0.4 for s in shapes]
    thresholds = THRESHOLD_GRID[::7]
    expected = brute_force_counts(probs, refs, thresholds)
    got = np.stack(pooled_counts(probs, refs, thresholds))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(
    "criterion,target",
    [("target_recall", 0.8), ("target_recall", 0.5), ("target_precision", 0.7),
     ("target_precision", 0.9), ("max_f1", None)],
)
def test_pick_matches_brute_force(seed, criterion, target):
    rng = np.random.default_rng(100 + seed)
    # a noisy but informative model: probabilities correlate with the reference
    refs = [rng.random((6, 6)) < 0.35 for _ in range(3)]
    probs = [np.clip(np.round(0.55 * r + 0.45 * rng.random(r.shape), 2), 0, 1) for r in refs]
    thresholds = THRESHOLD_GRID[::3]
    expected = brute_force_pick(probs, refs, thresholds, criterion, target)
    table = tradeoff(probs, refs, thresholds)
    if expected is None:
        with pytest.raises(SoftsegError, match="best achievable"):
            pick_threshold(table, criterion, target)
        return
    point = pick_threshold(table, criterion, target)
    assert point.threshold == expected
    i = int(np.flatnonzero(thresholds == expected)[0])
    assert point.recall == table.recall[i] and point.f1 == table.f1[i]


def test_target_recall_hand_built():
    # reference pixels have p = 0.9, 0.7, 0.4, 0.3; background 0.8, 0.35, 0.1
    prob = np.array([0.9, 0.7, 0.4, 0.3, 0.8, 0.35, 0.1])
    ref = np.array([1, 1, 1, 1, 0, 0, 0], bool)
    table = tradeoff([prob], [ref])
    # recall >= 0.75 needs t <= 0.4; at t in (0.35, 0.4]: tp 3 fp 1 -> precision 0.75
    # at t <= 0.35 precision drops (fp 2): the best is t = 0.4 (highest of the tied 0.36..0.40)
    point = pick_threshold(table, "target_recall", 0.75)
    assert point == OperatingPoint("target_recall", 0.75, 0.4, 0.75, 0.75, 0.75)
    # precision >= 1.0 only where 0.8 is excluded: t in (0.8, 0.9] -> recall 0.25, t = 0.9
    point = pick_threshold(table, "target_precision", 1.0)
    assert (point.threshold, point.recall, point.precision) == (0.9, 0.25, 1.0)


def test_max_f1_ties_go_to_the_higher_threshold():
    prob = np.array([0.6, 0.2])
    ref = np.array([True, False])
    table = tradeoff([prob], [ref])
    # F1 = 1 for every t in (0.2, 0.6]: the picker takes 0.6
    assert pick_threshold(table, "max_f1").threshold == 0.6


def test_unreachable_recall_names_the_best_achievable():
    # two reference pixels score 0: recall never exceeds 1/3, reached up to t = 0.5
    prob = np.array([0.0, 0.0, 0.5])
    ref = np.array([True, True, True])
    table = tradeoff([prob], [ref])
    with pytest.raises(SoftsegError, match=r"best achievable is recall 0\.3333 at threshold 0\.5;"):
        pick_threshold(table, "target_recall", 0.9)


def test_max_f1_without_any_true_positive_is_an_error():
    table = tradeoff([np.array([0.0, 0.9])], [np.array([True, False])])
    with pytest.raises(SoftsegError, match="F1 is 0 at every threshold"):
        pick_threshold(table, "max_f1")


def test_unreachable_precision_is_an_error_not_a_fallback():
    # background always scores higher than foreground: precision peaks at 0.5 (all predicted)
    prob = np.array([0.2, 0.3, 0.9, 0.8])
    ref = np.array([True, True, False, False])
    table = tradeoff([prob], [ref])
    with pytest.raises(
        SoftsegError,
        match=r"no threshold in 0\.01\.\.0\.99 reaches precision 0\.6; the best achievable is "
        r"precision 0\.5000 at threshold 0\.2;",
    ):
        pick_threshold(table, "target_precision", 0.6)


@pytest.mark.parametrize(
    "criterion,target,message",
    [("target_recall", None, r"must be in \(0, 1\]"),
     ("target_precision", 1.5, r"must be in \(0, 1\], got 1\.5"),
     ("target_recall", 0.0, r"must be in \(0, 1\]"),
     ("max_f1", 0.5, "takes no target"),
     ("best", None, "unknown criterion 'best'")],
)
def test_bad_requests(criterion, target, message):
    table = tradeoff([np.array([0.5])], [np.array([True])])
    with pytest.raises(SoftsegError, match=message):
        pick_threshold(table, criterion, target)


def test_bad_inputs():
    with pytest.raises(SoftsegError, match="reference masks of all 1 cases are empty"):
        tradeoff([np.array([0.5, 0.2])], [np.array([False, False])])
    with pytest.raises(SoftsegError, match=r"map 0: prediction shape \(2,\) != reference"):
        tradeoff([np.array([0.5, 0.2])], [np.array([True])])
    with pytest.raises(SoftsegError, match="2 probability maps but 1 reference"):
        pooled_counts([np.zeros(1), np.zeros(1)], [np.ones(1, bool)])


def test_format_tradeoff_marks_the_choice():
    table = tradeoff([np.array([0.9, 0.42, 0.1])], [np.array([True, True, False])])
    text = format_tradeoff(table, chosen=0.42)
    lines = text.splitlines()
    assert lines[0].split() == ["threshold", "precision", "recall", "F1"]
    chosen = [line for line in lines if "chosen" in line]
    assert len(chosen) == 1 and chosen[0].split()[:4] == ["0.42", "1.0000", "1.0000", "1.0000"]
    # every 5th threshold is listed, and "n/a" where nothing is predicted
    assert any(line.split()[:2] == ["0.95", "n/a"] for line in lines)


def test_threshold_file_round_trip_and_refusal(tmp_path):
    assert read_threshold_file(tmp_path) is None
    payload = {"criterion": "max_f1", "tasks": {"task01": {"threshold": 0.42}}}
    path = write_threshold_file(tmp_path, payload)
    assert json.loads(path.read_text()) == payload
    assert read_threshold_file(tmp_path) == payload
    with pytest.raises(SoftsegError, match=r"already holds .*task01 0\.42.*--overwrite"):
        write_threshold_file(tmp_path, {"tasks": {"task01": {"threshold": 0.5}}})
    write_threshold_file(tmp_path, {"tasks": {"task01": {"threshold": 0.5}}}, overwrite=True)
    assert read_threshold_file(tmp_path)["tasks"]["task01"]["threshold"] == 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["threshold.json"]  # no temp file left


def test_threshold_file_invalid(tmp_path):
    (tmp_path / "threshold.json").write_text("{not json")
    with pytest.raises(SoftsegError, match="cannot read it as JSON"):
        read_threshold_file(tmp_path)
    (tmp_path / "threshold.json").write_text(json.dumps({"tasks": {"task01": {"threshold": 2}}}))
    with pytest.raises(SoftsegError, match=r"expected .*value in \(0, 1\]"):
        read_threshold_file(tmp_path)
