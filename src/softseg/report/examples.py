"""Example cases of the report: which cases, and their image, soft label and prediction.

Cases are chosen by their QUBIQ score in cases.csv (best, median, worst, ...). Images come
from the dataset (``datasets.scan_dataset``, ``labels.soft_label``) and predictions from the
files summary.json records (``io.read_probability``), with the uncertainty maps beside them
where ``softseg predict --uncertainty`` wrote them (its predictions.json says so and gives
their maximum, ``io.read_map``); nothing here computes a metric. The arrays are only
prepared for display: one 2-D slice, oriented for the screen, cropped to the structure.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from softseg.data import datasets
from softseg.data import io
from softseg.data import labels
from softseg.errors import DatasetError, SoftsegError
from softseg.evaluation.metrics import FINE_THRESHOLDS  # the slider's positions; curves.csv's grid
from softseg.inference.outputs import PREDICTIONS_FILE, read_record
from softseg.inference.uncertainty import ALL_CLASSES, uncertainty_file
from softseg.report.inputs import Evaluation

log = logging.getLogger(__name__)

# Maps are float32; soft labels k/A must reach t = k/A (7/10 in float32 is below 0.7 in
# float64), so thresholds are compared in float32 too.
_FINE_THRESHOLDS_32 = FINE_THRESHOLDS.astype(np.float32)


@dataclass(frozen=True)
class Example:
    """One example case and task, ready to draw.

    ``image`` is (H, W, 3) uint8 for display; ``soft`` and ``prob`` are (H, W) float32 in
    [0, 1] on the same grid (the soft label and the predicted probability). ``curves`` maps
    "precision"/"recall"/"dice" to 99 values (NaN where curves.csv has none) at thresholds
    0.01 … 0.99, read from curves.csv. ``rank`` says why the case was chosen ("best", ...).
    ``uncertainty`` maps "entropy" (and "mi", "expected_entropy" where written) to (H, W)
    float32 maps in nats on the same grid, read from the predictions folder ({} where there are
    none); ``max_nats`` is their largest possible value ln K (None without maps);
    ``over_classes``: they are a multi-class prediction's, over all its classes.
    """

    case_id: str
    task: str
    rank: str
    qubiq: float
    image: np.ndarray
    soft: np.ndarray
    prob: np.ndarray
    curves: dict[str, list[float]]
    note: str
    uncertainty: Mapping[str, np.ndarray] = field(default_factory=dict)
    max_nats: float | None = None
    over_classes: bool = False


def choose_cases(evaluation: Evaluation, task: str, n: int) -> list[tuple[str, str, float]]:
    """Up to ``n`` cases of ``task`` spread over the QUBIQ ranking, best first.

    Returns (case_id, rank label, qubiq). With n = 3: best, median, worst. Cases whose
    score is empty are left out; ties are broken by case id so the choice is repeatable.
    """
    table = evaluation.cases
    rows = [
        (str(c), float(q))
        for c, t, q in zip(table["case"], table["task"], table["qubiq"])
        if t == task and np.isfinite(q)
    ]
    rows.sort(key=lambda row: (-row[1], row[0]))
    if n <= 0 or not rows:
        return []
    if n == 1 or len(rows) == 1:
        positions = [len(rows) // 2]
    else:
        positions = sorted(set(np.round(np.linspace(0, len(rows) - 1, n)).astype(int).tolist()))
    chosen = []
    for position in positions:
        if position == 0 and len(rows) > 1:
            label = "best"
        elif position == len(rows) - 1 and len(rows) > 1:
            label = "worst"
        elif position == len(rows) // 2:
            label = "median"
        else:
            label = f"rank {position + 1} of {len(rows)}"
        chosen.append((rows[position][0], label, rows[position][1]))
    return chosen


def load_examples(evaluation: Evaluation, n_cases: int) -> list[Example]:
    """The example cases of every task (``n_cases`` per task); [] when ``n_cases`` is 0."""
    wanted = {task: choose_cases(evaluation, task, n_cases) for task in evaluation.tasks}
    if not any(wanted.values()):
        return []
    data, predictions = evaluation.data, evaluation.predictions
    for what, folder in (("data", data), ("predictions", predictions)):
        if not folder.is_dir():
            raise SoftsegError(
                f"{evaluation.root / 'summary.json'}: the {what} folder it names "
                f"({folder}) does not exist; example cases need it. "
                f"Move the folder back, fix \"{what}\" in summary.json, or pass --cases 0"
            )
    ids = {case_id for chosen in wanted.values() for case_id, _, _ in chosen}
    # scanned, not loaded: its warnings were shown when the predictions were evaluated
    scan = datasets.scan_dataset(data, layout=evaluation.result.layout)
    if scan.problems:
        raise DatasetError(list(scan.problems), header=f"{data}: the data folder named in "
                           f"{evaluation.root / 'summary.json'} has problems now")
    dataset = scan.dataset.select(case_ids=ids)
    by_id = {case.case_id: case for case in dataset.cases}
    record = _prediction_record(evaluation)
    examples = []
    for task, chosen in wanted.items():
        for case_id, rank, qubiq in chosen:
            case = by_id.get(case_id)
            if case is None or not case.is_labelled(task):
                raise SoftsegError(
                    f"{data}: expected labelled case {case_id!r} for task {task!r} "
                    f"(cases.csv lists it), found "
                    f"{'no such case' if case is None else 'no label'}; "
                    "evaluate again against this data folder, or pass --cases 0"
                )
            path = prediction_path(evaluation, case_id, task)
            prob, _ = io.read_probability(path)
            soft = labels.soft_label(case, task)
            maps, top = uncertainty_maps(evaluation, record, case, task, path)
            examples.append(_prepare(evaluation, case, task, rank, qubiq, soft, prob, maps, top,
                                     over_classes=evaluation.result.classes is not None))
    return examples


def _prediction_record(evaluation: Evaluation) -> dict[str, Any] | None:
    """The predictions folder's predictions.json (None when absent or unreadable: the
    examples are then shown without uncertainty maps)."""
    try:
        return read_record(evaluation.predictions / PREDICTIONS_FILE)
    except SoftsegError as error:
        log.warning("%s; the example cases are shown without uncertainty maps", error)
        return None


def uncertainty_maps(evaluation: Evaluation, record: Mapping[str, Any] | None, case, task: str,
                     prediction: Path) -> tuple[dict[str, np.ndarray], float | None]:
    """The uncertainty maps written beside ``prediction`` (the evaluated probability file) by
    ``softseg predict --uncertainty``: kind -> ``(*spatial)`` float32 in nats, and their
    maximum ln K from the record; ``({}, None)`` where the record names none or no file is
    there (older predictions). A multi-class prediction's maps cover all classes
    (``classes_entropy``), the same for every class's example."""
    written = record.get("uncertainty") if isinstance(record, Mapping) else None
    name = ALL_CLASSES if evaluation.result.classes is not None else task
    maxima = written.get("max_nats") if isinstance(written, Mapping) else None
    top = maxima.get(name) if isinstance(maxima, Mapping) else None
    if not isinstance(top, (int, float)) or not top > 0:
        return {}, None
    suffix = io.map_suffix(case.geometry)
    maps = {}
    for kind in io.UNCERTAINTY_MAPS:
        path = Path(prediction).parent / uncertainty_file(name, kind, suffix)
        if path.is_file():
            maps[kind] = io.read_map(path, upper=float(top))[0]
    return maps, (float(top) if maps else None)


