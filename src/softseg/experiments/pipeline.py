"""The steps every experiment repeats: train one run, predict held-out cases, evaluate, read
the numbers back. Each step calls the module that owns it and is skipped when its output
is already complete, which is what makes experiments resumable.

Completion markers are the files each step writes last and atomically:
``predictions.json`` (predictions), ``summary.json`` (evaluation).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

from softseg.model.config import TrainConfig
from softseg.data.cases import Case, Dataset
from softseg.errors import SoftsegError
from softseg.evaluation.result import EvaluationResult, MeanStd, mean_stds, read_result

log = logging.getLogger(__name__)

# The checkpoint experiments evaluate. Training monitors the held-out cases, so "best" would
# be chosen on the test set; the paper's fixed schedule (cosine to lr_min) ends at "last".
# The same as softseg.inference.DEFAULT_CHECKPOINT, what the commands load (tests pin both);
# spelled out here because the experiments must never follow that default elsewhere.
EVAL_CHECKPOINT = "last"
SEEDS = (0, 1, 2)  # SPEC.md "Repeats": 3 runs per model


def train_or_resume(
    config: TrainConfig,
    dataset: Dataset,
    run_dir: Path,
    train_ids: Sequence[str],
    val_ids: Sequence[str],
    *,
    progress: bool = True,
) -> Path:
    """One training run (``softseg.training.train.train``), or the rest of it: an existing run
    folder is resumed from its last checkpoint (a finished run returns at once). Returns the
    run folder."""
    from softseg.training.train import train

    run_dir = Path(run_dir)
    resume = run_dir.exists() and any(run_dir.iterdir())
    if resume:
        log.info("%s exists: resuming its training", run_dir)
    return Path(train(config, dataset, run_dir, list(train_ids), list(val_ids), resume=resume, progress=progress))


def predict_cases(
    run_dirs: Sequence[Path], cases: Sequence[Case], out_dir: Path, *, tta: str = "none",
    temperature: Sequence[float] | None = None, progress: bool = True, samples: int = 0,
) -> Path:
    """Probability maps of ``cases`` from ``run_dirs`` (averaged) into ``out_dir/<case>/<task>.*``.

    Several calls may write into one ``out_dir`` (the folds of a cross-validation pool their
    held-out predictions there); ``predictions.json`` lists every case written so far and is
    rewritten last. Uses the checkpoint :data:`EVAL_CHECKPOINT`. A ``temperature.json`` in a
    run is ignored: an experiment applies exactly ``temperature`` (one T per task, the runs'
    task order; None for none) and ``tta`` ("none" or "flip"). ``samples``: that many
    hypotheses per case beside the maps (a sampling run's draws). The one prediction path of
    ``softseg predict`` (:func:`softseg.inference.predict.write_predictions`) does the work.
    """
    import dataclasses

    from softseg.inference import RunOptions
    from softseg.inference.outputs import CaseFiles
    from softseg.inference.predict import selection_source, write_predictions
    from softseg.inference.runs import load_models

    loaded = load_models([Path(r) for r in run_dirs], device="auto", checkpoint=EVAL_CHECKPOINT,
                         temperature="off")
    if temperature is not None:
        loaded = [dataclasses.replace(run, temperature=tuple(float(t) for t in temperature)) for run in loaded]
    cases = list(cases)
    # resume: the folder collects the folds; overwrite: a resumed fold may have written
    # some of its cases before it was interrupted
    options = RunOptions(checkpoint=EVAL_CHECKPOINT, temperature="off", tta=tta, progress=progress)
    written = CaseFiles(samples=samples)
    write_predictions(loaded, cases, out_dir, source=selection_source(cases), written=written, options=options,
                      overwrite=True, resume=True)
    return Path(out_dir)


def fitted_temperatures(run_dir: Path, cases: Sequence[Case], *, progress: bool = True) -> dict[str, float]:
    """Per task, the temperature of the run's :data:`EVAL_CHECKPOINT` fitted on ``cases``
    (:func:`softseg.inference.calibration.fit_run`: soft cross-entropy, no TTA)."""
    from softseg.inference.calibration import fit_run
    from softseg.inference.runs import load_models

    (loaded,) = load_models([Path(run_dir)], device="auto", checkpoint=EVAL_CHECKPOINT, temperature="off")
    fitted = fit_run(loaded, list(cases), progress=progress)
    return {task: float(fitted[task]["temperature"]) for task in loaded.tasks}


def evaluate_predictions(
    pred_dir: Path, dataset: Dataset, case_ids: Sequence[str], eval_dir: Path, *, progress: bool = True,
    samples: Sequence[int] = (),
) -> Path:
    """Evaluate the predictions of ``case_ids`` against ``dataset`` into ``eval_dir``
    (``softseg.evaluation.evaluate.evaluate``, with ``samples`` its hypothesis counts); an
    existing complete evaluation is kept."""
    from softseg.data.cases import CaseQuery
    from softseg.evaluation.evaluate import evaluate

    eval_dir = Path(eval_dir)
    if (eval_dir / "summary.json").is_file():
        return eval_dir
    # evaluate publishes its folder only when complete, so an existing one without
    # summary.json is not its output: leave it to the user rather than delete it
    evaluate(pred_dir, dataset, eval_dir, query=CaseQuery(case_ids=tuple(case_ids)), samples=tuple(samples),
             progress=progress)
    return eval_dir


def read_summary(eval_dir: Path) -> EvaluationResult:
    """The evaluation result of ``eval_dir`` (:func:`softseg.evaluation.result.read_result`)."""
    return read_result(eval_dir)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SoftsegError(
            f"{path}: cannot read ({error}); delete the folder holding it and rerun with --resume"
        ) from error


def load_result(path: Path) -> dict | None:
    """An experiment's ``result*.json`` (the per-seed values of a finished step), None if absent."""
    return _read_json(path) if Path(path).is_file() else None


def check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    """The distinct seeds in order; SoftsegError when there are none."""
    seeds = tuple(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise SoftsegError("--seeds: expected at least one seed, e.g. --seeds 0 1 2")
    return seeds


def mean_and_spread(value: MeanStd | float | None) -> tuple[float, float]:
    """A summary value as (mean, std): a :class:`MeanStd`, or a number with no spread;
    NaN for whatever is undefined."""
    if isinstance(value, MeanStd):
        return (math.nan if value.mean is None else value.mean,
                math.nan if value.std is None else value.std)
    return (math.nan if value is None else float(value)), math.nan


def task_values(result: EvaluationResult, task: str) -> dict[str, tuple[float, float]]:
    """Per metric key of :mod:`softseg.evaluation.registry`: (value, spread) of one task in one evaluation.

    Table 2 values are means over cases and thresholds, Table 3 means over cases, the QUBIQ
    score and calibration as evaluated; ``hd95_undefined`` counts cases x thresholds where
    HD95 is undefined (one mask empty); ``dice_at_0.5`` is the mean over cases of
    Dice(prediction >= 0.5, soft label >= 0.5); with hypotheses (evaluate --samples) also
    ``ged_map`` and ``ged_N``, ``hmiou_N``, ``diversity_N``.
    """
    entry = result.tasks.get(task)
    if entry is None:
        raise SoftsegError(f"evaluation summary has no task {task!r} (tasks: {sorted(result.tasks)})")
    values: dict[str, tuple[float, float]] = {}
    for table in (entry.table2, entry.table3):
        if table is not None:
            values.update({key: mean_and_spread(v) for key, v in mean_stds(table).items()})
    values["qubiq"] = mean_and_spread(entry.qubiq)
    values["ece"] = mean_and_spread(entry.calibration.ece)
    values["brier"] = mean_and_spread(entry.calibration.brier)
    values["hd95_undefined"] = mean_and_spread(entry.hd95_undefined)
    if 0.5 in entry.table2_by_threshold.threshold:
        values["dice_at_0.5"] = mean_and_spread(entry.table2_by_threshold.at("dice", 0.5))
    values.update({key: mean_and_spread(v) for key, v in (entry.sampled or {}).items()})
    return values
