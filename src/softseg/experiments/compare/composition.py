"""``softseg compare``: methods (label mode, loss) side by side on identical splits and seeds,
with paired statistics against a reference and, optionally, smaller training sets.

A composition of the library's steps (:mod:`softseg.experiments.pipeline`); nothing here
trains, predicts or measures by itself. The methods are parsed in
:mod:`~softseg.experiments.compare.methods`, the split planned in
:mod:`~softseg.experiments.compare.splits`, the training fractions in
:mod:`~softseg.experiments.compare.fractions`, the statistics computed in
:mod:`~softseg.experiments.compare.statistics`, the side-by-side tables written by
:mod:`~softseg.experiments.compare.tables` and the other files by
:mod:`~softseg.experiments.compare.outputs`. Every finished step leaves a file that a rerun
with ``resume=True`` skips over, and an interrupted training resumes from its last
checkpoint; a rerun with other methods or fractions reuses every run already finished.

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
from softseg.evaluation.registry import ALL_CLASSES
from softseg.evaluation.sampled import check_counts
from softseg.experiments import pipeline as steps
from softseg.experiments.cells import cells
from softseg.experiments.compare import outputs as files
from softseg.experiments.compare.fractions import FULL, check_fractions, fraction_folder, prepare_fractions
from softseg.experiments.compare.methods import DEFAULT_METHODS, Method, parse_methods
from softseg.experiments.compare.splits import SplitPlan, plan_splits, save_plan
from softseg.experiments.compare.statistics import CLASS_METRICS, METRICS, paired_statistics
from softseg.experiments.compare.tables import class_cells, write_comparison
from softseg.experiments.compare.variants import predict_crossfitted
from softseg.errors import SoftsegError
from softseg.files import prepare_out_dir, write_json_atomic
from softseg.inference.outputs import PREDICTIONS_FILE, read_record
from softseg.model.config import TrainConfig
from softseg.model.heads import head_of

__all__ = ["compare", "CompareOptions"]


@dataclass(frozen=True)
class CompareOptions:
    """Which methods, splits, seeds and training fractions; ``config`` is the network and
    procedure for all methods (its ``label_mode``, ``loss`` and ``seed`` are set per run)."""

    config: TrainConfig = TrainConfig()
    methods: tuple[str, ...] = DEFAULT_METHODS  # LABEL[:LOSS][@VARIANT] each (compare.methods)
    # the method the others are tested against; None: softseg's default method (soft:ce+dml)
    # when among the methods, else the first of them
    reference: str | None = None
    seeds: tuple[int, ...] = steps.SEEDS
    folds: int | None = None  # None: a fixed split (split_csv, or the dataset's own)
    run_folds: tuple[int, ...] | None = None  # only these folds of the K (default: all)
    split_seed: int = 0  # seeds the folds and the training fractions' permutation
    group_regex: str | None = None
    patients_csv: Path | None = None
    split_csv: Path | None = None  # columns case,split; replaces the dataset's own split
    fractions: tuple[float, ...] = (FULL,)  # of each fold's training patients; 1.0 always run
    bootstrap_seed: int = 0
    # hypothesis counts N scored as the LIDC benchmark does (evaluate --samples): D²_GED of the
    # map at 0.5 and, per N, D²_GED, HM-IoU and diversity; none by default
    samples: tuple[int, ...] = ()


def compare(
    dataset: Dataset, out: Path, options: CompareOptions = CompareOptions(), *, resume: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Train each method on identical splits and seeds (and training fractions), evaluate each
    on the held-out cases and write the tables, statistics and figures. Layout::

        OUT/compare.json, folds.json | split.json, fractions.json (with fractions < 1)
        OUT/<label>-<loss>/seed<S>/fold<F>/         one run per fold (``run/`` for a fixed split)
        OUT/<label>-<loss>/seed<S>/predictions/     held-out maps of every fold, pooled
        OUT/<label>-<loss>/seed<S>/eval/            their evaluation
        OUT/<label>-<loss>/seed<S>/result.json      per-task values; present = finished
        OUT/<label>-<loss>/seed<S>/frac<f>/...      the same for a training fraction f < 1
        OUT/<label>-<loss>@<variant>/seed<S>/...    an inference variant: predictions, eval,
                                                    result (and temperatures.json); its models
                                                    are the trained method's
        OUT/comparison.*, per_fold.csv, statistics.*, paired-<task>.png, fractions.*

    With ``run_folds`` (a subset of the K folds) the evaluation and result are named after
    the folds run: ``eval-fold0/``, ``result-fold0.json``. Every problem with the options
    is raised (:class:`SoftsegError`) before anything is written. Cases that cannot train or
    be tested (no label for a trained task) never enter folds or fractions
    (:func:`~softseg.experiments.compare.splits.plan_splits`).
    """
    methods, reference = parse_methods(options.methods, options.reference)
    seeds = steps.check_seeds(options.seeds)
    fractions = check_fractions(options.fractions)
    check_counts(options.samples)
    out = prepare_out_dir(Path(out), overwrite=None, resume=resume, what="compare", create=False)
    tasks = tuple(options.config.tasks or dataset.tasks)
    plan = plan_splits(
        dataset, out, tasks=tasks, folds=options.folds, run_folds=options.run_folds,
        split_seed=options.split_seed, group_regex=options.group_regex, patients_csv=options.patients_csv,
        split_csv=options.split_csv,
    )
    manifest = out / "fractions.json"
    if len(fractions) > 1:
        prepare_fractions(manifest, plan.folds, plan.patients, fractions, options.split_seed, write=False)
    out.mkdir(parents=True, exist_ok=True)
    save_plan(out, plan)
    subsets = (prepare_fractions(manifest, plan.folds, plan.patients, fractions, options.split_seed)
               if len(fractions) > 1 else {f.name: {FULL: f.train} for f in plan.folds})
    write_json_atomic(out / "compare.json", {
        "data": str(Path(dataset.root).resolve()),
        "methods": [{"name": m.name, "folder": m.folder, "label_mode": m.label_mode, "loss": m.loss,
                     "head": m.head, "variant": m.variant, "models": m.trained.folder} for m in methods],
        "reference": reference.name, "seeds": list(seeds), "fractions": list(fractions),
        "split": plan.note, "left_out": list(plan.left_out), "config": _config_dict(options.config),
        "samples": list(options.samples),
    })
    results, eval_dirs = {}, {}
    jobs = [(m, s, f) for m in methods for s in seeds for f in reversed(fractions)]
    for method, seed, fraction in tqdm(jobs, desc="compare", unit="model", disable=not progress):
        base, runs = (_seed_dir(out, m, seed, fraction) for m in (method, method.trained))
        result = steps.load_result(base / f"result{plan.tag}.json")
        if result is None:
            folds = [(f.name, subsets[f.name][fraction], f.test) for f in plan.folds]
            config = method.config(options.config, seed)
            result = _compare_one(dataset, base, runs, folds, config, tasks, method, plan.tag,
                                  options.split_seed, progress, options.samples)
        results[(method.name, fraction, seed)] = result
        eval_dirs[(method.name, fraction, seed)] = base / f"eval{plan.tag}"
    return _write_outputs(out, plan, methods, reference, seeds, fractions, tasks, results, eval_dirs, options,
                          classes=bool(dataset.classes))


