"""``softseg predict``, ``softseg calibrate``, ``softseg threshold`` and ``softseg export``:
parsing only."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from softseg.cli._options import (
    add_checkpoint,
    add_device,
    add_layout,
    add_overwrite,
    add_progress,
    add_temperature,
    add_tta,
    case_query,
    keep_memory,
    run_options,
)
from softseg.errors import SoftsegError
from softseg.inference import BATCH_SIZE


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_predict(subparsers)
    _register_calibrate(subparsers)
    _register_threshold(subparsers)
    _register_export(subparsers)


def _common_model_options(parser: argparse.ArgumentParser) -> None:
    add_checkpoint(parser)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, metavar="N",
                        help=f"images per forward pass (default {BATCH_SIZE})")
    add_device(parser)
    add_progress(parser)
    keep_memory(parser)


def _register_predict(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="probability maps (and std maps, masks) for every image of a folder or file",
        description="Predict every image of INPUT (a dataset folder in any layout softseg "
        "reads, labelled or not, or one image file) with one or more runs; several runs "
        "(seeds) are averaged. Writes OUT/<case>/<task>.nii.gz (or .png) and predictions.json. "
        "Uses each run's last checkpoint unless --checkpoint says otherwise, and the "
        "temperatures of 'softseg calibrate' where stored.",
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                        help="run folder(s) or folder(s) of seeds; all are averaged")
    parser.add_argument("input", type=Path, metavar="INPUT",
                        help="dataset folder, folder of images, or one image file")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="output folder (must be new or empty unless --overwrite)")
    add_layout(parser)
    parser.add_argument("--split", default=None,
                        help="only the cases of this split (Training, Validation, Testing)")
    parser.add_argument("--std", action="store_true",
                        help="also write <task>_std maps, sqrt(p (1 - p))")
    parser.add_argument("--masks", type=float, nargs="+", default=(), metavar="T",
                        help="also write binary masks p >= T for each threshold T in (0, 1]")
    parser.add_argument("--run-threshold", action=argparse.BooleanOptionalAction, default=True,
                        help="also write masks at the operating threshold stored by "
                        "'softseg threshold' in the run (default: yes)")
    parser.add_argument("--uncertainty", action="store_true",
                        help="also write per-pixel entropy maps <task>_entropy (nats; a multi-class run: "
                        "classes_entropy over all classes); with several runs (seeds) also the mutual "
                        "information <task>_mi (the seeds' disagreement) and the expected entropy "
                        "<task>_expected_entropy, which add up to the entropy")
    parser.add_argument("--samples", type=int, default=0, metavar="N",
                        help="also write N hypotheses per case and task, <task>_sample-00 ... (multi-class: "
                        "label maps label-map_sample-00 ...), for evaluate --samples: for a deterministic run "
                        "the level sets p >= (k + 1/2)/N of the map written beside them (each pixel lies in a "
                        "share p of them); for an SSN run (--head ssn) its own draws, sigmoid(eta) >= 0.5 of "
                        "sampled logits eta, the first of the seeded samples whose mean is the probability "
                        "map, several runs taking turns (default: none)")
    parser.add_argument("--qubiq", action="store_true",
                        help="write the QUBIQ submission layout OUT/<dataset>/<case>/<task>.nii.gz")
    add_temperature(parser)
    add_tta(parser)
    add_overwrite(parser, "write into a non-empty --out, replacing files of the same names")
    _common_model_options(parser)
    parser.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from softseg.inference.predict import PredictOutputs, predict_folder

    outputs = PredictOutputs(std=args.std, masks=tuple(args.masks), use_run_threshold=args.run_threshold,
                             qubiq=args.qubiq, uncertainty=args.uncertainty, samples=args.samples)
    path = predict_folder(args.runs, args.input, args.out, query=case_query(args), outputs=outputs,
                          options=run_options(args), overwrite=args.overwrite)
    summary = json.loads(path.read_text())
    print(f"{len(summary['cases'])} case(s), {len(summary['files'])} file(s) written to {args.out}")
    if summary["run_threshold"]:
        chosen = ", ".join(f"{t} {v:g}" for t, v in summary["run_threshold"]["tasks"].items())
        print(f"masks at the run's operating threshold: {chosen}")
    if summary.get("samples"):
        origin = ("the run's own draws" if summary["samples"].get("source", "drawn") == "drawn"
                  else "level sets of the map")
        print(f"{summary['samples']['count']} sampled mask(s) per case: {summary['samples']['files']} ({origin})")
    if summary.get("uncertainty"):
        written = summary["uncertainty"]
        print(f"uncertainty maps ({written['unit']}, {written['models']} model(s)): {', '.join(written['maps'])}")
    if summary["temperatures"]:
        print("temperatures applied: " + "; ".join(
            f"{Path(run).name} " + ", ".join(f"{t} {v:.4g}" for t, v in temps.items())
            for run, temps in summary["temperatures"].items()))
    return 0


def _register_calibrate(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="fit a temperature per run and task (temperature scaling) on validation cases",
        description="Fit, for each run (seed) of RUN and each task, one temperature T > 0 that "
        "minimises the soft binary cross-entropy between sigmoid(logit / T) and the soft label "
        "over all pixels of the calibration cases of DATA (default: each run's own validation "
        "cases in split.json). Stores RUN/seedN/temperature.json; 'softseg predict', "
        "'threshold' and 'export' then divide that checkpoint's logits by T.",
    )
    parser.add_argument("run", type=Path, metavar="RUN", help="run folder or folder of seeds")
    parser.add_argument("data", type=Path, metavar="DATA", help="the labelled dataset folder")
    add_layout(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--split", default=None,
                       help="calibrate on the cases of this split (default: each run's "
                       "validation ids in split.json)")
    which.add_argument("--cases", nargs="+", default=None, metavar="ID",
                       help="calibrate on these case ids")
    add_overwrite(parser, "replace a temperature.json already in the run(s)")
    _common_model_options(parser)
    parser.set_defaults(func=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    from softseg.inference.calibration import calibrate, format_calibration

    results = calibrate(args.run, args.data, query=case_query(args), options=run_options(args),
                        overwrite=args.overwrite)
    print(format_calibration(results))
    for path, payload in results.items():
        print(f"stored in {path} ({len(payload['cases'])} case(s), {payload['cases_from']})")
    return 0


def _register_threshold(subparsers) -> None:
    parser = subparsers.add_parser(
        "threshold",
        help="choose the operating confidence threshold for a precision/recall requirement",
        description="Predict the validation cases of DATA with RUN, compute pooled precision "
        "and recall of p >= t for t = 0.01 ... 0.99 against the raters' consensus (soft label "
        ">= --reference-level), pick the threshold meeting the requirement with the best value "
        "of the other measure (ties: the higher threshold) and store it in RUN/threshold.json. "
        "The maps are those 'softseg predict' makes with the same --checkpoint (default last), "
        "--temperature and --tta; pass the same options to both. With --risk the threshold comes "
        "with a guarantee for new images like the calibration cases: --risk fnr --alpha A "
        "(conformal risk control: the expected false-negative rate of the next image, averaged "
        "over its raters, is at most A) or --risk fdr --alpha A --delta D (Learn-then-Test: "
        "with probability 1 - D the expected false-discovery rate is at most A); the cases must "
        "be cases the run did not train on (docs/prediction.md, 'Thresholds with a guarantee').",
    )
    parser.add_argument("run", type=Path, metavar="RUN", help="run folder or folder of seeds")
    parser.add_argument("data", type=Path, metavar="DATA", help="the dataset folder")
    goal = parser.add_mutually_exclusive_group(required=True)
    goal.add_argument("--target-recall", type=float, metavar="R",
                      help="recall of at least R, then the best precision")
    goal.add_argument("--target-precision", type=float, metavar="P",
                      help="precision of at least P, then the best recall")
    goal.add_argument("--max-f1", action="store_true", help="the best F1")
    goal.add_argument("--risk", choices=("fnr", "fdr"), default=None,
                      help="a threshold with a guarantee on new images: fnr (conformal risk control) "
                      "or fdr (Learn-then-Test); give --alpha (and --delta for fdr)")
    parser.add_argument("--alpha", type=float, default=None, metavar="A",
                        help="with --risk: the risk level, e.g. 0.1")
    parser.add_argument("--delta", type=float, default=None, metavar="D",
                        help="with --risk fdr: the probability that the guarantee fails, e.g. 0.1")
    parser.add_argument("--split", default=None,
                        help="cases of this split (default: the run's validation ids in split.json)")
    add_layout(parser)
    parser.add_argument("--reference-level", type=float, default=0.5, metavar="L",
                        help="reference = soft label >= L (default 0.5, the raters' majority)")
    add_overwrite(parser, "replace a threshold.json already in the run")
    parser.add_argument("--every", type=int, default=5, metavar="K",
                        help="show every K-th threshold of the table (default 5)")
    add_temperature(parser)
    add_tta(parser)
    _common_model_options(parser)
    parser.set_defaults(func=run_threshold)


def run_threshold(args: argparse.Namespace) -> int:
    from softseg.inference.thresholds import choose_threshold, format_tradeoff
    from softseg.inference.run_files import check_can_store, write_threshold_file

    if (args.alpha is not None or args.delta is not None) and args.risk is None:
        raise SoftsegError("--alpha and --delta go with --risk fnr|fdr; drop them or add --risk")
    if args.risk is not None:
        criterion, target = f"risk_{args.risk}", args.alpha
    elif args.max_f1:
        criterion, target = "max_f1", None
    elif args.target_recall is not None:
        criterion, target = "target_recall", args.target_recall
    else:
        criterion, target = "target_precision", args.target_precision
    check_can_store(args.run, args.overwrite)  # fail before minutes of prediction, not after
    payload, tables = choose_threshold(
        args.run, args.data, criterion=criterion, target=target, delta=args.delta,
        reference_level=args.reference_level, query=case_query(args), options=run_options(args),
    )
    path = write_threshold_file(args.run, payload, overwrite=args.overwrite)
    goal = criterion.replace("_", " ") + ("" if target is None else f" {target:g}")
    print(f"{len(payload['cases'])} case(s), reference {payload['reference']}, {goal}")
    for task, point in payload["tasks"].items():
        print(f"\n{task}: threshold {point['threshold']:.2f}  precision {point['precision']:.4f}  "
              f"recall {point['recall']:.4f}  F1 {point['f1']:.4f}")
        if "risk" in point:
            print(f"guarantee: {point['risk']['guarantee']}; calibration risk "
                  f"{point['risk']['calibration_risk']:.4f}")
        print(format_tradeoff(tables[task], chosen=point["threshold"], every=args.every))
    print(f"\nstored in {path}; 'softseg predict' writes masks at it by default")
    return 0


def _register_export(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a run to ONNX (probabilities out) with a preprocessing sidecar JSON",
        description="Export RUN (a run or a folder of seeds, averaged) to ONNX. Input: the "
        "z-scored image padded to multiples of 32, (N, C, H, W) with dynamic N, H, W; output: "
        "probabilities (N, T, H, W), after the runs' stored temperatures as in 'softseg "
        "predict'. Writes <name>.json beside it describing preprocessing and temperatures.",
    )
    parser.add_argument("run", type=Path, metavar="RUN", help="run folder or folder of seeds")
    parser.add_argument("--onnx", required=True, type=Path, metavar="FILE",
                        help="the .onnx file to write")
    parser.add_argument("--height", type=int, default=None,
                        help="example input height, a multiple of 32 (default: the run's size)")
    parser.add_argument("--width", type=int, default=None,
                        help="example input width, a multiple of 32 (default: the run's size)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    add_checkpoint(parser)
    add_temperature(parser)
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the onnxruntime check against PyTorch (1e-4)")
    add_overwrite(parser, "replace an existing .onnx file and its sidecar")
    keep_memory(parser)
    parser.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from softseg.inference.export import export_onnx, sidecar_path

    path = export_onnx(args.run, args.onnx, height=args.height, width=args.width, opset=args.opset,
                       options=run_options(args), overwrite=args.overwrite, verify=args.verify)
    sidecar = json.loads(sidecar_path(path).read_text())
    difference = sidecar["verified_max_abs_difference"]
    checked = "not verified" if difference is None else f"max |ONNX - PyTorch| = {difference:.1e}"
    print(f"wrote {path} and {sidecar_path(path)} ({checked})")
    return 0
