"""``softseg report``: the HTML report of an evaluation folder (argument parsing only)."""

from __future__ import annotations

import argparse
from pathlib import Path

from softseg.cli._options import add_overwrite


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="one self-contained HTML report of an evaluation (tables, figures, slider)",
        description=(
            "Write one self-contained HTML page (images embedded, no network needed) from an "
            "evaluation folder written by `softseg evaluate`: Tables 2 and 3, Dice/precision/"
            "recall by threshold, the reliability diagram, the training curves of --run, and "
            "for a few cases the paper's Figure 2 with an interactive confidence slider. PNG "
            "copies of the figures go to <out stem>_files/ beside the page."
        ),
    )
    parser.add_argument("eval_dir", type=Path, metavar="EVAL_DIR",
                        help="evaluation folder (metrics.csv, cases.csv, curves.csv, "
                             "summary.json, tables.md)")
    parser.add_argument("--run", type=Path, metavar="RUN",
                        help="run folder whose history.csv gives the training curves")
    parser.add_argument("--out", type=Path, required=True, metavar="REPORT.html",
                        help="the HTML file to write; figures go to REPORT_files/ beside it")
    parser.add_argument("--cases", type=int, default=3, metavar="N",
                        help="example cases per task, spread from best to worst QUBIQ score "
                             "(default 3: best, median, worst; 0 for none)")
    add_overwrite(parser, "replace an existing report and its figures folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from softseg.report.build import write_report, files_folder

    out = write_report(args.eval_dir, args.out, run=args.run, n_cases=args.cases,
                       overwrite=args.overwrite)
    print(f"report: {out}  (figures: {files_folder(out)})")
    return 0
