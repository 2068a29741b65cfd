"""``softseg train``: argument parsing only; the work is :func:`softseg.training.train.train`."""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

from softseg.cli._options import (
    add_device, add_encoder_weights, add_layout, add_overwrite, add_preset, add_progress, add_resume,
    add_seeds, config_default as d, keep_memory,
)
from softseg.model.config import BEST_METRICS, HEAD_KINDS, LABEL_MODES, LOSSES, PRECISIONS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the soft-label U-Net (the paper's procedure) into a run folder",
        description=(
            "Train on a dataset folder (QUBIQ, rater folders or agreement maps). Settings: the "
            "paper's defaults <- --preset <- --config FILE <- options below. One run folder per "
            "seed: OUT/seed0, OUT/seed1, ... Multi-GPU / multi-node: launch with "
            "'torchrun --nproc_per_node=N -m softseg train ...'. See docs/training.md."
        ),
    )
    p.add_argument("data", type=Path, help="dataset folder (one QUBIQ dataset, e.g. .../brain-growth)")
    p.add_argument("--out", type=Path, required=True, help="output folder; runs go to OUT/seedN")
    add_preset(p)
    p.add_argument("--config", type=Path, help="YAML file of settings (TrainConfig field names)")
    add_layout(p)
    p.add_argument("--tasks", nargs="+", help="tasks to train (default: all, or the preset's)")
    add_seeds(p, None, "one run per seed")
    p.add_argument("--epochs", type=int, help=f"training epochs ({d('epochs')})")
    p.add_argument("--batch-size", type=int,
                   help=f"images per step before the growing batch ({d('batch_size')}), --dims 3d: 2")
    p.add_argument("--aug-copies", type=int, help=f"augmented copies per image per step ({d('aug_copies')})")
    p.add_argument("--crop-size", type=int, help=f"training crop, a multiple of 32 ({d('crop_size')})")
    p.add_argument("--resize", type=int, help="resize every image and label to N x N first (undone on output)")
    p.add_argument("--spacing", type=float, nargs="+", metavar="MM",
                   help="resample images and soft labels (linearly) to this voxel spacing in mm, one "
                        "value per spatial axis, before training; predictions go back onto each "
                        "source grid (default: none; excludes --resize)")
    p.add_argument("--slice-axis", type=int, choices=(0, 1, 2),
                   help="volumes: the spatial axis to cut them along into 2D training slices "
                        "(default: the axis of largest voxel spacing)")
    p.add_argument("--dims", choices=("2d", "3d"),
                   help="2d: the paper's 2D network (on 2D images, or on volumes slice by slice); "
                        "3d: a 3D U-Net (MONAI DynUNet) on patches of volumes, sliding-window "
                        "prediction (default 2d; docs/training.md says which to pick)")
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="3d: training patch and sliding window in voxels, multiples of the "
                        "network's divisor (default: planned from the volumes' median shape)")
    p.add_argument("--base-filters", type=int,
                   help=f"3d: channels at full resolution, doubled per level up to 10x ({d('base_filters')})")
    p.add_argument("--lr", type=float, help=f"initial learning rate ({d('lr')}), --dims 3d: 1e-3")
    p.add_argument("--lr-min", type=float, help=f"final learning rate of the cosine schedule ({d('lr_min')}), --dims 3d: 1e-5")
    p.add_argument("--vflip", type=float, help=f"vertical flip probability ({d('vflip')}; 0 for kidney)")
    p.add_argument("--label-mode", choices=LABEL_MODES,
                   help=f"soft labels or a hard-label baseline: majority vote, one random rater per "
                        f"step, SimpleITK STAPLE consensus >= 0.5 ({d('label_mode')})")
    p.add_argument("--loss", choices=LOSSES,
                   help=f"soft cross-entropy (the paper), the Dice semimetric loss, or their sum "
                        f"({d('loss')})")
    p.add_argument("--dml-weight", type=float, help=f"weight of the DML term in ce+dml ({d('dml_weight')})")
    p.add_argument("--head", choices=HEAD_KINDS,
                   help=f"deterministic: one logit per task (class), the paper's network; ssn: a Stochastic "
                        f"Segmentation Network (Monteiro et al. 2020), the image's logits one low-rank Gaussian "
                        f"(mean, rank-r factor, diagonal per pixel) trained by the Monte Carlo likelihood of "
                        f"one rater's mask drawn per image per step (label mode random_rater, loss ce, set "
                        f"for it); predict averages seeded samples, --samples N writes them ({d('head')})")
    p.add_argument("--ssn-rank", type=int, metavar="R",
                   help=f"ssn: rank r of the logits' covariance factor ({d('ssn_rank')})")
    p.add_argument("--ssn-samples", type=int, metavar="M",
                   help=f"ssn: Monte Carlo samples of the loss per image and step ({d('ssn_samples')}); "
                        f"the samples a probability map averages: --set ssn_eval_samples=N ({d('ssn_eval_samples')})")
    p.add_argument("--precision", choices=PRECISIONS,
                   help=f"{d('precision')}: bf16 on a CPU with bf16, AMP on a GPU, else fp32")
    add_device(p)
    p.add_argument("--val-every", type=int, help=f"validate every N epochs and after the last ({d('val_every')})")
    p.add_argument("--val-fraction", type=float,
                   help=f"held-out fraction for data without a split ({d('val_fraction')})")
    p.add_argument("--best-metric", choices=BEST_METRICS,
                   help=f"choose best.pt by QUBIQ score or loss ({d('best_metric')})")
    add_encoder_weights(p)
    p.add_argument("--set", nargs="+", metavar="KEY=VALUE", default=[],
                   help="any other setting, e.g. --set rotate=10 hflip=0 betas=[0.9,0.99] (YAML values)")
    p.add_argument("--val-ids", nargs="+", help="explicit validation case ids (the rest train)")
    add_resume(p, "continue stopped runs from last.pt")
    add_overwrite(p, "replace existing run folders")
    add_progress(p)
    keep_memory(p)
    p.set_defaults(func=run_train)