def prediction_path(evaluation: Evaluation, case_id: str, task: str) -> Path:
    """The probability file evaluated for a case and task, as summary.json records it."""
    relative = evaluation.result.files.get(task, {}).get(case_id)
    if relative is None:
        raise SoftsegError(
            f"{evaluation.root / 'summary.json'}: expected the prediction file of case "
            f"{case_id!r}, task {task!r} under \"files\", found none; evaluate again with "
            "this softseg version, or pass --cases 0"
        )
    path = evaluation.predictions / relative
    if not path.is_file():
        raise SoftsegError(
            f"{path}: expected the prediction of case {case_id!r}, task {task!r} that was "
            "evaluated, found no file; predict again into this folder, or pass --cases 0"
        )
    return path


def _prepare(evaluation, case, task, rank, qubiq, soft, prob, uncertainty=None, max_nats=None,
             over_classes=False) -> Example:
    soft = np.asarray(soft, dtype=np.float32)
    prob = np.asarray(prob, dtype=np.float32)
    uncertainty = {kind: np.asarray(m, dtype=np.float32) for kind, m in (uncertainty or {}).items()}
    for what, shape in [("prediction", prob.shape)] + [(f"{kind} map", m.shape) for kind, m in uncertainty.items()]:
        if shape != soft.shape:
            raise SoftsegError(
                f"case {case.case_id!r}, task {task!r}: {what} shape {shape} != soft "
                f"label shape {soft.shape}; the predictions folder does not match the data "
                "folder named in summary.json"
            )
    image = case.image
    notes = []
    if soft.ndim == 3:  # volumes: show the slice where the raters marked the most
        areas = soft.reshape(-1, soft.shape[-1]).sum(axis=0)
        index = int(np.argmax(areas)) if areas.max() > 0 else soft.shape[-1] // 2
        soft, prob, image = soft[..., index], prob[..., index], image[..., index]
        uncertainty = {kind: m[..., index] for kind, m in uncertainty.items()}
        notes.append(f"slice {index} of {case.spatial_shape[-1]} (last axis); the slider's "
                     "precision and recall are the whole volume's")
    rgb = _display_image(image)
    if case.geometry.format == "nifti":  # nibabel's (x, y): show y upwards, x to the right
        soft, prob, rgb = (np.flipud(np.swapaxes(a, 0, 1)) for a in (soft, prob, rgb))
        uncertainty = {kind: np.flipud(np.swapaxes(m, 0, 1)) for kind, m in uncertainty.items()}
    box = _region_of_interest(soft, prob)
    if box != (0, soft.shape[0], 0, soft.shape[1]):
        notes.append(f"cropped to rows {box[0]}–{box[1] - 1}, columns {box[2]}–{box[3] - 1}")
    r0, r1, c0, c1 = box
    if image.shape[0] not in (1, 3):
        notes.append(f"channel 0 of {image.shape[0]}")
    return Example(
        case_id=case.case_id,
        task=task,
        rank=rank,
        qubiq=qubiq,
        image=np.ascontiguousarray(rgb[r0:r1, c0:c1]),
        soft=np.ascontiguousarray(soft[r0:r1, c0:c1]),
        prob=np.ascontiguousarray(prob[r0:r1, c0:c1]),
        curves=_case_curves(evaluation, case.case_id, task),
        note="; ".join(notes),
        uncertainty={kind: np.ascontiguousarray(m[r0:r1, c0:c1]) for kind, m in uncertainty.items()},
        max_nats=max_nats if uncertainty else None,
        over_classes=bool(uncertainty) and over_classes,
    )


