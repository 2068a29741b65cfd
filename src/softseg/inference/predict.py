"""Prediction: cases + loaded runs -> probability, std and mask files in a folder.

:func:`write_predictions` is the one path that predicts a set of cases into a folder: it
checks the cases against the runs, guards the folder (:func:`softseg.files.prepare_out_dir`),
writes each case's files (:mod:`softseg.inference.outputs`, which also describes the layout)
and the ``predictions.json`` record last. ``softseg predict`` (:func:`predict_folder`) reads its
input with :mod:`softseg.inference.inputs` and calls it; so do the experiments
(:func:`softseg.experiments.pipeline.predict_cases`), continuing a folder with ``resume``.

Several runs (seeds) are averaged by :func:`softseg.inference.arrays.predict_images`, which
also normalises, pads to a multiple of 32 and crops back, applies the runs' temperatures and
the test-time flips. The record says which checkpoint, temperatures and flips were used.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from softseg.data.cases import Case, CaseQuery, check_channels
from softseg.errors import SoftsegError
from softseg.inference import BATCH_SIZE, RunOptions
from softseg.files import prepare_out_dir
from softseg.inference.arrays import FLIP_NAMES, predict_ensemble, predict_images, predict_samples, tta_flips
from softseg.inference.inputs import load_input
from softseg.inference.outputs import (
    PREDICTIONS_FILE,
    CaseDraws,
    CaseFiles,
    PredictOutputs,
    case_outputs,
    check_submission_free,
    check_thresholds,
    mask_thresholds,
    merge_records,
    prediction_record,
    read_record,
    record_path,
    samples_record,
    submission_files,
    submission_name,
    write_in_background,
    write_record,
)
from softseg.inference.uncertainty import ALL_CLASSES, uncertainty_record
from softseg.model.heads import head_of
from softseg.inference.runs import (
    LoadedRun,
    applied_temperatures,
    load_models,
    resolve_runs,
    warn_best_on_validation,
)

log = logging.getLogger(__name__)

__all__ = ["PREDICTIONS_FILE", "CaseFiles", "PredictOutputs", "predict_folder", "predict_cases", "write_predictions",
           "selection_source"]


def predict_cases(
    loaded_runs: Sequence[LoadedRun],
    cases: Sequence[Case],
    batch_size: int = BATCH_SIZE,
    progress: bool = True,
    tta: str = "none",
) -> Iterator[tuple[Case, np.ndarray]]:
    """Yield ``(case, (T, *spatial) float32 probabilities)`` in case order, ``batch_size``
    images at a time, averaged over ``loaded_runs`` (see :func:`softseg.inference.arrays.predict_images`).

    Logs a warning when a run's ``best`` checkpoint predicts its own validation cases."""
    for case, prob, _, _ in _predicted(loaded_runs, cases, batch_size, progress, tta, each_run=False):
        yield case, prob


