"""What a prediction writes, and how: one case's file names and arrays, the record.

One probability map per case and task, plus the optional side outputs::

    OUT/<case_id>/<task>.nii.gz            float32, the source affine and header
    OUT/<case_id>/<task>.png               16-bit grey, value round(p * 65535) (PNG input)
    OUT/<case_id>/<task>_std.<ext>         sqrt(p (1 - p)), with ``std=True``
    OUT/<case_id>/<task>_mask-0.50.<ext>   p >= 0.50: uint8 0/1 NIfTI or 8-bit 0/255 PNG
    OUT/<case_id>/<task>_entropy.<ext>     with ``uncertainty``: the entropy in nats; with
    OUT/<case_id>/<task>_mi.<ext>          several runs also the mutual information and the
    OUT/<case_id>/<task>_expected_entropy.<ext>   expected entropy (softseg.inference.uncertainty)
    OUT/<case_id>/<task>_sample-00.<ext>   with ``samples``: hypothesis k's mask, as above (level
                                           sets of the map, or an SSN run's draws)
    OUT/predictions.json                   the record: runs, input, thresholds, cases, files

A multi-class run writes one map per class instead (``<class>.<ext>``, background included,
summing to 1 per pixel; ``<class>_std`` with ``std=True``; masks per foreground class),
``OUT/<case_id>/label-map.<ext>``: per pixel the most probable class's value (ties to the
lower value), uint8 NIfTI or 8-bit PNG holding 0, 1, 2, ..., and with ``uncertainty`` the
categorical maps over all classes ``classes_entropy.<ext>`` (``classes_mi``,
``classes_expected_entropy``), and with ``samples`` each sample's label map
``label-map_sample-00.<ext>``. Uncertainty maps are float32 NIfTI in nats, or 16-bit PNG
holding ``round(value / ln K * 65535)`` (K = 2, or the number of classes; the record says).

In the QUBIQ submission layout the maps are ``OUT/<dataset>/<case_id>/<task>.nii.gz`` and the
record ``OUT/predictions-<dataset>-<tasks>.json`` (several runs may fill one submission).
Maps are written by :func:`softseg.data.io.write_map` (atomically) on a background thread;
the record through :mod:`softseg.files`, last, so that it marks a complete prediction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from softseg import __version__
from softseg.data import io
from softseg.data.cases import QUBIQ_SPLITS, Case, Dataset
from softseg.data.io import Geometry
from softseg.errors import SoftsegError
from softseg.files import write_json_atomic
from softseg.inference import uncertainty

PREDICTIONS_FILE = io.PREDICTIONS_FILE

# The record's lists that several predictions into one folder add up (see merge_records).
_LISTS = ("runs", "tasks", "cases", "files")


def std_map(probability: np.ndarray) -> np.ndarray:
    """Pixel standard deviation of a Bernoulli with mean ``p``: ``sqrt(p (1 - p))`` in [0, 0.5].

    ``probability`` any shape, values in [0, 1]; returns float32 of the same shape.
    """
    p = np.clip(np.asarray(probability, dtype=np.float32), 0.0, 1.0)
    return np.sqrt(p * (1.0 - p))


def threshold_label(threshold: float) -> str:
    """The threshold as written in a mask's file name: two decimals when exact ("0.50")."""
    text = f"{threshold:.2f}"
    if float(text) != threshold:
        text = f"{threshold:.6f}".rstrip("0")
    return text


def check_thresholds(values: Sequence[float]) -> tuple[float, ...]:
    """Mask thresholds in (0, 1], sorted and without duplicates; SoftsegError otherwise."""
    bad = [v for v in values if not (isinstance(v, (int, float)) and 0.0 < v <= 1.0)]
    if bad:
        raise SoftsegError(
            f"mask thresholds must lie in (0, 1], got {', '.join(map(str, bad))}; "
            "give confidences such as 0.3 0.5 0.7"
        )
    return tuple(sorted({float(v) for v in values}))