def _display_image(image: np.ndarray) -> np.ndarray:
    """(C, H, W) float image -> (H, W, 3) uint8, stretched between its 0.5 and 99.5 percentiles."""
    channels = image[:3] if image.shape[0] == 3 else image[:1]
    low, high = np.percentile(channels, [0.5, 99.5])
    scaled = np.clip((channels - low) / max(high - low, 1e-12), 0.0, 1.0)
    grey = np.round(scaled * 255).astype(np.uint8)
    return np.moveaxis(np.repeat(grey, 3 // grey.shape[0], axis=0), 0, -1)


def _region_of_interest(soft: np.ndarray, prob: np.ndarray) -> tuple[int, int, int, int]:
    """Rows/columns [r0, r1) x [c0, c1) around anything marked or predicted, with a margin;
    the whole image when nothing is. Small structures in large images stay visible."""
    rows, cols = soft.shape
    marked = (soft > 0) | (prob >= _FINE_THRESHOLDS_32[0])
    if not marked.any():
        return (0, rows, 0, cols)
    r = np.flatnonzero(marked.any(axis=1))
    c = np.flatnonzero(marked.any(axis=0))
    side = max(r[-1] - r[0] + 1, c[-1] - c[0] + 1)
    margin = max(8, int(0.15 * side))
    half = max(side // 2 + margin, 24)  # a square window, at least 48 px
    centre_r, centre_c = (r[0] + r[-1]) // 2, (c[0] + c[-1]) // 2
    r0, r1 = max(0, centre_r - half), min(rows, centre_r + half + 1)
    c0, c1 = max(0, centre_c - half), min(cols, centre_c + half + 1)
    return (int(r0), int(r1), int(c0), int(c1))


def _case_curves(evaluation: Evaluation, case_id: str, task: str) -> dict[str, list[float]]:
    """curves.csv rows of one case and task, as 99 values per measure (NaN where absent)."""
    table = evaluation.curves
    rows = np.flatnonzero((table["case"] == case_id) & (table["task"] == task))
    if rows.size == 0:
        log.warning("curves.csv has no rows for case %s, task %s", case_id, task)
    steps = np.round(table["threshold"][rows] * 100).astype(int) - 1
    curves = {}
    for name in ("precision", "recall", "dice"):
        values = np.full(len(FINE_THRESHOLDS), np.nan)
        values[steps] = table[name][rows]
        curves[name] = values.tolist()
    return curves


def threshold_levels(values: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W) uint8 level: how many of 0.01 … 0.99 they reach.

    A pixel is in the mask at slider position j/100 exactly when its level >= j, i.e. when
    value >= j/100 compared in float32 (so a soft label k/A = j/100 counts as reaching it);
    the browser then compares integers, so the drawn mask needs no rounding of its own.
    """
    values = np.asarray(values, dtype=np.float32)
    return np.searchsorted(_FINE_THRESHOLDS_32, values, side="right").astype(np.uint8)