_OVERRIDES = (
    "tasks", "epochs", "batch_size", "aug_copies", "crop_size", "resize", "spacing", "slice_axis", "dims", "patch_size",
    "base_filters", "lr", "lr_min", "vflip",
    "label_mode", "loss", "dml_weight", "head", "ssn_rank", "ssn_samples", "precision", "device", "val_every", "val_fraction", "best_metric", "encoder_weights",
)


def run_train(args: argparse.Namespace) -> int:
    from softseg.model.config import resolve_config
    from softseg.data.datasets import load_dataset
    from softseg.errors import SoftsegError
    from softseg.training.train import split_ids, train

    named = {name: getattr(args, name) for name in _OVERRIDES if getattr(args, name) is not None}
    overrides = {**_parse_set(args.set), **named}
    config = resolve_config(args.preset, args.config, overrides)
    tasks = config.tasks or None
    dataset = load_dataset(args.data, layout=args.layout, tasks=tasks)
    if args.val_ids:
        known = {c.case_id for c in dataset.cases}
        unknown = [i for i in args.val_ids if i not in known]
        if unknown:
            raise SoftsegError(f"--val-ids: no case(s) {', '.join(unknown)} in {args.data}")
        val_ids = list(args.val_ids)
        train_ids = [c.case_id for c in dataset.cases if c.case_id not in set(val_ids) and c.split != "Testing"]
    else:
        # The same split for every seed (seeded by 0), so seeds differ only in training.
        train_ids, val_ids = split_ids(dataset, config.val_fraction, seed=0)
    main = int(os.environ.get("RANK", "0")) == 0
    for seed in args.seeds or [config.seed]:
        run_dir = train(
            config.replace(seed=seed), dataset, args.out / f"seed{seed}", train_ids, val_ids,
            resume=args.resume, overwrite=args.overwrite, progress=args.progress,
        )
        if main:
            print(f"{run_dir}: {_summary(run_dir / 'history.csv')}")
    return 0


def _parse_set(items: list[str]) -> dict:
    import yaml

    from softseg.errors import SoftsegError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SoftsegError(f"--set {item!r}: expected KEY=VALUE, e.g. --set rotate=10")
        try:
            out[key.strip().replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise SoftsegError(f"--set {item!r}: value is not valid YAML ({error})") from error
    return out


def _summary(history: Path) -> str:
    rows = list(csv.DictReader(history.open()))
    last = rows[-1]
    scored = [r for r in rows if r["val_qubiq"]]
    text = f"{last['epoch']} epochs, train loss {float(last['train_loss']):.4f}"
    if scored:
        best = max(scored, key=lambda r: float(r["val_qubiq"]))
        text += (f", last val QUBIQ {float(scored[-1]['val_qubiq']):.4f}, best {float(best['val_qubiq']):.4f}"
                 f" (epoch {best['epoch']})")
    return text
