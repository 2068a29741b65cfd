"""``softseg compare``: soft labels against the baselines on identical splits and seeds.

A composition of the library's steps (:mod:`softseg.experiments.pipeline`); nothing here
trains, predicts or measures by itself. Every finished step leaves a file that a rerun with
``resume=True`` skips over, and an interrupted training resumes from its last checkpoint.

Conventions stated in the outputs:

* Evaluation uses each run's **last** checkpoint, never one chosen on the evaluated cases.
* Over seeds, a cell is the mean ± population std of the per-seed values.
* Cross-validation: each fold's model predicts its held-out patients; the held-out
  predictions of all folds are pooled and evaluated together, once per method and seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from softseg.data.cases import Dataset
from softseg.errors import SoftsegError
from softseg.experiments import pipeline as steps
from softseg.experiments.folds import patient_map, prepare_folds
from softseg.experiments.tables import cells, write_comparison
from softseg.files import prepare_out_dir, write_json_atomic
from softseg.inference.outputs import PREDICTIONS_FILE, read_record
from softseg.training.config import LABEL_MODES, TrainConfig

__all__ = ["compare", "CompareOptions"]


@dataclass(frozen=True)
class CompareOptions:
    """Which methods, splits and seeds; ``config`` is the network and procedure for all methods
    (its ``label_mode`` and ``seed`` are set per run)."""

    config: TrainConfig = TrainConfig()
    methods: tuple[str, ...] = LABEL_MODES
    seeds: tuple[int, ...] = steps.SEEDS
    folds: int | None = None  # None: the dataset's own Training/Validation split
    run_folds: tuple[int, ...] | None = None  # only these folds of the K (default: all)
    split_seed: int = 0
    group_regex: str | None = None
    patients_csv: Path | None = None


def _splits(
    dataset: Dataset, out: Path, options: CompareOptions
) -> tuple[list[tuple[str, list[str], list[str]]], str]:
    """``[(run name, train ids, test ids)]`` per fold to run (``fold<F>``, or ``run`` for the
    official split) and a description for the tables."""
    ids = [c.case_id for c in dataset.cases]
    if options.folds is None:
        if options.run_folds is not None:
            raise SoftsegError("--run-folds selects folds of --folds K; give --folds too")
        train = [c.case_id for c in dataset.cases if c.split == "Training"]
        test = [c.case_id for c in dataset.cases if c.split == "Validation"]
        if not train or not test:
            raise SoftsegError(
                f"{dataset.root}: no official Training/Validation split ({len(train)} Training, "
                f"{len(test)} Validation cases); pass --folds K for patient-level cross-validation"
            )
        return [("run", train, test)], f"official split: {len(train)} Training, {len(test)} Validation cases"
    patients, grouping = patient_map(ids, group_regex=options.group_regex, mapping_csv=options.patients_csv)
    manifest = prepare_folds(out / "folds.json", patients, options.folds, options.split_seed, grouping)
    chosen = list(range(manifest.k)) if options.run_folds is None else sorted(set(options.run_folds))
    bad = [f for f in chosen if not 0 <= f < manifest.k]
    if bad or not chosen:
        raise SoftsegError(f"--run-folds {bad or 'none'}: expected fold numbers 0 ... {manifest.k - 1}")
    folds = [(f"fold{i}", list(manifest.train_ids(i)), list(manifest.test_ids(i))) for i in chosen]
    n_patients = len(set(patients.values()))
    n_tested = sum(len(test) for _, _, test in folds)
    which = "" if len(chosen) == manifest.k else f"; only fold(s) {chosen} run, {n_tested} held-out cases"
    return folds, (
        f"{manifest.k}-fold patient-level cross-validation of {len(ids)} cases / {n_patients} patients "
        f"(patients by {grouping}; split seed {manifest.seed}; manifest folds.json{which}); held-out "
        "predictions of the folds pooled, then evaluated"
    )


def compare(
    dataset: Dataset, out: Path, options: CompareOptions = CompareOptions(), *, resume: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Train each method in ``options.methods`` on identical splits and seeds, evaluate each on
    the held-out cases and write ``comparison.md``/``.csv``/``.json`` side by side. Layout::

        OUT/folds.json                              with --folds
        OUT/<method>/seed<S>/fold<F>/               one run per fold (``run/`` for the official split)
        OUT/<method>/seed<S>/predictions/           held-out maps of every fold, pooled
        OUT/<method>/seed<S>/eval/                  their evaluation
        OUT/<method>/seed<S>/result.json            per-task values; present = finished

    With ``run_folds`` (a subset of the K folds) the evaluation and result are named after
    the folds run: ``eval-fold0/``, ``result-fold0.json``.
    """
    unknown = [m for m in options.methods if m not in LABEL_MODES]
    if unknown or not options.methods:
        raise SoftsegError(f"--methods: expected some of {', '.join(LABEL_MODES)}, found {list(options.methods) or 'none'}")
    seeds = steps.check_seeds(options.seeds)
    out = prepare_out_dir(Path(out), overwrite=None, resume=resume, what="compare")
    folds, split_note = _splits(dataset, out, options)
    tasks = dataset.tasks if not options.config.tasks else options.config.tasks
    write_json_atomic(out / "compare.json", {
        "data": str(Path(dataset.root).resolve()), "methods": list(options.methods), "seeds": list(seeds),
        "split": split_note, "config": _config_dict(options.config),
    })
    # a subset of the folds gets its own evaluation, so runs of other subsets never mix
    all_folds = options.folds is None or options.run_folds is None or len(folds) == options.folds
    tag = "" if all_folds else "-" + "-".join(name for name, _, _ in folds)
    per_method: dict[str, list[dict]] = {}
    jobs = [(m, s) for m in options.methods for s in seeds]
    for method, seed in tqdm(jobs, desc="compare", unit="model"):
        seed_dir = out / method / f"seed{seed}"
        result = steps.load_result(seed_dir / f"result{tag}.json")
        if result is None:
            config = options.config.replace(label_mode=method, seed=seed)
            result = _compare_one(dataset, seed_dir, folds, config, tasks, tag, progress)
        per_method.setdefault(method, []).append(result)
    results = {
        task: {m: cells([r[task] for r in rs]) for m, rs in per_method.items()}
        for task in tasks
    }
    c = options.config
    note = (
        f"{split_note}. Same network and procedure for every method: {c.encoder}, {c.epochs} epochs, "
        f"crop {c.crop_size}, resize {c.resize}, batch {c.batch_size} + {c.aug_copies} augmented copies, "
        f"encoder weights {c.encoder_weights}; last checkpoint evaluated. soft = mean of the raters' masks; "
        "majority = majority vote (ties to foreground); random_rater = one rater drawn per sample per step. "
        f"Cells: mean ± population std over {len(seeds)} seed(s) {list(seeds)}. "
        "Last column: is E[1−IoU(y,ŷ)] below the raters' own diversity E[1−IoU(y,y′)]?"
    )
    paths = write_comparison(out, results, note)
    return {p.suffix.lstrip("."): p for p in paths}