def mask_thresholds(
    tasks: Sequence[str], requested: Sequence[float], stored: Mapping | None
) -> dict[str, tuple[float, ...]]:
    """Per task: the requested mask thresholds plus the run's stored operating threshold."""
    requested = check_thresholds(requested)
    out: dict[str, tuple[float, ...]] = {}
    for task in tasks:
        extra = ()
        if stored is not None and task in stored.get("tasks", {}):
            extra = (float(stored["tasks"][task]["threshold"]),)
        out[task] = check_thresholds(requested + extra)
    return out


@dataclass(frozen=True)
class CaseDraws:
    """What beside the mean map one case's files come from: ``per_run`` the ensemble's maps
    ``(M, T or C, *spatial)`` (for the uncertainty maps), ``samples`` the hypotheses
    ``(n, T or C, *spatial)`` (an SSN run's sampled maps, or the map's level sets as 0/1);
    None where not asked for."""

    per_run: np.ndarray | None = None
    samples: np.ndarray | None = None


def case_outputs(
    case: Case,
    probability: np.ndarray,
    tasks: Sequence[str],
    *,
    std: bool = False,
    thresholds: Mapping[str, Sequence[float]] | None = None,
    folder: str | None = None,
    classes: Sequence[str] = (),
    draws: CaseDraws = CaseDraws(),
) -> list[tuple]:
    """What to write for one case: ``(relative path, (*spatial) array)`` pairs, and
    ``(relative path, array, upper)`` triples for maps in [0, upper] other than probabilities.

    ``probability`` is ``(T, *spatial)`` float32 in [0, 1], tasks in ``tasks`` order, on the
    case's grid; for a multi-class run (``classes``) ``(C, *spatial)`` in ``classes`` order,
    and the label map is added. ``thresholds[task]`` lists the mask thresholds of that task. Masks are bool
    (``p >= t``), which :func:`io.write_map` stores as binary masks. ``folder`` replaces
    ``case.case_id`` as the case's sub-folder (QUBIQ layout: ``<dataset>/<case_id>``).
    ``draws.per_run``: the ensemble's maps ``(M, T or C, *spatial)`` whose mean is ``probability``;
    with it the uncertainty maps of :func:`uncertainty.uncertainty_maps` are added (nats, upper
    ln K; the entropy alone when M = 1), per task or, for classes, one set over all of them.
    ``draws.samples``: hypotheses ``(n, T or C, *spatial)`` (an SSN run's sampled maps, or level sets); each is
    written as a mask ``p >= 0.5`` per task (:func:`softseg.data.io.sample_name`), or for classes as a label map.
    """
    names = tuple(classes) or tuple(tasks)
    per_run, samples = draws.per_run, draws.samples
    if probability.shape != (len(names), *case.spatial_shape):
        raise SoftsegError(
            f"{case.case_id}: prediction shape {probability.shape} != "
            f"({len(names)} {'classes' if classes else 'tasks'}, *{case.spatial_shape}); the model and "
            "the image disagree"
        )
    if per_run is not None and (per_run.ndim != probability.ndim + 1 or per_run.shape[1:] != probability.shape):
        raise SoftsegError(f"{case.case_id}: the runs' maps {per_run.shape} are not (M, *{probability.shape})")
    suffix = io.map_suffix(case.geometry)
    base = Path(folder if folder is not None else case.case_id)
    thresholds = thresholds or {}
    outputs: list[tuple[Path, np.ndarray]] = []
    if classes:
        outputs.append((base / f"{io.LABEL_MAP}{suffix}", np.argmax(probability, axis=0).astype(np.uint8)))
    for index, task in enumerate(names):
        prob = probability[index]
        outputs.append((base / f"{task}{suffix}", prob))
        if std:
            outputs.append((base / f"{task}_std{suffix}", std_map(prob)))
        if per_run is not None and not classes:
            outputs += _uncertainty_outputs(base, task, per_run[:, index], suffix, categorical=False)
        for t in thresholds.get(task, ()):
            # compared at the map's own precision, like metrics.py and thresholds.py
            mask = prob >= np.asarray(t, dtype=prob.dtype)
            outputs.append((base / f"{task}_mask-{threshold_label(t)}{suffix}", mask))
    if per_run is not None and classes:
        outputs += _uncertainty_outputs(base, uncertainty.ALL_CLASSES, per_run, suffix, categorical=True)
    if samples is not None:
        if samples.shape[1:] != probability.shape:
            raise SoftsegError(f"{case.case_id}: the samples {samples.shape} are not (n, *{probability.shape})")
        n = len(samples)
        for k, sample in enumerate(samples):
            if classes:
                outputs.append((base / f"{io.LABEL_MAP}_{io.sample_name(k, n)}{suffix}",
                                np.argmax(sample, axis=0).astype(np.uint8)))
            else:
                outputs += [(base / f"{task}_{io.sample_name(k, n)}{suffix}", sample[index] >= np.float32(0.5))
                            for index, task in enumerate(names)]
    return outputs


