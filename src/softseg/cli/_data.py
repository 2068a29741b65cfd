"""Data commands: `check`, `labels`, `demo-data`. Parsing only; the work is in the library."""

from __future__ import annotations

import argparse

from softseg.cli._options import add_layout, add_overwrite
from softseg.data.synthetic import DEFAULT_CASES, DEFAULT_SIZE
from softseg.data.synthetic3d import DEFAULT_CASES as VOLUME_CASES
from softseg.data.synthetic3d import DEFAULT_SHAPE as VOLUME_SHAPE


def _add_dataset_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="dataset folder")
    add_layout(parser)
    parser.add_argument(
        "--tasks", nargs="+", metavar="TASK",
        help="tasks to use (default: all); for single-task rater/agreement data, one name "
        "names the task (default task01)",
    )
    parser.add_argument(
        "--splits", nargs="+", metavar="SPLIT", choices=("Training", "Validation", "Testing"),
        help="QUBIQ splits to read (default: all)",
    )
    parser.add_argument(
        "--n-raters", type=int, metavar="A",
        help="agreement maps: number of raters behind each map (or n_raters in dataset.json)",
    )
    parser.add_argument(
        "--strict", action="store_true",
        help="treat a case with fewer raters or varying rater sets as a problem",
    )


def register(subparsers) -> None:
    check = subparsers.add_parser(
        "check", help="validate a dataset: every problem, then a summary",
        description="Read a dataset and report every problem, one line each (file, expected, "
        "found), then a summary. A folder holding several QUBIQ datasets is checked dataset "
        "by dataset. Exit 0 when clean, 2 when there are problems.",
    )
    _add_dataset_options(check)
    check.set_defaults(func=run_check)

    labels = subparsers.add_parser(
        "labels", help="write soft labels (mean of raters) as files",
        description="Write each labelled case's soft label per task as OUT/<case>/<task>.nii.gz "
        "(float32, source affine/header) or .png (16-bit, round(p*65535)).",
    )
    _add_dataset_options(labels)
    labels.add_argument("out", metavar="OUT", help="output folder (must be empty or new)")
    labels.add_argument("--variance", action="store_true", help="also write <task>_variance: p(1-p)")
    add_overwrite(labels, "write into a non-empty OUT, replacing files of the same names")
    labels.set_defaults(func=run_labels)

    demo = subparsers.add_parser(
        "demo-data", help="write a synthetic multi-rater dataset (QUBIQ layout, 2D or 3D)",
        description="2D (default): write OUT/demo-shapes (1 channel, 2 tasks, 5 raters, one case "
        "with 4) and OUT/demo-multichannel (4 channels last, 2 tasks, 3 raters). --dims 3d: write "
        "OUT/demo-pancreas, CT-like volumes in the QUBIQ 2021 pancreas layout (1 task, 2 raters, "
        "0.8 x 0.8 x 2.5 mm voxels, an oblique affine with a non-zero origin). Deterministic "
        "from --seed.",
    )
    demo.add_argument("out", metavar="OUT", help="output folder (must be empty or new)")
    demo.add_argument("--dims", choices=("2d", "3d"), default="2d", help="images or volumes (default 2d)")
    demo.add_argument("--classes", action="store_true",
                      help="write OUT/demo-disc-cup instead: multi-class data (background/rim/cup class "
                           "maps of 4 raters, RGB PNG, rater folders with dataset.json labels); --cases "
                           "then counts all its cases (default 24)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--size", type=int, default=None,
                      help=f"image side in pixels; in-plane side of a volume (default {DEFAULT_SIZE}; "
                           f"3d: {VOLUME_SHAPE[0]})")
    demo.add_argument("--slices", type=int, default=None,
                      help=f"--dims 3d: slices per volume (default {VOLUME_SHAPE[2]})")
    demo.add_argument(
        "--cases", type=int, nargs=3, default=None, metavar=("TRAIN", "VAL", "TEST"),
        help=f"cases per split in each dataset (default {' '.join(map(str, DEFAULT_CASES))}; "
             f"3d: {' '.join(map(str, VOLUME_CASES))})",
    )
    add_overwrite(demo, "write into a non-empty OUT, replacing files of the same names")
    demo.set_defaults(func=run_demo_data)


def _dataset_kwargs(args) -> dict:
    return dict(layout=args.layout, tasks=args.tasks, splits=args.splits,
                n_raters=args.n_raters, strict=args.strict)


def run_check(args) -> int:
    from softseg.data.check import check_dataset, dataset_folders, format_report

    # A release root with several QUBIQ datasets is checked dataset by dataset.
    reports = [check_dataset(folder, **_dataset_kwargs(args))
               for folder in dataset_folders(args.data, args.layout)]
    print("\n\n".join(format_report(report) for report in reports))
    return 0 if all(report.ok for report in reports) else 2


def run_labels(args) -> int:
    from softseg.data.datasets import load_dataset
    from softseg.data.labels import write_soft_labels

    dataset = load_dataset(args.data, **_dataset_kwargs(args))
    written = write_soft_labels(dataset, args.out, variance=args.variance, overwrite=args.overwrite)
    print(f"wrote {len(written)} files for {len(dataset.cases)} cases to {args.out}")
    return 0


def run_demo_data(args) -> int:
    from softseg.data.synthetic import DEMO_DATASETS, write_demo_dataset
    from softseg.data.synthetic3d import DATASET, write_demo_volumes
    from softseg.errors import SoftsegError

    if args.classes:
        from softseg.data.synthetic_classes import DEFAULT_CASES as CLASS_CASES
        from softseg.data.synthetic_classes import DEFAULT_SIZE as CLASS_SIZE
        from softseg.data.synthetic_classes import write_demo_classes

        if args.dims == "3d" or args.slices is not None:
            raise SoftsegError("--classes writes 2D images: leave out --dims 3d and --slices")
        root = write_demo_classes(args.out, seed=args.seed, size=args.size or CLASS_SIZE,
                                  n_cases=sum(args.cases) if args.cases else CLASS_CASES, overwrite=args.overwrite)
        print(f"wrote {root}")
        return 0
    if args.dims == "3d":
        side = args.size or VOLUME_SHAPE[0]
        shape = (side, side, args.slices or VOLUME_SHAPE[2])
        n_train, n_val, n_test = args.cases or VOLUME_CASES
        out = write_demo_volumes(args.out, seed=args.seed, shape=shape, n_train=n_train,
                                 n_val=n_val, n_test=n_test, overwrite=args.overwrite)
        print(f"wrote {out / DATASET}")
        return 0
    if args.slices is not None:
        raise SoftsegError("--slices is for volumes: pass --dims 3d, or leave --slices out")
    n_train, n_val, n_test = args.cases or DEFAULT_CASES
    out = write_demo_dataset(args.out, seed=args.seed, size=args.size or DEFAULT_SIZE, n_train=n_train,
                             n_val=n_val, n_test=n_test, overwrite=args.overwrite)
    print("wrote " + ", ".join(str(out / name) for name in DEMO_DATASETS))
    return 0
