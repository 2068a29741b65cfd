"""Does a threshold with a guarantee keep it on held-out images, and what does it cost?

Takes held-out probability maps (images no model trained on, e.g. the pooled cross-validation
predictions of ``softseg compare --folds 5``) and their raters' masks, computes every image's
loss at every threshold of the fine grid once (softseg.inference.risk), then repeats random
calibration/test splits of the images: on the calibration half it picks

* conformal risk control's threshold for the false-negative rate (``--alpha``), and beside it
  the empirical threshold of today's picker (the largest t whose mean calibration FNR is
  <= alpha, no correction);
* Learn-then-Test's threshold for the false-discovery rate (``--alpha``, ``--delta``), and the
  empirical threshold (the lowest t, testing from the top, before the mean calibration FDR
  first exceeds alpha);

and measures the mean loss of the test half at each. It prints, per method and alpha, the
mean and spread of the test risk over the splits, how often it exceeded alpha, and the mean
threshold; a ``ratio`` line per method gives mean test risk / alpha (<= 1 is the promise; how
far below 1 is what the guarantee costs).

    python benchmarks/risk_control.py --predictions P --data D       # held-out maps of D
    python benchmarks/risk_control.py --quick                        # synthetic maps, seconds

The guarantee of CRC is on the expectation over calibration set and new image, so its mean
test risk over many splits should sit at or below alpha; Learn-then-Test's is that the true
risk exceeds alpha with probability at most delta (the finite test half adds its own noise to
the measured fraction).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from softseg.evaluation.metrics import FINE_THRESHOLDS
from softseg.errors import SoftsegError
from softseg.inference.risk import (
    crc_threshold,
    empirical_threshold,
    empirical_threshold_from_top,
    losses_of,
    ltt_threshold,
)


def held_out_losses(predictions: Path, data: Path, task: str) -> dict[str, np.ndarray]:
    """Per risk, ``(n, T)`` losses of the held-out maps in ``predictions`` against ``data``'s
    rater masks (every labelled case with a map)."""
    from softseg.data import io
    from softseg.data.datasets import load_dataset
    from softseg.evaluation.matching import match_predictions

    dataset = load_dataset(data)
    # the held-out cases are those with a map (a cross-validation pools its folds' maps there)
    present = {folder.name for folder in Path(predictions).iterdir() if folder.is_dir()}
    matched, _ = match_predictions(Path(predictions), dataset, (task,), present)
    maps, masks = [], []
    for pred in matched:
        prob, _ = io.read_probability(pred.path)
        maps.append(prob)
        masks.append(pred.case.masks[task])
    return {risk: losses_of(risk, maps, masks, FINE_THRESHOLDS) for risk in ("fnr", "fdr")}


def synthetic_losses(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Losses of ``n`` synthetic 48x48 images: a disc per image, 5 raters drawing it with
    jittered radii, a map that is a blurred, noisy version of the raters' mean."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :48]
    maps, masks = [], []
    for _ in range(n):
        centre, radius = rng.uniform(16, 32, 2), rng.uniform(5, 12)
        distance = np.hypot(yy - centre[0], xx - centre[1])
        raters = np.stack([distance < radius + rng.normal(0, 1.5) for _ in range(5)])
        soft = ndimage.gaussian_filter(raters.mean(0), rng.uniform(0.5, 2.5))
        maps.append(np.clip(soft + rng.normal(0, 0.08, soft.shape), 0, 1).astype(np.float32))
        masks.append(raters)
    return {risk: losses_of(risk, maps, masks, FINE_THRESHOLDS) for risk in ("fnr", "fdr")}


def splits(losses: dict[str, np.ndarray], alpha: float, delta: float, n_splits: int, fraction: float,
           seed: int) -> dict[str, list[tuple[float, float]]]:
    """Per method, ``(threshold, mean test loss)`` of each random calibration/test split; a
    split where the method abstains (no threshold qualifies) is left out of its list."""
    rng = np.random.default_rng(seed)
    n = len(losses["fnr"])
    n_cal = int(round(n * fraction))
    index = {t: i for i, t in enumerate(FINE_THRESHOLDS)}
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in ("CRC fnr", "empirical fnr", "LTT fdr",
                                                                     "empirical fdr")}
    for _ in range(n_splits):
        order = rng.permutation(n)
        cal, test = order[:n_cal], order[n_cal:]
        picks = {}
        try:
            picks["CRC fnr"] = crc_threshold(losses["fnr"][cal], FINE_THRESHOLDS, alpha).threshold
        except SoftsegError:
            pass
        picks["empirical fnr"] = empirical_threshold(losses["fnr"][cal], FINE_THRESHOLDS, alpha)
        try:
            picks["LTT fdr"] = ltt_threshold(losses["fdr"][cal], FINE_THRESHOLDS, alpha, delta).threshold
        except SoftsegError:
            pass
        picks["empirical fdr"] = empirical_threshold_from_top(losses["fdr"][cal], FINE_THRESHOLDS, alpha)
        for method, t in picks.items():
            if np.isnan(t):
                continue
            risk = "fnr" if method.endswith("fnr") else "fdr"
            results[method].append((t, float(losses[risk][test, index[t]].mean())))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=Path, help="folder of held-out probability maps")
    parser.add_argument("--data", type=Path, help="the dataset with the raters' masks")
    parser.add_argument("--task", default="task01")
    parser.add_argument("--alpha", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--delta", type=float, default=0.1)
    parser.add_argument("--splits", type=int, default=2000, help="random calibration/test splits")
    parser.add_argument("--fraction", type=float, default=0.5, help="share of the images that calibrate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="synthetic maps, 100 splits: a smoke run")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.quick:
        losses, source, args.splits, args.alpha = synthetic_losses(60), "synthetic (60 images)", 100, [0.1]
    elif args.predictions is None or args.data is None:
        parser.error("give --predictions and --data, or --quick")
    else:
        losses = held_out_losses(args.predictions, args.data, args.task)
        source = f"{args.predictions} ({len(losses['fnr'])} images)"
    n = len(losses["fnr"])
    print(f"# {source}; {args.splits} random splits, {round(n * args.fraction)} calibration / "
          f"{n - round(n * args.fraction)} test images; delta {args.delta:g}")
    print(f"{'method':<14} {'alpha':>6} {'splits':>6} {'mean t':>7} {'test risk mean':>15} {'sd':>7} "
          f"{'P(risk>alpha)':>13}")
    for alpha in args.alpha:
        results = splits(losses, alpha, args.delta, args.splits, args.fraction, args.seed)
        for method, rows in results.items():
            if not rows:
                print(f"{method:<14} {alpha:>6g} {0:>6} (abstained in every split)")
                continue
            t, risk = np.array(rows).T
            print(f"{method:<14} {alpha:>6g} {len(rows):>6} {t.mean():>7.3f} {risk.mean():>15.4f} "
                  f"{risk.std():>7.4f} {(risk > alpha).mean():>13.3f}")
        for method, rows in results.items():
            if rows:
                print(f"ratio {method} mean test risk / alpha {alpha:g}: {np.mean([r for _, r in rows]) / alpha:.3f}")
    print(f"# {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
