"""softseg metrics against established implementations on many seeded masks.

HD95 against MONAI's compute_hausdorff_distance(percentile=95) (border = mask XOR erosion,
outside background, exact Euclidean with spacing, max of the two directional percentiles),
within 1e-3 pixel wherever both are defined; Dice / IoU / precision / recall against medpy
and direct NumPy to 1e-9 (and MONAI, which computes in float32, to 1e-6); GED against a direct double loop over its definition.
"""

import warnings

import numpy as np
import pytest
import torch
from medpy.metric import binary as medpy_binary
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou
from scipy import ndimage

from softseg.evaluation import _surface
from softseg.evaluation import metrics


def blob_masks(rng, shape, n, sigma=None, level=None):
    """n smooth, related masks: one blob field plus per-mask boundary jitter."""
    sigma = sigma if sigma is not None else max(shape) / 8
    base = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    base /= base.std()
    masks = []
    for _ in range(n):
        jitter = ndimage.gaussian_filter(rng.standard_normal(shape), sigma / 2)
        jitter /= jitter.std()
        masks.append(base + 0.3 * jitter > (level if level is not None else rng.uniform(-0.5, 1.0)))
    return np.stack(masks)


def monai_hd95(a, b, spacing=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = compute_hausdorff_distance(
            torch.as_tensor(a[None, None]), torch.as_tensor(b[None, None]),
            include_background=True, percentile=95, spacing=spacing,
        )
    return float(value[0, 0])


def mask_pairs():
    rng = np.random.default_rng(2021)
    cases = []
    for i in range(12):  # smooth, realistic, 2D
        shape = tuple(int(s) for s in rng.integers(24, 80, size=2))
        a, b = blob_masks(rng, shape, 2)
        cases.append((f"blob2d-{i}", a, b, tuple(rng.uniform(0.3, 3.0, size=2))))
    for i in range(6):  # noise: dense borders, the distance-transform path
        shape = tuple(int(s) for s in rng.integers(16, 48, size=2))
        cases.append((f"noise2d-{i}", rng.random(shape) < 0.3, rng.random(shape) < 0.5, None))
    for i in range(6):  # 3D, anisotropic
        shape = tuple(int(s) for s in rng.integers(10, 28, size=3))
        a, b = blob_masks(rng, shape, 2)
        cases.append((f"blob3d-{i}", a, b, tuple(rng.uniform(0.5, 4.0, size=3))))
    for i in range(3):  # masks touching the image edge, small objects far apart
        shape = (40, 30)
        a = np.zeros(shape, bool)
        b = np.zeros(shape, bool)
        a[: rng.integers(3, 20), :] = True
        b[rng.integers(25, 39) :, rng.integers(0, 20) :] = True
        b[0, 0] = True
        cases.append((f"edge-{i}", a, b, (1.0, 2.5)))
    return cases


@pytest.mark.parametrize("name, a, b, spacing", mask_pairs(), ids=lambda v: v if isinstance(v, str) else "")
def test_hd95_matches_monai(name, a, b, spacing):
    if not a.any() or not b.any():
        pytest.skip("undefined for an empty mask; covered by the empty-rule tests")
    for step in (None, spacing):
        ours = metrics.hd95(a, b, spacing=step)
        assert ours == pytest.approx(monai_hd95(a, b, spacing=step), abs=1e-3)


@pytest.mark.parametrize("radius", [0.0, 1.0, 3.0])
@pytest.mark.parametrize("fraction", [0.0, np.inf])
def test_hd95_every_distance_path_agrees_with_monai(monkeypatch, radius, fraction):
    # radius: how far the shell search goes before the far-distance fallback (0: none);
    # fraction 0 forces the distance transform for far pixels, inf the k-d tree.
    monkeypatch.setattr(_surface, "_SHELL_RADIUS", radius)
    monkeypatch.setattr(_surface, "_TREE_MAX_BORDER_FRACTION", fraction)
    rng = np.random.default_rng(5)
    for i in range(4):
        a, b = blob_masks(rng, (20, 30, 16), 2, level=0.3)
        if i == 3:
            b = np.roll(b, 7, axis=0)  # far apart: the percentile lies beyond the shells
        spacing = (0.7, 1.3, 3.0)
        assert metrics.hd95(a, b, spacing) == pytest.approx(monai_hd95(a, b, spacing), abs=1e-3)
        assert metrics.hd95(a, b) == pytest.approx(monai_hd95(a, b), abs=1e-3)


def test_hd95_empty_masks_where_monai_is_not_defined():
    empty, some = np.zeros((9, 9), bool), np.zeros((9, 9), bool)
    some[3:5, 3:5] = True
    # MONAI: NaN for two empty masks, not finite (inf distances) for one; ours: 0 for two
    # (SPEC) and NaN for one (undefined, counted by evaluate).
    assert np.isnan(monai_hd95(empty, empty)) and metrics.hd95(empty, empty) == 0.0
    assert not np.isfinite(monai_hd95(some, empty)) and np.isnan(metrics.hd95(some, empty))


def test_table2_matches_monai_per_threshold():
    rng = np.random.default_rng(11)
    for shape, spacing in (((48, 64), (1.0, 1.0)), ((20, 24, 12), (1.5, 0.8, 2.5))):
        raters = blob_masks(rng, shape, 7)
        soft = raters.mean(axis=0).astype(np.float32)
        prob = np.clip(ndimage.gaussian_filter(soft, 1.5) + rng.normal(0, 0.05, shape), 0, 1)
        table = metrics.table2(prob.astype(np.float32), soft, spacing=spacing)
        for k, t in enumerate(metrics.THRESHOLDS):
            p = prob.astype(np.float32) >= np.float32(t)
            g = soft >= np.float32(t)
            pt, gt = torch.as_tensor(p[None, None]), torch.as_tensor(g[None, None])
            tp, n_p, n_g = (p & g).sum(), p.sum(), g.sum()
            if n_p and n_g:
                assert table["dice"][k] == pytest.approx(float(compute_dice(pt, gt)[0, 0]), abs=1e-6)
                assert table["dice"][k] == pytest.approx(2 * tp / (n_p + n_g), abs=1e-9)
                assert table["precision"][k] == pytest.approx(tp / n_p, abs=1e-9)
                assert table["recall"][k] == pytest.approx(tp / n_g, abs=1e-9)
                assert table["hd95"][k] == pytest.approx(monai_hd95(p, g, spacing), abs=1e-3)
            else:
                assert table["hd95_status"][k] != "ok"
            assert table["gt_area_frac"][k] == pytest.approx(n_g / g.size, abs=1e-12)


def test_overlap_matches_monai_and_numpy():
    rng = np.random.default_rng(7)
    for i in range(30):
        shape = (int(rng.integers(5, 60)), int(rng.integers(5, 60)))
        if i % 3 == 2:
            shape += (int(rng.integers(3, 12)),)
        a = rng.random(shape) < rng.uniform(0.01, 0.9)
        b = rng.random(shape) < rng.uniform(0.01, 0.9)
        tp, n_a, n_b = (a & b).sum(), a.sum(), b.sum()
        pa, pb = torch.as_tensor(a[None, None]).double(), torch.as_tensor(b[None, None]).double()
        # MONAI computes in float32: agreement to its precision; NumPy in float64: to 1e-9.
        assert metrics.dice(a, b) == pytest.approx(float(compute_dice(pa, pb)[0, 0]), abs=1e-6)
        assert metrics.iou(a, b) == pytest.approx(float(compute_iou(pa, pb)[0, 0]), abs=1e-6)
        # medpy works in float64: equal to 1e-9
        assert metrics.dice(a, b) == pytest.approx(medpy_binary.dc(a, b), abs=1e-9)
        assert metrics.iou(a, b) == pytest.approx(medpy_binary.jc(a, b), abs=1e-9)
        assert metrics.precision(a, b) == pytest.approx(medpy_binary.precision(a, b), abs=1e-9)
        assert metrics.recall(a, b) == pytest.approx(medpy_binary.recall(a, b), abs=1e-9)
        assert metrics.dice(a, b) == pytest.approx(2 * tp / (n_a + n_b), abs=1e-9)
        assert metrics.iou(a, b) == pytest.approx(tp / (a | b).sum(), abs=1e-9)
        assert metrics.precision(a, b) == pytest.approx(tp / n_a, abs=1e-9)
        assert metrics.recall(a, b) == pytest.approx(tp / n_b, abs=1e-9)


def direct_d(x, y):
    union = (x | y).sum()
    return 0.0 if union == 0 else 1.0 - (x & y).sum() / union


def direct_table3(prob, raters):
    pred = prob >= 0.5
    to_pred = [direct_d(y, pred) for y in raters]
    pairs = [direct_d(raters[i], raters[j]) for i in range(len(raters)) for j in range(len(raters)) if i != j]
    dices = []
    for y in raters:
        total = y.sum() + pred.sum()
        dices.append(1.0 if total == 0 else 2 * (y & pred).sum() / total)
    return {
        "ged2": 2 * np.mean(to_pred) - np.mean(pairs),
        "pred_rater_dist": np.mean(to_pred),
        "rater_diversity": np.mean(pairs),
        "expected_dice": np.mean(dices),
    }


def test_ged_matches_double_loop():
    rng = np.random.default_rng(13)
    for i in range(25):
        shape = ((32, 40), (70, 33), (12, 14, 9))[i % 3]
        n_raters = int(rng.integers(2, 8))
        raters = blob_masks(rng, shape, n_raters) if i % 2 else rng.random((n_raters, *shape)) < 0.2
        if i % 5 == 0:
            raters[0] = False  # an empty rater
        prob = rng.random(shape) * (rng.random() < 0.9)  # sometimes an empty prediction
        ours = metrics.rater_metrics(prob, raters)
        expected = direct_table3(prob, raters)
        for key, value in expected.items():
            assert ours[key] == pytest.approx(value, abs=1e-12), key


def test_pairwise_intersections_matches_direct_counts():
    from softseg.evaluation._overlap import pairwise_intersections

    rng = np.random.default_rng(17)
    for shape in ((1, 1), (7, 9), (65, 3), (10, 11, 13)):
        masks = rng.random((5, *shape)) < 0.4
        expected = np.array([[(m & n).sum() for n in masks] for m in masks])
        np.testing.assert_array_equal(pairwise_intersections(masks), expected)
    np.testing.assert_array_equal(pairwise_intersections(np.zeros((3, 4, 4), bool)), np.zeros((3, 3)))


def test_calibration_matches_direct_loops():
    rng = np.random.default_rng(19)
    prob = rng.random((40, 50))
    prob[0, :5] = [0.0, 0.1, 0.5, 0.9, 1.0]
    soft = rng.integers(0, 8, size=(40, 50)) / 7
    result = metrics.calibration(prob, soft, n_bins=10)
    ece = 0.0
    for i in range(10):
        in_bin = (prob >= i / 10) & ((prob < (i + 1) / 10) if i < 9 else (prob <= 1.0))
        if in_bin.any():
            ece += in_bin.sum() / prob.size * abs(prob[in_bin].mean() - soft[in_bin].mean())
    assert result["ece"] == pytest.approx(ece, abs=1e-12)
    assert result["brier"] == pytest.approx(np.mean((prob - soft) ** 2), abs=1e-12)


def test_curves_match_direct_thresholding():
    rng = np.random.default_rng(23)
    soft = (rng.integers(0, 11, size=(30, 30)) / 10).astype(np.float32)
    prob = rng.random((30, 30)).astype(np.float32)
    curves = metrics.threshold_curves(prob, soft)
    for k, t in enumerate(metrics.FINE_THRESHOLDS):
        p, g = prob >= np.float32(t), soft >= np.float32(t)
        assert curves["dice"][k] == pytest.approx(metrics.dice(p, g), abs=1e-12)
        assert curves["precision"][k] == pytest.approx(metrics.precision(p, g), abs=1e-12)
        assert curves["recall"][k] == pytest.approx(metrics.recall(p, g), abs=1e-12)


def test_qubiq_matches_direct_definition():
    rng = np.random.default_rng(29)
    for n_raters in (3, 6, 7, 10):
        raters = blob_masks(rng, (40, 40), n_raters)
        soft = (raters.sum(axis=0) / n_raters).astype(np.float32)
        prob = np.clip(soft + rng.normal(0, 0.1, soft.shape), 0, 1).astype(np.float32)
        direct = []
        for k in range(1, 10):
            # exact rational comparison: k_raters / A >= k / 10  <=>  10 * k_raters >= k * A
            g = 10 * raters.sum(axis=0) >= k * n_raters
            direct.append(metrics.dice(prob >= np.float32(k / 10), g))
        assert metrics.qubiq_score(prob, soft) == pytest.approx(np.mean(direct), abs=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [10, 100, 7])
def test_threshold_bins_fast_path_equals_binary_search(dtype, n):
    from softseg.evaluation._overlap import threshold_bins

    thresholds = np.arange(1, n) / n
    cast = thresholds.astype(dtype)
    # every threshold and its neighbours a few ulps either side, the ends, k/A ratios
    near = [np.nextafter(cast, direction) for direction in (0, 2)]
    steps = [cast] + near + [np.nextafter(near[0], 0), np.nextafter(near[1], 2)]
    ratios = [np.arange(a + 1) / a for a in (3, 5, 6, 7, 9, 10, 13)]
    values = np.concatenate(steps + ratios + [np.random.default_rng(0).random(5000)])
    values = np.clip(values, 0, 1).astype(dtype)
    expected = np.searchsorted(cast, values, side="right")
    np.testing.assert_array_equal(threshold_bins(values, thresholds), expected)
