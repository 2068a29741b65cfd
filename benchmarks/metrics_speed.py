"""Speed of softseg's metrics against MONAI, side by side, on identical inputs.

One case is evaluated fully: Table 2 (Dice, precision, recall, HD95, ground-truth area at the
9 thresholds 0.1 ... 0.9) and Table 3 (prediction >= 0.5 against 7 raters: E[1 - IoU],
E[Dice], rater diversity over the 21 rater pairs, D²_GED). softseg computes it with
``metrics.case_metrics`` (which also computes the QUBIQ score, calibration and the 99-point
curves); the reference path calls MONAI once per threshold and per rater pair
(``compute_dice``, ``get_confusion_matrix`` + ``compute_confusion_matrix_metric``,
``compute_hausdorff_distance(percentile=95)``, ``compute_iou``). The numbers of both are
checked to agree (1e-6 for ratios, 1e-3 for HD95) before any time is reported.

Inputs are realistic, not noise: a smooth blob (ellipse/ellipsoid with low-order boundary
harmonics), each rater's mask a smoothly jittered version of it, the prediction a blurred
soft label with mild smooth noise. Sizes: 256x256, 640x960, 128x128x64 (spacing 1, 1, 2.5).

    python benchmarks/metrics_speed.py            # medians of 7 repeats
    python benchmarks/metrics_speed.py --quick    # tiny sizes, 1 repeat: a smoke run
    python benchmarks/metrics_speed.py --dims 3d --raters 2   # one 3D case, 2 raters (QUBIQ 3D)

Prints one line per size starting with ``ratio`` (MONAI time / softseg time; target >= 4).
Both sides run with one torch thread by default (softseg is single-threaded NumPy/SciPy);
``--threads`` changes that.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
import warnings

import numpy as np
import torch
from scipy import ndimage

from softseg.evaluation import metrics

N_RATERS = 7
SIZES = (((256, 256), (1.0, 1.0)), ((640, 960), (1.0, 1.0)), ((128, 128, 64), (1.0, 1.0, 2.5)))
QUICK_SIZES = (((64, 64), (1.0, 1.0)), ((96, 128), (1.0, 1.0)), ((32, 32, 16), (1.0, 1.0, 2.5)))


def make_case(shape: tuple[int, ...], seed: int = 0, n_raters: int = N_RATERS):
    """(prob, soft, raters): a smooth blob, ``n_raters`` jittered rater masks, a soft prediction."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    radius = np.sqrt(sum((g / r) ** 2 for g, r in zip(grids, rng.uniform(0.45, 0.65, len(shape)))))
    angle = np.arctan2(grids[1], grids[0])
    shape_term = sum(rng.normal(0, 0.04) * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
                     for k in range(2, 6))
    smooth = max(shape) / 12
    raters = []
    for _ in range(n_raters):
        jitter = ndimage.gaussian_filter(rng.standard_normal(shape), smooth)
        jitter *= 0.06 / (np.abs(jitter).max() + 1e-12)
        raters.append(radius < 1.0 + shape_term + jitter)
    raters = np.stack(raters)
    soft = (raters.sum(axis=0) / n_raters).astype(np.float32)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), smooth / 2)
    noise *= 0.08 / (np.abs(noise).max() + 1e-12)
    prob = np.clip(ndimage.gaussian_filter(soft, max(shape) / 100) + noise, 0, 1).astype(np.float32)
    return prob, soft, raters


def softseg_case(prob, soft, raters, spacing) -> dict:
    result = metrics.case_metrics(prob, soft, raters, spacing=spacing)
    t2 = result["table2"]
    return {
        "dice": t2["dice"], "precision": t2["precision"], "recall": t2["recall"],
        "hd95": t2["hd95_mm"], "gt_area": t2["gt_area_frac"], **result["table3"],
    }