def _predicted(
    loaded_runs: Sequence[LoadedRun], cases: Sequence[Case], batch_size: int, progress: bool, tta: str,
    *, each_run: bool, samples: int = 0,
) -> Iterator[tuple[Case, np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """:func:`predict_cases` with, when ``each_run``, every run's maps ``(M, T, *spatial)``
    too (:func:`softseg.inference.arrays.predict_ensemble`; one run: its map is the mean) and,
    with ``samples``, that many sampled maps ``(n, T, *spatial)``: a sampling run's draws
    (:func:`softseg.inference.arrays.predict_samples`, a second pass of the network), else the
    map's level sets (:func:`level_set_draws`)."""
    if batch_size < 1:
        raise SoftsegError(f"--batch-size must be at least 1, got {batch_size}")
    warn_best_on_validation(loaded_runs, [case.case_id for case in cases], "predicting")
    several = each_run and len(loaded_runs) > 1
    sampling, classes = head_of(loaded_runs[0].config).sampling, bool(loaded_runs[0].config.classes)
    with tqdm(total=len(cases), desc="predict", unit="image", disable=not progress) as bar:
        for start in range(0, len(cases), batch_size):
            batch = cases[start : start + batch_size]
            images, spacings = [case.image for case in batch], [case.spacing for case in batch]
            if several:
                maps, per_run = predict_ensemble(loaded_runs, images, tta=tta, spacings=spacings)
            else:
                maps = predict_images(loaded_runs, images, tta=tta, spacings=spacings)
                per_run = [prob[None] if each_run else None for prob in maps]
            drawn = (predict_samples(loaded_runs, images, samples, spacings=spacings) if samples and sampling
                     else [None] * len(batch))
            for case, prob, runs, sampled in zip(batch, maps, per_run, drawn):
                prob = np.asarray(prob, dtype=np.float32)
                if samples and not sampling:
                    sampled = level_set_draws(prob, samples, classes)
                yield case, prob, runs, sampled
            bar.update(len(batch))


def check_run_channels(cases: Sequence[Case], run: LoadedRun) -> None:
    """Every case must have the channel count ``run`` was trained on; all problems at once."""
    channels = run.config.in_channels
    check_channels(cases, channels, reason=f"the run {run.run_dir} was trained on ({channels})")


def tta_record(loaded: Sequence[LoadedRun], tta: str) -> dict[str, Any]:
    """What predictions (and thresholds) record of the test-time augmentation: the mode and,
    per run, the views averaged."""
    views = {str(run.run_dir.resolve()): [FLIP_NAMES[f] for f in tta_flips(run.config, tta)]
             for run in loaded}
    return {"mode": tta, "views": views}


def selection_source(cases: Sequence[Case]) -> dict[str, Any]:
    """The record's ``source`` for cases selected from a dataset rather than read from a
    folder: ``input`` is the deepest path holding all their images, ``split`` theirs when
    they share one; ``dataset`` and ``layout`` are unknown (None)."""
    images = [str(Path(case.image_path).resolve()) for case in cases]
    splits = {case.split for case in cases}
    return {
        "input": os.path.commonpath(images) if images else None,
        "dataset": None,
        "layout": None,
        "split": splits.pop() if len(splits) == 1 else None,
    }


def write_predictions(
    loaded: Sequence[LoadedRun],
    cases: Sequence[Case],
    out_dir: str | Path,
    *,
    source: Mapping[str, Any],
    written: CaseFiles = CaseFiles(),
    options: RunOptions = RunOptions(),
    overwrite: bool = False,
    resume: bool = False,
) -> Path:
    """Predict ``cases`` with ``loaded`` (averaged) into ``out_dir``; return the record's path.

    Writes the files of :func:`outputs.case_outputs` for every case and task, then the
    record of :func:`outputs.prediction_record` (``source``, ``options.checkpoint`` and
    ``written.run_threshold`` are recorded as given, the runs' temperatures and
    ``options.tta`` as applied; see :func:`softseg.inference.arrays.predict_images`).
    ``written.thresholds[task]``: mask thresholds (default none). ``written.uncertainty``:
    also the runs' uncertainty maps (:mod:`softseg.inference.uncertainty`), recorded under
    ``uncertainty``. ``written.samples``: that many hypotheses per case (an SSN run's draws;
    level sets of the map for other runs), recorded under ``samples``. ``written.submission``: the QUBIQ submission layout under that dataset
    name; then only the files this call would replace are refused, not a non-empty folder.
    ``options.batch_size`` images a step.

    A non-empty ``out_dir`` is refused unless ``overwrite`` (files of the same names are
    replaced) or ``resume`` (the folder is continued: its record keeps the cases written
    before and adds these; pass ``overwrite`` too where a case may be written again, as
    after an interruption). Raises SoftsegError, before anything is predicted, for cases
    with another channel count than the runs, an occupied folder or an unreadable record.
    """
    out_dir = Path(out_dir)
    tasks = loaded[0].tasks
    submission, tta, batch_size = written.submission, options.tta, options.batch_size
    check_run_channels(cases, loaded[0])
    if submission is not None and (written.uncertainty or written.samples):
        raise SoftsegError("the QUBIQ submission layout holds probability maps only; predict the "
                           "uncertainty maps or samples without --qubiq into another folder")
    check_samples(loaded, written.samples)
    if submission is not None and not head_of(loaded[0].config).one_map_per_task:
        raise SoftsegError(
            f"{loaded[0].run_dir}: a multi-class run; the QUBIQ submission layout holds one binary "
            "map per task: predict without --qubiq (one map per class and a label map)"
        )
    if submission is None:
        # the folder itself appears with its first file, as it always did
        prepare_out_dir(out_dir, overwrite=overwrite, resume=resume or None, what="prediction",
                        create=False)
    elif not overwrite:
        check_submission_free(out_dir, submission_files(cases, tasks, submission))
    tta_flips(loaded[0].config, tta)  # an unknown mode fails before the folder is touched
    path = record_path(out_dir, tasks, submission)
    earlier = read_record(path) if resume else None  # a broken record fails before the compute
    per_task = {task: () for task in tasks} if written.thresholds is None else written.thresholds

    def folder(case: Case) -> str | None:
        return None if submission is None else f"{submission}/{case.case_id}"

    classes = loaded[0].config.classes
    outputs = (
        (case.geometry, case_outputs(case, prob, tasks, std=written.std, thresholds=per_task, folder=folder(case),
                                     classes=classes, draws=CaseDraws(per_run, sampled)))
        for case, prob, per_run, sampled in _predicted(loaded, cases, batch_size, options.progress, tta,
                                                       each_run=written.uncertainty, samples=written.samples)
    )
    # at most two batches of results wait for the writer thread
    files = write_in_background(out_dir, outputs, overwrite=overwrite, window=2 * batch_size)
    record = prediction_record(
        runs=[run.run_dir.resolve() for run in loaded], source=source, tasks=tasks, cases=cases,
        written=CaseFiles(written.std, per_task, written.run_threshold, submission), files=files,
        applied={"checkpoint": options.checkpoint, "temperatures": applied_temperatures(loaded),
                 "tta": tta_record(loaded, tta)},
        maps={
            "uncertainty": None if not written.uncertainty else uncertainty_record(
                len(loaded), [ALL_CLASSES] if classes else tasks, len(classes) or 2, categorical=bool(classes)),
            "samples": None if not written.samples else samples_record(
                written.samples, {str(run.run_dir.resolve()): run.config for run in loaded}, bool(classes),
                drawn=head_of(loaded[0].config).sampling),
        },
    )
    return write_record(path, merge_records(earlier, record))


def check_samples(loaded: Sequence[LoadedRun], samples: int) -> None:
    """SoftsegError unless ``samples`` is 0 (none) or a count >= 1 for runs that either all
    draw samples (head ssn) or all predict one map (level sets of it are written)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise SoftsegError(f"--samples: expected a number of samples >= 1 (or 0 for none), got {samples!r}")
    kinds = {head_of(run.config).sampling for run in loaded}
    if samples and len(kinds) > 1:
        flat = next(run for run in loaded if not head_of(run.config).sampling)
        raise SoftsegError(
            f"--samples {samples}: {flat.run_dir} predicts one map (head {head_of(flat.config).name}) while "
            "other runs draw samples (head ssn); predict the two kinds of run into separate folders"
        )


def level_set_draws(prob: np.ndarray, n: int, classes: bool) -> np.ndarray:
    """``n`` stratified level sets of one case's map as ``(n, T or C, *spatial)`` float32 0/1,
    the form :func:`outputs.case_outputs` writes samples in: per task ``p >= (k + 1/2)/n``,
    or for classes the one-hot label maps of :func:`softseg.evaluation.hypotheses.level_set_labels`."""
    from softseg.evaluation import hypotheses

    if classes:
        labels = hypotheses.level_set_labels(prob, n)
        return (labels[:, None] == np.arange(len(prob)).reshape(1, -1, *([1] * (prob.ndim - 1)))).astype(np.float32)
    return np.stack([hypotheses.level_set_masks(p, n) for p in prob], axis=1).astype(np.float32)


def predict_folder(
    runs: Sequence[str | Path],
    input_path: str | Path,
    out_dir: str | Path,
    *,
    query: CaseQuery = CaseQuery(),
    outputs: PredictOutputs = PredictOutputs(),
    options: RunOptions = RunOptions(),
    overwrite: bool = False,
) -> Path:
    """Predict every case of ``input_path`` with ``runs`` and write the files into ``out_dir``.

    ``query``: the layout and split of ``input_path`` (a dataset folder, a folder of images or
    one image). See :mod:`softseg.inference.outputs` for the layout written and
    :class:`~softseg.inference.outputs.PredictOutputs` for ``outputs``: ``masks`` are
    thresholds in (0, 1] for binary masks ``p >= t``; the operating threshold stored in the
    run(s) by ``softseg threshold`` is added unless ``use_run_threshold`` is False; ``qubiq``
    is the QUBIQ submission layout (NIfTI input, probability maps only); ``uncertainty`` adds
    the entropy maps (and, with several runs, mutual information and expected entropy).
    ``samples`` writes that many hypotheses per case and task: level sets of the map, or an
    SSN run's (head ssn) own draws.
    ``options``: see :class:`~softseg.inference.RunOptions`. Refuses a non-empty ``out_dir`` (with ``qubiq``:
    any submission file it would replace) unless ``overwrite``. Returns the path of the
    record (``predictions.json``).
    """
    out_dir = Path(out_dir)
    std, qubiq, layout, split = outputs.std, outputs.qubiq, query.layout, query.split
    masks = check_thresholds(outputs.masks)
    if qubiq and (std or masks or outputs.uncertainty or outputs.samples):
        raise SoftsegError(
            "--qubiq writes a submission (probability maps only); drop --std/--masks/--uncertainty/--samples, "
            "or predict again without --qubiq into another folder for those"
        )
    if not qubiq:
        # before minutes of loading and predicting; write_predictions asks again
        prepare_out_dir(out_dir, overwrite=overwrite, resume=None, what="prediction", create=False)
    run_set = resolve_runs(runs)
    dataset = load_input(input_path, layout=layout, split=split)
    if qubiq:
        not_nifti = [c.case_id for c in dataset.cases if c.geometry.format != "nifti"]
        if not_nifti:
            raise SoftsegError(
                f"--qubiq needs NIfTI images, found {len(not_nifti)} other(s) "
                f"({', '.join(not_nifti[:5])}); leave out --qubiq for PNG input"
            )
    loaded = load_models(run_set.run_dirs, device=options.device, checkpoint=options.checkpoint,
                         temperature=options.temperature)
    stored = run_set.threshold if outputs.use_run_threshold and not qubiq else None
    if stored is not None:
        check_threshold_conditions(stored, run_set.threshold_path, loaded, options.checkpoint, options.tta)
    written = CaseFiles(
        std=std, thresholds=mask_thresholds(loaded[0].tasks, masks, stored),
        run_threshold=None if stored is None else {
            "file": str(run_set.threshold_path),
            "tasks": {t: stored["tasks"][t]["threshold"] for t in stored["tasks"]},
        },
        submission=submission_name(dataset) if qubiq else None,
        uncertainty=outputs.uncertainty, samples=outputs.samples,
    )
    return write_predictions(
        loaded, dataset.cases, out_dir,
        source={"input": str(Path(input_path).resolve()), "dataset": dataset.name,
                "layout": dataset.layout, "split": split},
        written=written, options=options, overwrite=overwrite,
    )


def check_threshold_conditions(
    stored: Mapping[str, Any], path: Path | None, loaded: Sequence[LoadedRun], checkpoint: str, tta: str
) -> None:
    """Warn when the stored operating threshold was chosen on other predictions than these
    (another checkpoint, test-time augmentation or temperatures): it is applied all the same.
    A threshold.json from before the default became "last" names "best" here."""
    # what the file does not record is not compared
    chosen = (stored.get("checkpoint", checkpoint), stored.get("tta", {}).get("mode", "none"),
              stored.get("temperatures"))
    now = (checkpoint, tta, applied_temperatures(loaded))

    def values(temperatures):  # the runs may have moved since: compare the values only
        return sorted(sorted(t.items()) for t in (temperatures or {}).values())

    if chosen[:2] != now[:2] or values(chosen[2]) != values(now[2]):
        log.warning(
            "%s was chosen with --checkpoint %s, --tta %s and temperatures %s, but this prediction "
            "uses --checkpoint %s, --tta %s and temperatures %s; rerun `softseg threshold` with the "
            "same options for a threshold that means what it says", path, *chosen, *now,
        )
