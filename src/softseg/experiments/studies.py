"""Experiments: the demo, the paper's protocol on QUBIQ, and baselines under k-fold or a fixed split.

Each is a composition of the library's steps (train -> predict -> evaluate -> tables/report);
nothing here trains, predicts or measures by itself. Outputs go to one folder per experiment;
every finished step leaves a file that a rerun with ``resume=True`` skips over, and an
interrupted training resumes from its last checkpoint.

Conventions stated in the outputs:

* Evaluation uses each run's **last** checkpoint (the paper's fixed cosine schedule), never
  one chosen on the evaluated cases.
* Over seeds, a table cell is the mean ± population std of the per-seed values; the paper's
  ``±`` is the spread over thresholds (Table 2) or cases (Table 3) of one run, which is kept
  as ``ours_spread`` in the CSV/JSON.
* Cross-validation: each fold's model predicts its held-out patients; the held-out
  predictions of all folds are pooled and evaluated together, once per method and seed.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

from tqdm import tqdm

from softseg.experiments import pipeline as steps
from softseg.experiments.demo import DemoResult, DemoSettings, demo
from softseg.experiments.folds import patient_map, prepare_folds
from softseg.files import prepare_out_dir, write_json_atomic
from softseg.experiments.paper import QUBIQ_TASKS, QubiqTask, select_tasks
from softseg.experiments.qubiq_release import locate_all
from softseg.experiments.tables import Cell, aggregate, write_comparison, write_paper_tables
from softseg.training.config import LABEL_MODES, TrainConfig, resolve_config
from softseg.data.cases import Dataset
from softseg.errors import SoftsegError

__all__ = [
    "demo", "DemoSettings", "DemoResult", "reproduce", "ReproduceOptions", "compare", "CompareOptions",
]

log = logging.getLogger(__name__)

SEEDS = (0, 1, 2)  # SPEC.md "Repeats": 3 runs per model
RESULT_FILE = "result.json"


# ----------------------------------------------------------------------------- shared


def _check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    seeds = tuple(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise SoftsegError("--seeds: expected at least one seed, e.g. --seeds 0 1 2")
    return seeds


def _cells(per_seed: Sequence[Mapping[str, Sequence[float]]]) -> dict[str, Cell]:
    """Aggregate per-seed ``{metric: (value, spread)}`` into one :class:`Cell` per metric."""
    keys = dict.fromkeys(k for values in per_seed for k in values)
    return {
        key: aggregate(
            [v[key][0] for v in per_seed if key in v], [v[key][1] for v in per_seed if key in v]
        )
        for key in keys
    }


def _load_result(path: Path) -> dict | None:
    return steps._read_json(path) if path.is_file() else None


# ----------------------------------------------------------------------------- reproduce


@dataclass(frozen=True)
class ReproduceOptions:
    """How far to scale the paper's protocol down. ``None`` keeps each preset's value."""

    tasks: tuple[str, ...] = ()  # task keys or dataset names; empty = all seven
    seeds: tuple[int, ...] = SEEDS
    epochs: int | None = None
    crop_size: int | None = None
    encoder_weights: str | None = None  # "imagenet" (the preset's), "none" or a file
    device: str | None = None
    config_file: Path | None = None  # YAML of TrainConfig settings applied over every preset


def _reproduce_config(task: QubiqTask, seed: int, options: ReproduceOptions) -> TrainConfig:
    given = {
        "epochs": options.epochs,
        "crop_size": options.crop_size,
        "encoder_weights": options.encoder_weights,
        "device": options.device,
    }
    config = resolve_config(task.key, options.config_file, given)
    return config.replace(seed=seed, label_mode="soft", tasks=(task.task,))


def _qubiq_dataset(found: Mapping[str, Path], task: QubiqTask) -> Dataset:
    """The Training and Validation cases of one QUBIQ dataset, with only ``task`` loaded."""
    from softseg.data.datasets import load_dataset

    parts = [
        load_dataset(found[split], layout="qubiq", tasks=(task.task,), splits=(split,)).select(split=split)
        for split in ("Training", "Validation")
    ]
    train, val = parts
    clash = sorted({c.case_id for c in train.cases} & {c.case_id for c in val.cases})
    if clash:
        raise SoftsegError(
            f"{found['Validation']}: Validation case ids {clash[:5]} repeat Training ones in "
            f"{found['Training']}; the official release numbers Validation cases after Training"
        )
    for name, part in (("Training", train), ("Validation", val)):
        if not part.cases:
            raise SoftsegError(f"{found[name]}/{name}: no cases found for {task.key}")
    return Dataset(train.root, train.name, train.layout, (task.task,), train.cases + val.cases)


def reproduce(
    root: Path, out: Path, options: ReproduceOptions = ReproduceOptions(), *, resume: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """The paper's protocol on a QUBIQ 2021 release under ``root``, written to ``out``.

    For each task: one soft-label model per seed (the task's preset), trained on the official
    Training split, predicting and evaluated on the official Validation split; then Tables 2
    and 3 beside the paper's values (``tables.md``/``.csv``/``.json``). Folder layout::

        OUT/<task>/seed<S>/               the run (model.find_runs(OUT/<task>) lists the seeds)
        OUT/<task>/predictions/seed<S>/   Validation probability maps
        OUT/<task>/eval/seed<S>/          evaluation folder
        OUT/<task>/result.json            per-seed values; present = task finished

    With ``resume`` a finished task is skipped and a half-finished one continues; without it
    a non-empty ``out`` is refused. The tables also keep tasks finished in ``out`` by earlier
    invocations (e.g. one ``--tasks`` at a time). Returns the paths of the three table files.
    """
    tasks = select_tasks(list(options.tasks))
    seeds = _check_seeds(options.seeds)
    found = locate_all(Path(root), list(dict.fromkeys(t.dataset for t in tasks)))
    out = prepare_out_dir(Path(out), overwrite=None, resume=resume, what="reproduce")
    write_json_atomic(out / "reproduce.json", {
        "root": str(Path(root).resolve()), **asdict(options), "seeds": seeds,
        "config_file": None if options.config_file is None else str(Path(options.config_file).resolve()),
    })
    results: dict[str, dict[str, Cell]] = {}
    for task in tqdm(tasks, desc="reproduce", unit="task"):
        task_dir = out / task.key
        result = _load_result(task_dir / RESULT_FILE)
        if result is None or result.get("seeds") != list(seeds):
            result = _reproduce_task(found[task.dataset], task, task_dir, seeds, options, progress)
        results[task.label] = _cells([{k: tuple(v) for k, v in s.items()} for s in result["per_seed"].values()])
    # tasks finished by earlier invocations into the same folder stay in the tables
    for task in QUBIQ_TASKS:
        earlier = _load_result(out / task.key / RESULT_FILE) if task.label not in results else None
        if earlier is not None:
            results[task.label] = _cells([{k: tuple(v) for k, v in s.items()} for s in earlier["per_seed"].values()])
    note = (
        f"Ours: mean ± population std over seeds of each seed's value (seeds {list(seeds)} in this "
        "invocation; n_seeds per row in tables.csv) "
        "(trained on the official Training split, evaluated on the official Validation split, last "
        "checkpoint). Paper: mean ± std over thresholds (Table 2) or cases (Table 3). "
        "Δ = ours − paper, in the table's units. HD95: maximum of the two directed 95th percentiles."
    )
    if options.epochs is not None or options.crop_size is not None or options.config_file is not None:
        note += (
            f" Changed from the paper's settings: epochs={options.epochs or 'preset'}, "
            f"crop={options.crop_size or 'preset'}, settings file {options.config_file}."
        )
    paths = write_paper_tables(out, results, note)
    return {p.suffix.lstrip("."): p for p in paths}


def _reproduce_task(
    found: Mapping[str, Path], task: QubiqTask, task_dir: Path, seeds: Sequence[int], options: ReproduceOptions,
    progress: bool = True,
) -> dict:
    dataset = _qubiq_dataset(found, task)
    train_ids = [c.case_id for c in dataset.cases if c.split == "Training"]
    val_ids = [c.case_id for c in dataset.cases if c.split == "Validation"]
    per_seed = {}
    for seed in seeds:
        run_dir = task_dir / f"seed{seed}"
        pred_dir, eval_dir = task_dir / "predictions" / f"seed{seed}", task_dir / "eval" / f"seed{seed}"
        if not (eval_dir / "summary.json").is_file():
            if not (pred_dir / "predictions.json").is_file():
                steps.train(_reproduce_config(task, seed, options), dataset, run_dir, train_ids, val_ids,
                            progress=progress)
                steps.predict_cases([run_dir], dataset.select(case_ids=val_ids).cases, pred_dir,
                                    progress=progress)
            steps.evaluate(pred_dir, dataset, val_ids, eval_dir, progress=progress)
        per_seed[str(seed)] = steps.task_values(steps.read_summary(eval_dir), task.task)
    result = {"task": task.key, "label": task.label, "seeds": list(seeds), "per_seed": per_seed}
    write_json_atomic(task_dir / RESULT_FILE, result)
    return result


# ----------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class CompareOptions:
    """Which methods, splits and seeds; ``config`` is the network and procedure for all methods
    (its ``label_mode`` and ``seed`` are set per run)."""

    config: TrainConfig = TrainConfig()
    methods: tuple[str, ...] = LABEL_MODES
    seeds: tuple[int, ...] = SEEDS
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
    seeds = _check_seeds(options.seeds)
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
        result = _load_result(seed_dir / f"result{tag}.json")
        if result is None:
            config = options.config.replace(label_mode=method, seed=seed)
            result = _compare_one(dataset, seed_dir, folds, config, tasks, tag, progress)
        per_method.setdefault(method, []).append(result)
    results = {
        task: {m: _cells([{k: tuple(v) for k, v in r[task].items()} for r in rs]) for m, rs in per_method.items()}
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
    record = _load_result(pred_dir / "predictions.json")
    return record is not None and set(test_ids) <= set(record.get("cases", []))


def _config_dict(config: TrainConfig) -> dict:
    from softseg.training.config import to_dict

    return to_dict(config)