def monai_case(prob, soft, raters, spacing) -> dict:
    from monai.metrics import (compute_confusion_matrix_metric, compute_dice,
                               compute_hausdorff_distance, compute_iou, get_confusion_matrix)

    def tensor(mask):
        return torch.as_tensor(mask[None, None], dtype=torch.float32)

    out = {k: [] for k in ("dice", "precision", "recall", "hd95", "gt_area")}
    for t in metrics.THRESHOLDS:
        # same tie rule as softseg: compare at the maps' float32 precision
        p, g = tensor(prob >= np.float32(t)), tensor(soft >= np.float32(t))
        out["dice"].append(float(compute_dice(p, g)[0, 0]))
        confusion = get_confusion_matrix(p, g)
        out["precision"].append(float(compute_confusion_matrix_metric("precision", confusion)[0, 0]))
        out["recall"].append(float(compute_confusion_matrix_metric("recall", confusion)[0, 0]))
        out["hd95"].append(float(compute_hausdorff_distance(
            p, g, include_background=True, percentile=95, spacing=spacing)[0, 0]))
        out["gt_area"].append(float(g.float().mean()))
    pred = tensor(prob >= np.float32(0.5))
    to_pred_iou = [float(compute_iou(pred, tensor(r))[0, 0]) for r in raters]
    to_pred_dice = [float(compute_dice(pred, tensor(r))[0, 0]) for r in raters]
    pairs = [float(compute_iou(tensor(raters[i]), tensor(raters[j]))[0, 0])
             for i, j in itertools.combinations(range(len(raters)), 2)]
    pred_rater = 1.0 - float(np.mean(to_pred_iou))
    diversity = 1.0 - float(np.mean(pairs))
    return {**{k: np.array(v) for k, v in out.items()}, "pred_rater_dist": pred_rater,
            "rater_diversity": diversity, "expected_dice": float(np.mean(to_pred_dice)),
            "ged2": 2 * pred_rater - diversity}


def check_same(ours: dict, theirs: dict, label: str) -> None:
    for key, value in theirs.items():
        tolerance = 1e-3 if key == "hd95" else 1e-6
        if not np.allclose(ours[key], value, atol=tolerance, rtol=0, equal_nan=False):
            raise SystemExit(f"{label}: {key} differs: softseg {ours[key]} vs MONAI {value}")


def median_times(first, second, repeats: int) -> tuple[float, float]:
    """Median wall times of two functions, run alternately so load affects both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (smoke run)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per side (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--raters", type=int, default=N_RATERS, help=f"raters per case (default {N_RATERS})")
    parser.add_argument("--dims", choices=("all", "3d"), default="all",
                        help="3d: the volume only (e.g. --dims 3d --raters 2, QUBIQ's 3D tasks)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # MONAI's deprecation notices, not results
    sizes = QUICK_SIZES if args.quick else SIZES
    if args.dims == "3d":
        sizes = [size for size in sizes if len(size[0]) == 3]
    repeats = 1 if args.quick else args.repeats
    for shape, spacing in sizes:
        label = "x".join(map(str, shape))
        prob, soft, raters = make_case(shape, n_raters=args.raters)
        ours = softseg_case(prob, soft, raters, spacing)  # also warms caches and imports
        theirs = monai_case(prob, soft, raters, spacing)
        check_same(ours, theirs, label)
        t_ours, t_monai = median_times(lambda: softseg_case(prob, soft, raters, spacing),
                                       lambda: monai_case(prob, soft, raters, spacing), repeats)
        print(f"{label}: identical results (Dice {np.mean(ours['dice']):.4f}, HD95 "
              f"{np.mean(ours['hd95']):.3f}, GED {ours['ged2']:.4f}); softseg "
              f"{t_ours * 1e3:.1f} ms, MONAI {t_monai * 1e3:.1f} ms (median of {repeats})")
        print(f"ratio {label}: {t_monai / t_ours:.1f}x")


if __name__ == "__main__":
    main()
