"""``softseg demo``, ``softseg reproduce`` and ``softseg compare``: parse, call experiments, print."""

from __future__ import annotations

import argparse
from pathlib import Path

from softseg.cli._options import (
    add_device, add_encoder_weights, add_layout, add_overwrite, add_preset, add_progress, add_resume,
    add_seeds, config_default, keep_memory,
)
from softseg.experiments.paper import QUBIQ_DATASETS, QUBIQ_TASKS
from softseg.experiments.pipeline import SEEDS
from softseg.model.config import LABEL_MODES, LOSSES


def register(subparsers) -> None:
    _register_demo(subparsers)
    _register_reproduce(subparsers)
    _register_compare(subparsers)


def _register_demo(subparsers) -> None:
    from softseg.experiments.demo import DEMO_3D, DemoSettings

    d = DemoSettings()
    p = subparsers.add_parser(
        "demo",
        help="synthetic data -> train -> predict -> evaluate -> HTML report, in minutes on a CPU",
        description=(
            "Generate a synthetic multi-rater dataset, train a small but real model on its Training "
            f"split ({d.epochs} epochs, {d.crop_size}-pixel crops of {d.image_size}-pixel images, no "
            "pretrained weights), predict and evaluate its Validation split and write the HTML report. "
            "Measured on an idle 2-core AVX2-only CPU: about 1.5 minutes (training in fp32, 83 s of it); "
            "CPUs with AVX-512 bf16 train in bf16, which is not always faster (training 96 s on a 2-core "
            "Intel Xeon; the whole demo 54 s on an AMD EPYC). --dims 3d: the 3D U-Net on "
            "synthetic CT-like volumes; about 7 minutes on the same CPU (training 399 s, fp32)."
        ),
    )
    p.add_argument("--out", type=Path, default=Path("softseg-demo"), help="output folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the data and the training (default: %(default)s)")
    p.add_argument("--epochs", type=int, help=f"training epochs (default: {d.epochs}; 3d: {DEMO_3D.epochs})")
    p.add_argument("--dims", choices=("2d", "3d"), default="2d",
                   help="2d: the paper's network on synthetic images (default); 3d: the 3D U-Net on "
                        "synthetic CT-like volumes (demo-data --dims 3d), patches and sliding windows")
    add_overwrite(p, "replace the outputs of an earlier demo in --out")
    add_progress(p)
    keep_memory(p)
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from softseg.experiments.demo import DEMO_3D, DemoSettings, demo

    base = DEMO_3D if args.dims == "3d" else DemoSettings()
    settings = replace(base, seed=args.seed, epochs=args.epochs if args.epochs is not None else base.epochs)
    result = demo(args.out, settings, overwrite=args.overwrite, progress=args.progress)
    print(result.text())
    return 0


def _register_reproduce(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="the paper's protocol on QUBIQ 2021: 7 tasks x 3 seeds, Tables 2 and 3 beside the paper's",
        description=(
            "Train each QUBIQ 2021 task with its preset on the official Training split (one model per "
            "seed), evaluate on the official Validation split, and write Tables 2 and 3 beside the "
            "paper's values with the difference per cell (OUT/tables.md, .csv, .json). QUBIQ_ROOT "
            "holds training_data_v3/ and validation_data_qubiq2021/, or <dataset>/Training and "
            "<dataset>/Validation."
        ),
    )
    p.add_argument("root", metavar="QUBIQ_ROOT", type=Path, help="folder of the QUBIQ 2021 release")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--tasks", nargs="+", metavar="TASK",
                   help="datasets (" + ", ".join(QUBIQ_DATASETS) + ": all their tasks) or tasks ("
                        + ", ".join(t.key for t in QUBIQ_TASKS) + "); default: all seven")
    add_seeds(p, list(SEEDS), "one model per seed and task")
    p.add_argument("--epochs", type=int, help="epochs for every task, to scale down (default: each preset's)")
    p.add_argument("--crop-size", type=int, help="crop size for every task (default: each preset's)")
    p.add_argument("--config", type=Path, help="YAML file of training settings applied over every task's preset")
    _add_run_options(p)
    p.set_defaults(func=run_reproduce)


def run_reproduce(args: argparse.Namespace) -> int:
    from softseg.experiments.reproduce import ReproduceOptions, reproduce

    options = ReproduceOptions(
        tasks=tuple(args.tasks or ()), seeds=tuple(args.seeds), epochs=args.epochs, crop_size=args.crop_size,
        encoder_weights=args.encoder_weights, device=args.device, config_file=args.config,
    )
    paths = reproduce(args.root, args.out, options, resume=args.resume, progress=args.progress)
    print(paths["md"].read_text(encoding="utf-8"))
    print(f"tables: {paths['md']}  {paths['csv']}  {paths['json']}")
    return 0