def _uncertainty_outputs(base: Path, name: str, per_run: np.ndarray, suffix: str,
                         *, categorical: bool) -> list[tuple[Path, np.ndarray, float]]:
    """The uncertainty maps of one task (``per_run`` (M, *spatial)) or of all classes
    (``(M, C, *spatial)``), with their maximum ln K."""
    top = uncertainty.max_entropy(per_run.shape[1] if categorical else 2)
    maps = uncertainty.uncertainty_maps(per_run, categorical=categorical)
    return [(base / uncertainty.uncertainty_file(name, kind, suffix), array, top) for kind, array in maps.items()]


def submission_name(dataset: Dataset) -> str:
    """The dataset's folder name in a QUBIQ submission (``brain-growth``), also when the
    split folder itself (``brain-growth/Testing``) was given."""
    if dataset.name in QUBIQ_SPLITS:
        return Path(dataset.root).resolve().parent.name
    return dataset.name


def submission_files(cases: Sequence[Case], tasks: Sequence[str], submission: str) -> list[Path]:
    """The maps of ``cases`` in the QUBIQ submission layout, relative to the output folder."""
    return [Path(submission) / case.case_id / f"{task}.nii.gz" for case in cases for task in tasks]


def check_submission_free(out_dir: Path, files: Sequence[Path]) -> None:
    """Raise SoftsegError when any of ``files`` (relative to ``out_dir``) exists.

    A submission folder collects several predictions (one run per task or dataset), so
    only the files this prediction would replace are refused, not a non-empty folder.
    """
    taken = [out_dir / f for f in files if (out_dir / f).exists()]
    if taken:
        raise SoftsegError(
            f"{taken[0]}: already exists ({len(taken)} of the submission files would be "
            "replaced); choose another --out or pass --overwrite"
        )


def write_in_background(
    out_dir: Path,
    outputs: Iterable[tuple[Geometry, list[tuple[Path, np.ndarray]]]],
    *,
    overwrite: bool,
    window: int,
) -> list[str]:
    """Write every case's ``(geometry, [(relative path, array[, upper]), ...])`` under
    ``out_dir`` (``upper``: see :func:`io.write_map`; 1 when left out).

    Files are written by one writer thread while ``outputs`` (a generator that predicts)
    computes the next case: gzip/PNG encoding releases the GIL, so the two overlap. At most
    ``window`` cases of results wait, which bounds the memory held. Returns the relative
    paths written (POSIX form, in order); a failed write is raised.
    """
    written: list[str] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="softseg-write") as writer:
        pending: deque[Future] = deque()
        for geometry, files in outputs:
            for relative, array, *upper in files:
                pending.append(writer.submit(io.write_map, out_dir / relative, array, geometry,
                                             overwrite=overwrite, upper=upper[0] if upper else 1.0))
                written.append(relative.as_posix())
            while len(pending) > window * len(files):
                pending.popleft().result()
        for future in pending:
            future.result()
    return written


# ----------------------------------------------------------------------------- the record