def _write_outputs(
    out: Path, plan: SplitPlan, methods: Sequence[Method], reference: Method, seeds: Sequence[int],
    fractions: Sequence[float], tasks: Sequence[str], results: dict, eval_dirs: dict, options: CompareOptions,
    classes: bool = False,
) -> dict[str, Path]:
    """The tables, statistics and figures; with ``classes`` (multi-class data) also the
    calibration over all classes, as the row group ``ALL_CLASSES`` after the tasks."""
    table = {task: {m.name: cells([results[(m.name, FULL, s)][task] for s in seeds]) for m in methods}
             for task in tasks}
    samples = options.samples
    case_values = {run: files.read_case_values(path, tasks, METRICS + files.sampled_columns(samples))
                   for run, path in eval_dirs.items()}
    groups, columns = tuple(tasks), files.FOLD_COLUMNS + files.sampled_columns(samples)
    if classes:
        for run, path in eval_dirs.items():
            case_values[run] = {**case_values[run], **files.read_class_values(path)}
        table[ALL_CLASSES] = {m.name: class_cells([case_values[(m.name, FULL, s)] for s in seeds]) for m in methods}
        groups, columns = (*groups, ALL_CLASSES), (*columns, *CLASS_METRICS)
    written = {"per_fold": files.write_csv(out / "per_fold.csv", columns,
                                           files.per_fold_rows(case_values, plan.folds, groups, samples))}
    per_seed = {m.name: [case_values[(m.name, FULL, s)] for s in seeds] for m in methods}
    comparisons = [c for group in groups for c in paired_statistics(
        per_seed, reference.name, [group], files.task_metrics(group, samples), seed=options.bootstrap_seed)]
    stats_note = files.conventions(reference.name, options.bootstrap_seed)
    written["statistics_csv"], written["statistics_json"] = files.write_statistics(out, comparisons, stats_note)
    paired = files.write_paired_figures(out, comparisons, groups)
    written.update({f"paired_{files.file_stem(group)}": path for group, path in paired.items()})
    extra = files.statistics_markdown(comparisons, groups, stats_note, paired)
    if len(fractions) > 1:
        rows = files.fraction_rows(results, tasks)
        written["fractions"] = files.write_csv(out / "fractions.csv", files.FRACTION_COLUMNS, rows)
        figures = files.write_fraction_figures(out, rows, tasks)
        written.update({f"fractions_{task}": path for task, path in figures.items()})
        extra += "\n" + files.fractions_markdown(rows, figures)
    paths = write_comparison(out, table, _note(plan, options.config, seeds), extra)
    return {**{p.suffix.lstrip("."): p for p in paths}, **written}