def _compare_one(
    dataset: Dataset, seed_dir: Path, folds: Sequence[tuple[str, list[str], list[str]]], config: TrainConfig,
    tasks: Sequence[str], tag: str = "", progress: bool = True,
) -> dict:
    pred_dir, eval_dir = seed_dir / "predictions", seed_dir / f"eval{tag}"
    tested: list[str] = []
    for name, train_ids, test_ids in folds:
        run_dir = seed_dir / name
        tested += test_ids
        if (eval_dir / "summary.json").is_file() or _fold_predicted(pred_dir, test_ids):
            continue
        steps.train(config, dataset, run_dir, train_ids, test_ids, progress=progress)
        steps.predict_cases([run_dir], dataset.select(case_ids=test_ids).cases, pred_dir, progress=progress)
    steps.evaluate(pred_dir, dataset, tested, eval_dir, progress=progress)
    summary = steps.read_summary(eval_dir)
    result = {task: steps.task_values(summary, task) for task in tasks}
    write_json_atomic(seed_dir / f"result{tag}.json", result)
    return result


def _fold_predicted(pred_dir: Path, test_ids: Sequence[str]) -> bool:
    record = read_record(pred_dir / PREDICTIONS_FILE)
    return record is not None and set(test_ids) <= set(record.get("cases", []))


def _config_dict(config: TrainConfig) -> dict:
    from softseg.training.config import to_dict

    return to_dict(config)