def record_path(out_dir: Path, tasks: Sequence[str], submission: str | None = None) -> Path:
    """``OUT/predictions.json``, or beside a QUBIQ submission (not in it) one record per
    dataset and task set: ``OUT/predictions-<dataset>-<tasks>.json``."""
    if submission is None:
        return Path(out_dir) / PREDICTIONS_FILE
    return Path(out_dir) / f"predictions-{submission}-{'-'.join(tasks)}.json"


@dataclass(frozen=True)
class PredictOutputs:
    """What ``softseg predict`` writes beside the probability maps: ``std`` maps
    sqrt(p(1-p)), binary ``masks`` at thresholds in (0, 1], the run's stored operating
    threshold (``use_run_threshold``), ``uncertainty`` maps (the entropy in nats; with several
    runs also the mutual information and expected entropy, :mod:`softseg.inference.uncertainty`),
    ``samples``: that many hypotheses per case (level sets of the map, or an SSN run's draws;
    0: none), or instead the QUBIQ
    submission layout (``qubiq``: probability maps only)."""

    std: bool = False
    masks: Sequence[float] = ()
    use_run_threshold: bool = True
    qubiq: bool = False
    uncertainty: bool = False
    samples: int = 0


@dataclass(frozen=True)
class CaseFiles:
    """The files written per case once resolved: ``thresholds[task]`` the mask thresholds,
    ``run_threshold`` ``{"file", "tasks": {task: t}}`` when the run's stored operating
    threshold was applied (else None), ``submission`` the QUBIQ dataset name of the
    submission layout (else None), ``uncertainty`` the uncertainty maps, ``samples`` how many
    hypotheses (0: none)."""

    std: bool = False
    thresholds: Mapping[str, Sequence[float]] | None = None
    run_threshold: Mapping[str, Any] | None = None
    submission: str | None = None
    uncertainty: bool = False
    samples: int = 0


def prediction_record(
    *,
    runs: Sequence[Path],
    source: Mapping[str, Any],
    tasks: Sequence[str],
    cases: Sequence[Case],
    written: CaseFiles,
    files: Sequence[str],
    applied: Mapping[str, Any],
    maps: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of ``predictions.json``, the same for ``softseg predict`` and experiments.

    ``source`` holds ``input`` (the folder or file the cases were read from), ``dataset``,
    ``layout`` and ``split`` (None where the caller predicted a selection of cases rather
    than a folder it read). ``written``: what was written per case (:class:`CaseFiles`;
    its thresholds per task). ``applied``: ``checkpoint``; ``temperatures`` ``{run: {task:
    T}}`` the logits were divided by (None: none); ``tta`` ``{"mode", "views": {run: [view
    names]}}`` (None is recorded as mode "none"). ``maps``: the maps written beyond the
    probabilities, ``uncertainty`` (what :func:`uncertainty.uncertainty_record` says of the
    uncertainty maps) and ``samples`` (what :func:`samples_record` says of the sampled masks);
    a missing one is recorded as None.
    """
    temperatures, tta = applied.get("temperatures"), applied.get("tta")
    maps = maps or {}
    uncertainty, samples = maps.get("uncertainty"), maps.get("samples")
    thresholds = written.thresholds or {}
    return {
        "softseg_version": __version__,
        "runs": [str(r) for r in runs],
        "checkpoint": applied["checkpoint"],
        "input": source.get("input"),
        "dataset": source.get("dataset"),
        "layout": source.get("layout"),
        "split": source.get("split"),
        "tasks": list(tasks),
        "cases": [case.case_id for case in cases],
        "format": sorted({case.geometry.format for case in cases}),
        "layout_written": "qubiq" if written.submission is not None else "cases",
        "std": written.std,
        "uncertainty": None if uncertainty is None else dict(uncertainty),
        "samples": None if samples is None else dict(samples),
        "mask_thresholds": {task: list(values) for task, values in thresholds.items()},
        "run_threshold": None if written.run_threshold is None else dict(written.run_threshold),
        "temperatures": None if temperatures is None else {r: dict(t) for r, t in temperatures.items()},
        "tta": {"mode": "none", "views": {}} if tta is None else dict(tta),
        "files": list(files),
    }


def samples_record(n: int, runs: Mapping[str, Any], classes: bool, drawn: bool = True) -> dict[str, Any]:
    """What ``predictions.json`` says of ``n`` hypotheses per case: their files, values and
    origin (``source``): a sampling run's draws ("drawn"; ``runs`` maps each run folder, in
    prediction order, to its config: seed, rank, samples), or the map's level sets ("level-set")."""
    files = f"{io.LABEL_MAP if classes else '<task>'}_{io.sample_name(0, n)}.<ext> ..."
    if not drawn:
        return {
            "count": n, "source": "level-set", "scheme": "stratified", "files": files,
            "values": ("label maps: per pixel the class at level u_k = (k + 1/2)/n of the class CDF taken from "
                       "the last class down (P(class c) = p_c)" if classes else
                       "binary masks p >= u_k, u_k = (k + 1/2)/n, of the probability map written beside them"),
            "draws": "none: nested level sets of the map (after test-time views, temperature and the runs' mean); "
                     "each pixel is in a share p of them",
        }
    return {
        "count": n,
        "source": "drawn",
        "files": files,
        "values": ("the most probable class of each sampled logit map" if classes else
                   "binary masks sigmoid(eta) >= 0.5 of sampled logits eta (eta >= 0)"),
        "draws": "sample k from run k mod R (R runs, in 'runs' order), its (k div R)-th draw of a generator "
                 "seeded with its seed per image: the first draws of those its probability map averages; "
                 "the image itself (no test-time views, no temperature)",
        "runs": {run: {"seed": config.seed, "rank": config.ssn_rank, "map_samples": config.ssn_eval_samples}
                 for run, config in runs.items()},
    }