def _note(plan: SplitPlan, c: TrainConfig, seeds: Sequence[int]) -> str:
    return (
        f"{plan.note}. Same network and procedure for every method: {c.encoder}, {c.epochs} epochs, "
        f"crop {c.crop_size}, resize {c.resize}, batch {c.batch_size} + {c.aug_copies} augmented copies, "
        f"encoder weights {c.encoder_weights}; last checkpoint evaluated. Methods are label:loss. Labels: "
        "soft = mean of the raters' masks; majority = majority vote (ties to foreground); random_rater = "
        "one rater drawn per sample per step; staple = STAPLE consensus ≥ 0.5. Losses: ce = soft "
        f"cross-entropy; dml = Dice semimetric loss; ce+dml = their sum (DML weight {c.dml_weight:g}). "
        f"ssn = Stochastic Segmentation Network (rank {c.ssn_rank} logit covariance, one rater drawn per "
        f"image per step, {c.ssn_samples}-sample Monte Carlo likelihood; maps: mean of {c.ssn_eval_samples} "
        "seeded samples). "
        "Variants (@) predict with the trained method's models: tta = mean over the training flips; "
        "ts = temperature scaling, each half of a fold's held-out cases scaled by the temperature "
        "fitted on the other half. "
        f"Cells: mean ± population std over {len(seeds)} seed(s) {list(seeds)}. "
        "Last column: is E[1−IoU(y,ŷ)] below the raters' own diversity E[1−IoU(y,y′)]?"
    )


def _seed_dir(out: Path, method: Method, seed: int, fraction: float) -> Path:
    base = out / method.folder / f"seed{seed}"
    return base if fraction == FULL else base / fraction_folder(fraction)


def _compare_one(
    dataset: Dataset, seed_dir: Path, runs_dir: Path, folds: Sequence[tuple[str, Sequence[str], Sequence[str]]],
    config: TrainConfig, tasks: Sequence[str], method: Method, tag: str = "", split_seed: int = 0,
    progress: bool = True, samples: Sequence[int] = (),
) -> dict:
    """Train (in ``runs_dir``: the trained method's folder), predict and evaluate (in
    ``seed_dir``: this method's) every fold; an inference variant reuses the trained runs.
    With ``samples`` a sampling head's predictions also write max(samples) draws per case
    (other heads' hypotheses are level sets of their maps, computed by the evaluation)."""
    pred_dir, eval_dir = seed_dir / "predictions", seed_dir / f"eval{tag}"
    tested: list[str] = []
    for name, train_ids, test_ids in folds:
        run_dir = runs_dir / name
        tested += test_ids
        if (eval_dir / "summary.json").is_file() or _fold_predicted(pred_dir, test_ids):
            continue
        steps.train_or_resume(config, dataset, run_dir, train_ids, test_ids, progress=progress)
        if method.temperature:
            predict_crossfitted(dataset, run_dir, test_ids, pred_dir, fold=name, split_seed=split_seed,
                                tta=method.tta, progress=progress)
        else:
            draws = max(samples) if samples and head_of(config).sampling else 0
            steps.predict_cases([run_dir], dataset.select(case_ids=list(test_ids)).cases, pred_dir,
                                tta=method.tta, progress=progress, samples=draws)
    if samples and head_of(config).sampling:
        _check_draws(pred_dir, eval_dir, max(samples))
    steps.evaluate_predictions(pred_dir, dataset, tested, eval_dir, progress=progress, samples=samples)
    summary = steps.read_summary(eval_dir)
    result = {task: steps.task_values(summary, task) for task in tasks}
    write_json_atomic(seed_dir / f"result{tag}.json", result)
    return result


def _check_draws(pred_dir: Path, eval_dir: Path, needed: int) -> None:
    """A sampling method's hypotheses are its own draws: refuse predictions written without
    enough of them (an earlier run without --samples), rather than score level sets of its map."""
    record = read_record(pred_dir / PREDICTIONS_FILE) or {}
    drawn = record.get("samples") or {}
    if drawn.get("source", "drawn") != "drawn" or drawn.get("count", 0) < needed:
        raise SoftsegError(
            f"{pred_dir}: --samples {needed} scores this method's own draws, but its predictions hold "
            f"{drawn.get('count', 0)} per case (written without --samples {needed}); delete {pred_dir} and "
            f"{eval_dir} and rerun with --resume (the trained models are kept)")


def _fold_predicted(pred_dir: Path, test_ids: Sequence[str]) -> bool:
    record = read_record(pred_dir / PREDICTIONS_FILE)
    return record is not None and set(test_ids) <= set(record.get("cases", []))


def _config_dict(config: TrainConfig) -> dict:
    from softseg.model.config import to_dict

    return to_dict(config)
