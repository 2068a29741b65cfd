"""Temperature scaling (Guo et al. 2017): one scalar T > 0 per run (seed) and task.

Prediction divides the logits by T before the sigmoid, ``p = sigmoid(z / T)``: T > 1 softens
over-confident maps, T < 1 sharpens timid ones. Because ``z / T >= 0`` exactly when
``z >= 0`` the 0.5 mask and the ranking of pixels do not change; only the confidence levels do
(other thresholds, ECE, the soft maps).

What is fitted, for each run and each task of it, on the calibration cases (by default the
run's own validation cases, ``split.json``):

* T minimises the mean soft binary cross-entropy against the soft label g (the fraction of
  raters), over all pixels of all calibration cases pooled::

      CE(T) = mean_pixels -[g log sigmoid(z/T) + (1 - g) log(1 - sigmoid(z/T))]
            = mean_pixels softplus(z/T) - g z/T

  It is at least the mean entropy of g, with equality exactly when ``sigmoid(z/T) = g``
  everywhere, so labels made as ``g = sigmoid(z / T0)`` give back T0.
* On the source grid: the logits z are resized back to each image's own grid (the resize of
  :mod:`softseg.inference.arrays`, applied to the logits, not to probabilities) and compared
  with the soft label there, pixel for pixel, like the evaluation. Prediction then applies
  T on the model's grid and resizes the probabilities back; for a run trained without
  ``--resize`` the two grids are the same, otherwise they differ only by the interpolation.
* One pass per image: no test-time flips (``--tta flip`` averages probabilities made with
  this T), no other seed (each seed of an ensemble is calibrated on its own, and the mean of
  calibrated seeds is what prediction averages).

The file ``RUN/seedN/temperature.json`` is written and read by :mod:`softseg.inference.runs`;
it names the checkpoint it was fitted for, and prediction with another checkpoint is an error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from softseg import __version__
from softseg.data.cases import Case, CaseQuery, Dataset
from softseg.data.datasets import load_dataset
from softseg.errors import SoftsegError
from softseg.inference import BATCH_SIZE, RunOptions
from softseg.inference.arrays import predict_source_logits
from softseg.inference.predict import check_run_channels
from softseg.inference.runs import (
    SPLIT_FILE,
    LoadedRun,
    load_run,
    resolve_runs,
    validation_ids,
    warn_best_on_validation,
)
from softseg.inference.run_files import (
    check_can_store_temperature,
    checkpoint_key,
    write_temperature_file,
)
from softseg.model.heads import head_of
from softseg.model.runtime import resolve_device
from softseg.model.temperature import T_MAX, T_MIN

log = logging.getLogger(__name__)

def _source_logits(run: LoadedRun, cases: Sequence[Case], batch_size: int, progress: bool):
    """``(case, logits (K, *spatial) on its own grid)`` for every case, ``batch_size`` images a
    pass, with a progress bar."""
    with tqdm(total=len(cases), desc=f"calibrate {run.run_dir.name}", unit="image", disable=not progress) as bar:
        for start in range(0, len(cases), batch_size):
            batch = cases[start : start + batch_size]
            yield from zip(batch, predict_source_logits(run, [c.image for c in batch], [c.spacing for c in batch]))
            bar.update(len(batch))


def _calibration_cases(
    dataset: Dataset, data: Path, run_dir: Path, tasks: Sequence[str],
    split: str | None, case_ids: Sequence[str] | None,
) -> tuple[list[Case], str]:
    """The labelled cases one run is calibrated on and how they were chosen; SoftsegError
    for an empty or unknown selection, a task the dataset lacks, or an unlabelled case."""
    missing_tasks = [task for task in tasks if task not in dataset.tasks]
    if missing_tasks:
        raise SoftsegError(
            f"{data}: no labels of task(s) {', '.join(missing_tasks)} that the run {run_dir} "
            f"predicts (the dataset has {', '.join(dataset.tasks) or 'none'}); calibrate on "
            "the data the run was trained on"
        )
    if split is not None:
        cases, chosen_by = list(dataset.select(split=split).cases), f"split {split}"
        if not cases:
            raise SoftsegError(f"{data}: no cases in split {split!r}; check --split")
    else:
        if case_ids is not None:
            ids, chosen_by = list(case_ids), "--cases"
        else:
            way_out = "pass --split NAME or --cases ID ... to choose the calibration cases"
            ids, chosen_by = validation_ids(run_dir, way_out), f"the run's validation ids ({SPLIT_FILE})"
            if not ids:
                raise SoftsegError(f"{run_dir / SPLIT_FILE}: the run has no validation cases; {way_out}")
        cases = list(dataset.select(case_ids=ids).cases)
        unknown = sorted(set(ids) - {case.case_id for case in cases})
        if unknown:
            raise SoftsegError(
                f"{data}: case(s) {', '.join(unknown[:10])} ({chosen_by}) are not in this dataset; "
                "give the data the run was trained on, or choose other cases"
            )
    unlabelled = [f"{c.case_id} ({t})" for c in cases for t in tasks if not c.is_labelled(t)]
    if unlabelled:
        raise SoftsegError(
            f"{data}: {len(unlabelled)} calibration case/task(s) have no labels: "
            f"{', '.join(unlabelled[:10])}; choose labelled cases (e.g. --split Validation)"
        )
    return cases, chosen_by


def fit_run(
    run: LoadedRun, cases: Sequence[Case], batch_size: int = BATCH_SIZE, progress: bool = True
) -> dict[str, dict]:
    """Per task of the loaded ``run`` (its temperatures, if any, are ignored): T fitted on the
    labelled ``cases``, pixel count, and soft CE, ECE and Brier score before and after (one T
    per task, or one for a softmax head: see :meth:`softseg.model.heads.Head.fit_temperatures`)."""
    fitted = head_of(run.config).fit_temperatures(_source_logits(run, cases, batch_size, progress), run.config)
    for task, entry in fitted.items():
        if entry["at_bound"]:
            log.warning("%s %s: the fitted temperature %.4g is at the end of the search interval "
                        "[%g, %g]; the logits barely depend on the image", run.run_dir, task,
                        entry["temperature"], T_MIN, T_MAX)
    return fitted


def calibrate(
    run: str | Path,
    data: str | Path,
    *,
    query: CaseQuery = CaseQuery(),
    options: RunOptions = RunOptions(),
    overwrite: bool = False,
) -> dict[Path, dict]:
    """Fit one temperature per task for every run (seed) of ``run`` and write each run's
    ``temperature.json``; returns ``{written path: its content}``.

    Cases: those of the query's ``split``, or its ``case_ids``, or (neither given) each run's
    own validation cases from its ``split.json``. ``options``: the checkpoint, batch size,
    device and progress bar (the temperature fitted is for the raw logits, one pass each). Every problem (an existing file without ``overwrite``, no
    cases, an unknown or unlabelled case, a task the dataset lacks, another channel count)
    raises SoftsegError before anything is computed or written.
    """
    layout, split, case_ids = query.layout, query.split, query.case_ids
    checkpoint, batch_size, progress = options.checkpoint, options.batch_size, options.progress
    if split is not None and case_ids is not None:
        raise SoftsegError("give either --split or --cases, not both")
    if batch_size < 1:
        raise SoftsegError(f"--batch-size must be at least 1, got {batch_size}")
    run_dirs = resolve_runs([run]).run_dirs
    for run_dir in run_dirs:  # before minutes of prediction, not after
        check_can_store_temperature(run_dir, overwrite)
    dataset = load_dataset(data, layout=layout)
    device = resolve_device(options.device or "auto")
    # the raw logits: a temperature.json already there must not scale what is fitted
    loaded = [load_run(run_dir, checkpoint=checkpoint, device=device, temperature="off")
              for run_dir in run_dirs]
    selections = []
    for one in loaded:
        head_of(one.config).check_temperature(one.run_dir)  # before minutes of prediction
        cases, chosen_by = _calibration_cases(dataset, Path(data), one.run_dir, one.tasks, split, case_ids)
        check_run_channels(cases, one)
        selections.append((cases, chosen_by))
    payloads = {}
    for one, (cases, chosen_by) in zip(loaded, selections):
        warn_best_on_validation([one], [case.case_id for case in cases], "calibrating on")
        payloads[one.run_dir] = {
            "softseg_version": __version__,
            "method": f"temperature scaling (Guo et al. 2017): p = {head_of(one.config).temperature_method}",
            "objective": head_of(one.config).temperature_objective
                         + ", all pixels of all cases pooled, on each image's own grid (logits resized back)",
            "search": f"bounded Brent search over log T, T in [{T_MIN:g}, {T_MAX:g}]",
            "checkpoint": checkpoint,
            "checkpoint_file": checkpoint_key(one.run_dir, one.checkpoint),
            "checkpoint_epoch": one.epoch,
            "data": str(Path(data).resolve()),
            "layout": dataset.layout,
            "cases_from": chosen_by,
            "cases": [case.case_id for case in cases],
            "tasks": fit_run(one, cases, batch_size, progress),
        }
    return {write_temperature_file(run_dir, payload, overwrite=overwrite): payload
            for run_dir, payload in payloads.items()}


def format_calibration(results: dict[Path, dict]) -> str:
    """A plain-text table: one line per run and task with T and the soft CE and ECE before
    and after."""
    lines = [f"{'run':<12} {'task':<10} {'T':>7}  {'soft CE before -> after':>24}  "
             f"{'ECE before -> after':>20}  {'pixels':>10}"]
    for path, payload in results.items():
        for task, entry in payload["tasks"].items():
            lines.append(
                f"{path.parent.name:<12} {task:<10} {entry['temperature']:>7.4f}  "
                f"{entry['soft_ce_before']:>11.4f} -> {entry['soft_ce_after']:<9.4f}  "
                f"{entry['ece_before']:>9.4f} -> {entry['ece_after']:<7.4f}  {entry['n_pixels']:>10}"
            )
    return "\n".join(lines)