def _register_compare(subparsers) -> None:
    from softseg.experiments.compare.methods import DEFAULT_METHODS, DEFAULT_REFERENCE, VARIANTS

    p = subparsers.add_parser(
        "compare",
        help="methods (label mode, loss) side by side on identical splits and seeds, with paired statistics",
        description=(
            "Train the same network with each method, a label mode (soft labels; majority vote with ties "
            "to foreground; one random rater per sample per step; STAPLE consensus) and a loss (soft "
            "cross-entropy, Dice semimetric loss, or their sum), on identical splits and seeds; evaluate "
            "each on held-out cases and write Tables 2 and 3, QUBIQ score, ECE and Brier side by side "
            "(OUT/comparison.md, .csv, .json), the per-fold means (OUT/per_fold.csv), paired statistics "
            "against --reference (OUT/statistics.csv, .json: Wilcoxon signed-rank, percentile-bootstrap "
            "CI, Holm) and per-case figures (OUT/paired-<task>.png); for multi-class data also the "
            "class-wise ECE and multi-class Brier over all classes ('all classes'). Splits: the dataset's "
            "Training/Validation, --split-csv FILE, or --folds K patient-level cross-validation with "
            "the manifest OUT/folds.json. --fractions adds runs on nested subsets of the training patients. "
            "By default soft labels and the majority vote, each with ce and with ce+dml "
            f"({' '.join(DEFAULT_METHODS)}), tested against {DEFAULT_REFERENCE}, what softseg train trains "
            "by default."
        ),
    )
    p.add_argument("data", metavar="DATA", type=Path, help="dataset folder (any layout softseg reads)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--methods", nargs="+", metavar="LABEL[:LOSS][@VARIANT]", default=list(DEFAULT_METHODS),
                   help=f"methods to train: LABEL one of {', '.join(LABEL_MODES)}, LOSS one of "
                        f"{', '.join(LOSSES)} (default ce); @VARIANT predicts with that method's models "
                        f"by {', '.join(VARIANTS)} (flip TTA, temperature scaling cross-fitted on the "
                        f"held-out cases); or ssn, the Stochastic Segmentation Network (Monteiro et al. "
                        f"2020: low-rank Gaussian logits, one random rater per image per step, Monte Carlo "
                        f"likelihood; see softseg train --head; ssn@tta, no @ts); default: {' '.join(DEFAULT_METHODS)}")
    p.add_argument("--reference", metavar="LABEL[:LOSS]",
                   help="the method the others are tested against; must be among --methods (default: "
                        f"{DEFAULT_REFERENCE}, softseg's default training, when among --methods, else the first "
                        "of --methods)")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--folds", type=int, metavar="K", help="K-fold patient-level cross-validation of the "
                       "labelled cases (the Testing split and cases without a label for a trained task are "
                       "left out; default: the dataset's official Training/Validation split)")
    split.add_argument("--split-csv", type=Path, metavar="CSV",
                       help="a fixed split instead of the dataset's: header columns case,split with split "
                            "Training/train or Validation/test (any case); unlisted cases are left out")
    p.add_argument("--run-folds", type=int, nargs="+", metavar="F",
                   help="run only these folds of the K (0-based), e.g. one fold as a fixed split, or "
                        "folds spread over machines; the same --out keeps the same manifest")
    p.add_argument("--split-seed", type=int, default=0,
                   help="seed of the fold assignment and of the training fractions (default: 0)")
    p.add_argument("--fractions", type=float, nargs="+", metavar="F", default=[1.0],
                   help="also train on nested subsets of each fold's training patients, e.g. 0.25 0.5 1.0; "
                        "1.0 (the ordinary run) is always included (default: 1.0 only)")
    p.add_argument("--samples", type=int, nargs="+", metavar="N", default=[],
                   help="also score N hypotheses per held-out case as the LIDC benchmark does (softseg "
                        "evaluate --samples): D²_GED of the map at 0.5 alone and, per N, D²_GED, HM-IoU "
                        "(both tested) and diversity; hypotheses are an SSN's own draws, and level sets "
                        "of the map for every other method (default: none)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--group-regex", metavar="REGEX",
                       help="patient id = the first group (or whole match) of REGEX in the case id")
    group.add_argument("--patients-csv", type=Path, metavar="CSV", help="CSV with columns case,patient")
    add_seeds(p, list(SEEDS), "one model per seed and method")
    add_layout(p)
    add_preset(p)
    p.add_argument("--config", type=Path, help="YAML file of training settings")
    p.add_argument("--epochs", type=int, help=f"training epochs (default: the config's, {config_default('epochs')})")
    p.add_argument("--crop-size", type=int, help="training crop size, a multiple of 32")
    p.add_argument("--resize", type=int, help="resize every image to RESIZE x RESIZE first")
    _add_run_options(p)
    p.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    from softseg.model.config import resolve_config
    from softseg.data.datasets import load_dataset
    from softseg.experiments.compare import CompareOptions, compare

    config = resolve_config(args.preset, args.config, {
        "epochs": args.epochs, "crop_size": args.crop_size, "resize": args.resize,
        "encoder_weights": args.encoder_weights, "device": args.device,
    })
    dataset = load_dataset(args.data, layout=args.layout)
    options = CompareOptions(
        config=config, methods=tuple(args.methods), reference=args.reference, seeds=tuple(args.seeds),
        folds=args.folds, run_folds=None if args.run_folds is None else tuple(args.run_folds),
        split_seed=args.split_seed, group_regex=args.group_regex, patients_csv=args.patients_csv,
        split_csv=args.split_csv, fractions=tuple(args.fractions), samples=tuple(args.samples),
    )
    paths = compare(dataset, args.out, options, resume=args.resume, progress=args.progress)
    print(paths["md"].read_text(encoding="utf-8"))
    print(f"comparison: {paths['md']}  {paths['csv']}  {paths['json']}")
    print(f"statistics: {paths['statistics_csv']}  per fold: {paths['per_fold']}")
    return 0


def _add_run_options(p: argparse.ArgumentParser) -> None:
    add_encoder_weights(p)
    add_device(p)
    add_resume(p, "continue an interrupted run in --out: finished work is skipped")
    add_progress(p)
    keep_memory(p)
