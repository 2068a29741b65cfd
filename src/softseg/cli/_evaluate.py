"""``softseg evaluate``: parsing only; the work is in :mod:`softseg.evaluation.evaluate`."""

from __future__ import annotations

import argparse
from pathlib import Path

from softseg.cli._options import add_layout, add_overwrite, add_progress, case_query


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="the paper's metrics (Tables 2 and 3), QUBIQ score and calibration of predictions",
        description="Compare the probability maps in PREDICTIONS (written by `softseg predict`: "
        "PREDICTIONS/<case>/<task>.nii.gz|.png, or the QUBIQ submission layout "
        "PREDICTIONS/<dataset>/<case>/<task>.nii.gz) with the labelled cases of DATA. Writes "
        "metrics.csv, cases.csv, curves.csv, summary.json and tables.md into --out.",
    )
    parser.add_argument("predictions", type=Path, metavar="PREDICTIONS",
                        help="folder of probability maps")
    parser.add_argument("data", type=Path, metavar="DATA", help="the labelled dataset folder")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="output folder (must be new or empty unless --overwrite)")
    add_layout(parser)
    parser.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                        help="evaluate only these tasks (default: every task of DATA)")
    parser.add_argument("--split", default=None,
                        help="evaluate only this split, e.g. Validation (default: every "
                        "labelled case)")
    parser.add_argument("--samples", type=int, nargs="+", default=(), metavar="N",
                        help="also score N hypotheses per case the way the LIDC benchmark does "
                        "(Probabilistic U-Net, PHiSeg, SSN): D²_GED over N hypotheses and all rater pairs, "
                        "i = i' kept (ged_N), the hypotheses' diversity (diversity_N), Hungarian-matched "
                        "IoU (hmiou_N), and the D²_GED of the map at 0.5 alone (ged_map); several N at "
                        "once, e.g. 16 100. Hypotheses: an SSN run's own samples when softseg predict "
                        "--samples wrote at least N, else N stratified level sets p >= (k - 1/2)/N of "
                        "the map, whose per-pixel share is p (default: none)")
    add_overwrite(parser, "write into a non-empty --out, replacing files of the same names")
    add_progress(parser)
    parser.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from softseg.evaluation.evaluate import evaluate

    out = evaluate(args.predictions, args.data, args.out, query=case_query(args),
                   samples=tuple(args.samples), overwrite=args.overwrite, progress=args.progress)
    print((out / "tables.md").read_text(encoding="utf-8"), end="")
    return 0
