"""The steps every experiment repeats: train one run, predict held-out cases, evaluate, read
the numbers back. Each step calls the module that owns it and is skipped when its output
is already complete, which is what makes experiments resumable.

Completion markers are the files each step writes last and atomically:
``predictions.json`` (predictions), ``summary.json`` (evaluation).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from softseg.training.config import TrainConfig
from softseg.data.cases import Case, Dataset
from softseg.errors import SoftsegError

log = logging.getLogger(__name__)

# The checkpoint experiments evaluate. Training monitors the held-out cases, so "best" would
# be chosen on the test set; the paper's fixed schedule (cosine to lr_min) ends at "last".
EVAL_CHECKPOINT = "last"


def train(
    config: TrainConfig,
    dataset: Dataset,
    run_dir: Path,
    train_ids: Sequence[str],
    val_ids: Sequence[str],
    *,
    progress: bool = True,
) -> Path:
    """One training run (``softseg.training.train.train_run``). An existing run folder is resumed from
    its last checkpoint (a finished run returns at once). Returns the run folder."""
    from softseg.training.train import train_run

    run_dir = Path(run_dir)
    resume = run_dir.exists() and any(run_dir.iterdir())
    if resume:
        log.info("%s exists: resuming its training", run_dir)
    return Path(train_run(config, dataset, run_dir, list(train_ids), list(val_ids), resume=resume, progress=progress))


def predict_cases(
    run_dirs: Sequence[Path], cases: Sequence[Case], out_dir: Path, *, progress: bool = True
) -> Path:
    """Probability maps of ``cases`` from ``run_dirs`` (averaged) into ``out_dir/<case>/<task>.*``.

    Several calls may write into one ``out_dir`` (the folds of a cross-validation pool their
    held-out predictions there); ``predictions.json`` lists every case written so far and is
    rewritten last. Uses the checkpoint :data:`EVAL_CHECKPOINT`. The one prediction path of
    ``softseg predict`` (:func:`softseg.inference.predict.predict_to_folder`) does the work.
    """
    from softseg.inference.predict import predict_to_folder, selection_source
    from softseg.inference.runs import load_models

    loaded = load_models([Path(r) for r in run_dirs], device="auto", checkpoint=EVAL_CHECKPOINT)
    cases = list(cases)
    # resume: the folder collects the folds; overwrite: a resumed fold may have written
    # some of its cases before it was interrupted
    predict_to_folder(
        loaded, cases, out_dir, source=selection_source(cases), checkpoint=EVAL_CHECKPOINT,
        overwrite=True, resume=True, progress=progress,
    )
    return Path(out_dir)


def evaluate(
    pred_dir: Path, dataset: Dataset, case_ids: Sequence[str], eval_dir: Path, *, progress: bool = True
) -> Path:
    """Evaluate the predictions of ``case_ids`` against ``dataset`` into ``eval_dir``
    (``softseg.evaluation.evaluate.evaluate``); an existing complete evaluation is kept."""
    from softseg.evaluation.evaluate import evaluate as evaluate_predictions

    eval_dir = Path(eval_dir)
    if (eval_dir / "summary.json").is_file():
        return eval_dir
    # evaluate publishes its folder only when complete, so an existing one without
    # summary.json is not its output: leave it to the user rather than delete it
    evaluate_predictions(pred_dir, dataset, eval_dir, case_ids=list(case_ids), progress=progress)
    return eval_dir


def read_summary(eval_dir: Path) -> dict[str, Any]:
    """``summary.json`` of an evaluation folder."""
    return _read_json(Path(eval_dir) / "summary.json")


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SoftsegError(f"{path}: cannot read ({error}); delete the folder holding it and rerun with --resume")


def mean_and_spread(value: Any) -> tuple[float, float]:
    """A summary entry as (mean, std): a number, ``{"mean", "std"}`` or ``[mean, std]``;
    (NaN, NaN) when absent or null."""
    if isinstance(value, bool) or value is None:
        return math.nan, math.nan
    if isinstance(value, (int, float)):
        return float(value), math.nan
    if isinstance(value, Mapping):
        mean, std = value.get("mean"), value.get("std")
        return (
            float(mean) if isinstance(mean, (int, float)) else math.nan,
            float(std) if isinstance(std, (int, float)) else math.nan,
        )
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return mean_and_spread({"mean": value[0], "std": value[1]})
    return math.nan, math.nan


def task_values(summary: Mapping[str, Any], task: str) -> dict[str, tuple[float, float]]:
    """Per metric key of :mod:`softseg.experiments.paper`: (value, spread) of one task in one evaluation.

    Table 2 values are means over cases and thresholds, Table 3 means over cases, the QUBIQ
    score and calibration as evaluated; ``hd95_undefined`` counts cases x thresholds where
    HD95 is undefined (one mask empty); ``dice_at_0.5`` is the mean over cases of
    Dice(prediction >= 0.5, soft label >= 0.5).
    """
    entry = summary.get("tasks", {}).get(task)
    if entry is None:
        raise SoftsegError(f"evaluation summary has no task {task!r} (tasks: {sorted(summary.get('tasks', {}))})")
    values: dict[str, tuple[float, float]] = {}
    for table in ("table2", "table3"):
        for key, value in (entry.get(table) or {}).items():
            values[key] = mean_and_spread(value)
    values["qubiq"] = mean_and_spread(entry.get("qubiq"))
    calibration = entry.get("calibration") or {}
    for key in ("ece", "brier"):
        values[key] = mean_and_spread(calibration.get(key))
    values["hd95_undefined"] = mean_and_spread(entry.get("hd95_undefined"))
    by_threshold = entry.get("table2_by_threshold") or {}
    thresholds = by_threshold.get("threshold") or []
    if 0.5 in thresholds and by_threshold.get("dice"):
        values["dice_at_0.5"] = mean_and_spread(by_threshold["dice"][thresholds.index(0.5)])
    return values
