"""Stratified or random levels? Level-set hypotheses of real held-out maps, scored both ways.

    python studies/lidc/level_sets.py PREDICTIONS DATA [--n 16] [--draws 20] [--out levels.json]

For every held-out map in PREDICTIONS (a deterministic method's pooled predictions from
``softseg compare``) against DATA's raters, it computes D²_GED (self-pairs kept), HM-IoU and
diversity of N level sets ``p >= u_k`` with

* stratified levels u_k = (k − ½)/N (softseg's choice), and
* ``--draws`` sets of N seeded uniform levels,

and, as the value both estimate, the same scores with 256 stratified levels (near the limit of
many hypotheses). It prints each scheme's dataset mean, the spread of the uniform scheme's
dataset mean over its draws, and per case the root-mean-square distance of each scheme's
score from the 256-level value.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from softseg.data import io
from softseg.data.datasets import load_dataset
from softseg.evaluation import hypotheses
from softseg.evaluation.matching import match_predictions

METRICS = ("ged", "hmiou", "diversity")
LIMIT = 256  # a multiple of 4 raters and of N = 16; the Hungarian matching grows as its cube


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--task", default="task01")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON")
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    present = {folder.name for folder in args.predictions.iterdir() if folder.is_dir()}
    matched, _ = match_predictions(args.predictions, dataset, (args.task,), present)
    stratified, limit = [], []
    uniform = [[] for _ in range(args.draws)]
    for index, pred in enumerate(matched):
        prob, raters = io.read_probability(pred.path)[0], pred.case.masks[args.task]
        stratified.append(hypotheses.sampled_scores(hypotheses.level_set_masks(prob, args.n), raters))
        # the limit: many stratified levels; HM-IoU at a multiple of N keeps its matching comparable
        limit.append(hypotheses.sampled_scores(hypotheses.level_set_masks(prob, LIMIT), raters))
        for d in range(args.draws):
            masks = hypotheses.level_set_masks(prob, args.n, "uniform", seed=1000 * index + d)
            uniform[d].append(hypotheses.sampled_scores(masks, raters))
    result = {"cases": len(matched), "n": args.n, "draws": args.draws, "limit_levels": LIMIT}
    for metric in METRICS:
        ref = np.array([s[metric] for s in limit])
        strat = np.array([s[metric] for s in stratified])
        draws = np.array([[s[metric] for s in draw] for draw in uniform])  # (draws, cases)
        result[metric] = {
            "limit_mean": float(ref.mean()),
            "stratified_mean": float(strat.mean()),
            "uniform_mean": float(draws.mean()),
            "uniform_mean_std_over_draws": float(draws.mean(axis=1).std()),
            "stratified_case_rms_from_limit": float(np.sqrt(((strat - ref) ** 2).mean())),
            "uniform_case_rms_from_limit": float(np.sqrt(((draws - ref) ** 2).mean())),
        }
    print(f"# {len(matched)} held-out maps of {args.predictions}; N = {args.n}; {args.draws} uniform draws; "
          f"limit = {LIMIT} stratified levels")
    print("| score | limit | stratified | uniform (mean ± std of the dataset mean over draws) | "
          "per-case RMS from the limit: stratified | uniform |")
    print("|---|---|---|---|---|---|")
    for metric in METRICS:
        r = result[metric]
        print(f"| {metric} | {r['limit_mean']:.4f} | {r['stratified_mean']:.4f} | {r['uniform_mean']:.4f} ± "
              f"{r['uniform_mean_std_over_draws']:.4f} | {r['stratified_case_rms_from_limit']:.4f} | "
              f"{r['uniform_case_rms_from_limit']:.4f} |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
