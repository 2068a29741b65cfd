"""Level-set hypotheses and the LIDC benchmark's scores (D²_GED with self-terms, diversity,
HM-IoU): hand-computed cases, empty masks, and a plain pure-Python reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from softseg.errors import SoftsegError
from softseg.evaluation import hypotheses as hyp


def _iou_plain(a, b) -> float:
    sa = {i for i, v in enumerate(np.ravel(a)) if v}
    sb = {i for i, v in enumerate(np.ravel(b)) if v}
    return 1.0 if not sa | sb else len(sa & sb) / len(sa | sb)


def _ged_plain(samples, raters) -> float:
    d = lambda a, b: 1.0 - _iou_plain(a, b)  # noqa: E731
    cross = sum(d(s, y) for s in samples for y in raters) / (len(samples) * len(raters))
    ss = sum(d(s, t) for s in samples for t in samples) / len(samples) ** 2
    yy = sum(d(y, z) for y in raters for z in raters) / len(raters) ** 2
    return 2 * cross - ss - yy


def _hm_plain(samples, raters) -> float:
    """Best mean IoU over every one-to-one pairing of the sets replicated to lcm(N, M)."""
    size = math.lcm(len(samples), len(raters))
    s = [samples[i % len(samples)] for i in range(size)]
    r = [raters[i % len(raters)] for i in range(size)]
    return max(sum(_iou_plain(s[i], r[p[i]]) for i in range(size)) / size
               for p in itertools.permutations(range(size)))


def test_stratified_levels_are_the_midpoints_and_one_level_is_one_half():
    np.testing.assert_allclose(hyp.levels(4), [0.125, 0.375, 0.625, 0.875])
    assert hyp.levels(1).tolist() == [0.5]


def test_uniform_levels_are_seeded_sorted_and_inside_the_unit_interval():
    a, b = hyp.levels(50, "uniform", seed=3), hyp.levels(50, "uniform", seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, hyp.levels(50, "uniform", seed=4))
    assert np.all(np.diff(a) >= 0) and a.min() > 0 and a.max() < 1


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_levels_refuse_a_count_below_one_or_not_an_integer(bad):
    with pytest.raises(SoftsegError, match="count of at least 1"):
        hyp.levels(bad)


def test_levels_refuse_an_unknown_scheme():
    with pytest.raises(SoftsegError, match="stratified, uniform"):
        hyp.levels(3, "sobol")


def test_level_sets_are_nested_and_their_marginals_equal_the_map():
    rng = np.random.default_rng(0)
    prob = rng.uniform(0, 1, (12, 9)).astype(np.float32)
    n = 400
    masks = hyp.level_set_masks(prob, n)
    assert masks.shape == (n, 12, 9) and masks.dtype == bool
    assert np.all(masks[1:] <= masks[:-1])  # hypothesis k+1 inside hypothesis k
    # stratified levels: the share of hypotheses holding a pixel is p to within 1/n
    assert np.abs(masks.mean(axis=0) - prob).max() <= 1.0 / n + 1e-6
    # seeded uniform levels: p within Monte Carlo error (5 standard errors)
    drawn = hyp.level_set_masks(prob, 20_000, "uniform", seed=1).mean(axis=0)
    se = np.sqrt(prob * (1 - prob) / 20_000) + 1e-4
    assert np.all(np.abs(drawn - prob) <= 5 * se)


def test_one_stratified_hypothesis_is_the_map_at_one_half():
    prob = np.array([[0.2, 0.5], [0.49, 0.9]], dtype=np.float32)
    np.testing.assert_array_equal(hyp.level_set_masks(prob, 1)[0], prob >= 0.5)


def test_class_level_sets_have_the_class_marginals_and_reduce_to_the_binary_case():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet([1, 1, 1], size=(7, 5)).transpose(2, 0, 1)  # (3, 7, 5)
    n = 500
    labels = hyp.level_set_labels(probs, n)
    assert labels.shape == (n, 7, 5) and labels.max() <= 2
    for c in range(3):
        assert np.abs((labels == c).mean(axis=0) - probs[c]).max() <= 2.0 / n
    # hand case: classes (0.2, 0.3, 0.5) from the last class down: u <= 0.5 -> 2, <= 0.8 -> 1, else 0
    one = np.array([0.2, 0.3, 0.5]).reshape(3, 1, 1)
    assert hyp.level_set_labels(one, 4)[:, 0, 0].tolist() == [2, 2, 1, 0]  # u = .125 .375 .625 .875
    p = rng.uniform(0, 1, (6, 6))
    np.testing.assert_array_equal(hyp.level_set_labels(np.stack([1 - p, p]), 9) == 1,
                                  hyp.level_set_masks(p, 9))


def test_iou_distances_by_hand_with_empty_masks():
    a = np.zeros((3, 2, 3), dtype=bool)
    a[0, 0, :2] = True          # {0, 1}
    a[1, 0, 1:] = True          # {1, 2}
    b = np.zeros((2, 2, 3), dtype=bool)
    b[0, 0, :2] = True          # {0, 1}
    d = hyp.iou_distances(a, b)  # a[2] and b[1] empty
    np.testing.assert_allclose(d, [[0.0, 1.0], [1 - 1 / 3, 1.0], [1.0, 0.0]])


def test_scores_by_hand_one_sample_against_a_rater_and_an_empty_vote():
    y = np.zeros((2, 4, 4), dtype=bool)
    y[0, 1:3, 1:3] = True  # the second radiologist did not mark the nodule
    s = y[:1].copy()
    # cross (0 + 1)/2, samples' diversity 0, raters' 2/4 over all four pairs
    assert hyp.ged_terms(s, y) == {"ged": 0.5, "cross": 0.5, "diversity": 0.0, "rater_diversity": 0.5}
    assert hyp.hungarian_iou(s, y) == 0.5  # tiled to 2: one sample matched at IoU 1, the copy at 0
    empty = np.zeros((3, 4, 4), dtype=bool)
    assert hyp.sampled_scores(empty, empty[:2]) == {"ged": 0.0, "diversity": 0.0, "hmiou": 1.0}


@pytest.mark.parametrize("n,m", [(4, 2), (3, 2), (2, 3), (1, 4)])
def test_scores_match_a_plain_reference(n, m):
    rng = np.random.default_rng(10 * n + m)
    samples = rng.uniform(size=(n, 5, 5)) < 0.4
    raters = rng.uniform(size=(m, 5, 5)) < 0.4
    samples[0] = False  # an empty hypothesis among them
    scores = hyp.sampled_scores(samples, raters)
    assert scores["ged"] == pytest.approx(_ged_plain(samples, raters), abs=1e-12)
    assert scores["hmiou"] == pytest.approx(_hm_plain(samples, raters), abs=1e-12)
    d_ss = np.mean([[1 - _iou_plain(a, b) for b in samples] for a in samples])
    assert scores["diversity"] == pytest.approx(d_ss, abs=1e-12)


def test_intersections_in_blocks_equal_one_block(monkeypatch):
    rng = np.random.default_rng(5)
    a, b = rng.uniform(size=(6, 33, 31)) < 0.5, rng.uniform(size=(4, 33, 31)) < 0.3
    whole = hyp.iou_distances(a, b)
    monkeypatch.setattr(hyp, "_BLOCK", 64)
    np.testing.assert_array_equal(hyp.iou_distances(a, b), whole)


def test_masks_must_be_binary_and_cover_the_same_pixels():
    with pytest.raises(SoftsegError, match="binary masks"):
        hyp.iou_distances(np.full((1, 2, 2), 0.5), np.zeros((1, 2, 2), bool))
    with pytest.raises(SoftsegError, match="different pixels"):
        hyp.iou_distances(np.zeros((1, 2, 2), bool), np.zeros((1, 3, 2), bool))