def read_record(path: Path) -> dict[str, Any] | None:
    """The prediction record at ``path``, or None when there is none; SoftsegError when it
    exists but cannot be read as a JSON object."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SoftsegError(
            f"{path}: cannot read ({error}); delete the folder holding it and rerun with --resume"
        ) from error
    if not isinstance(record, dict):
        raise SoftsegError(
            f"{path}: expected a JSON object (a prediction record), found {type(record).__name__}; "
            "delete the folder holding it and rerun with --resume"
        )
    return record


def merge_records(earlier: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """The record of a folder that ``new`` continued (e.g. the folds of a cross-validation).

    The lists (runs, tasks, cases, files, formats, mask thresholds per task) hold everything
    written so far, each entry once and in first-written order, and so do the per-run
    temperatures and test-time views; ``input`` is the deepest path
    holding both inputs, and ``dataset``/``layout``/``split`` are kept where both agree
    (None otherwise); every other field is the latest prediction's.
    """
    if earlier is None:
        return dict(new)
    merged = dict(new)
    for key in _LISTS:
        merged[key] = list(dict.fromkeys([*earlier.get(key, []), *new.get(key, [])]))
    merged["format"] = sorted({*earlier.get("format", []), *new.get("format", [])})
    merged["mask_thresholds"] = {**earlier.get("mask_thresholds", {}), **new.get("mask_thresholds", {})}
    # per run: the folds of a cross-validation each add theirs
    if "temperatures" in earlier or "temperatures" in new:
        temperatures = {**(earlier.get("temperatures") or {}), **(new.get("temperatures") or {})}
        merged["temperatures"] = temperatures or None
    if isinstance(earlier.get("tta"), dict) and isinstance(new.get("tta"), dict):
        merged["tta"] = {**new["tta"], "views": {**earlier["tta"].get("views", {}),
                                                  **new["tta"].get("views", {})}}
    inputs = [earlier.get("input"), new.get("input")]
    merged["input"] = os.path.commonpath(inputs) if all(isinstance(i, str) for i in inputs) else None
    for key in ("dataset", "layout", "split"):
        merged[key] = new.get(key) if earlier.get(key) == new.get(key) else None
    return merged


def write_record(path: Path, record: Mapping[str, Any]) -> Path:
    """Write the record atomically (it marks a complete prediction, so it comes last)."""
    write_json_atomic(path, record)
    return Path(path)
