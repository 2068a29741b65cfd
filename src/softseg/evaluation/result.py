"""The evaluation result: what ``softseg evaluate`` writes into summary.json, typed and versioned.

summary.json is one JSON object: ``"schema": SCHEMA_VERSION`` first, then the fields of
:class:`EvaluationResult` in their order. The dataclasses below are the whole schema: each
field is a JSON key (written in field order), a nested dataclass an object, a tuple a list,
a path a string and an undefined number ``null`` (NaN is never written). Fields marked
``optional`` are left out of the file when None (``hd95_mm`` for images without a physical
spacing, ``classes`` for binary data); every other key is always present.

:func:`to_json` writes a result and :func:`read_result` is the one reader of an evaluation
folder's summary: the report and the experiments read an evaluation only through it (and
:func:`softseg.evaluation.rows.read_rows` for its CSV files). A file of another schema
version is refused, never guessed at; a change of a key or of a meaning bumps the version.
"""

from __future__ import annotations

import collections.abc
import json
import math
import types
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Mapping, Union, get_args, get_origin, get_type_hints

from softseg.errors import DatasetError, SoftsegError

SCHEMA_VERSION = "softseg-evaluation/1"
SUMMARY_FILE = "summary.json"
# what a complete evaluation folder holds (evaluate publishes them together)
EVALUATION_FILES = ("summary.json", "metrics.csv", "cases.csv", "curves.csv", "tables.md")
_OPTIONAL = {"optional": True}  # field metadata: key left out of the file when None


@dataclass(frozen=True)
class MeanStd:
    """Mean ± std (population, ddof 0) of the defined (non-NaN) values and their count ``n``;
    ``mean`` and ``std`` are None when no value was defined (``n`` = 0)."""

    mean: float | None
    std: float | None
    n: int


@dataclass(frozen=True)
class Table2:
    """Table 2 of one task, prediction >= t against soft label >= t, one entry per metric.

    Fractions except ``hd95`` (pixels) and ``hd95_mm`` (millimetres, None unless every case
    has a physical spacing). HD95 leaves out undefined rows (exactly one mask empty).
    """

    dice: MeanStd
    precision: MeanStd
    recall: MeanStd
    hd95: MeanStd
    hd95_mm: MeanStd | None = field(metadata=_OPTIONAL)
    gt_area_frac: MeanStd


@dataclass(frozen=True)
class ByThreshold:
    """Table 2 per threshold: at each ``threshold[k]`` the mean over cases of every metric
    (None where no case defines it) and ``hd95_undefined[k]``, the cases with HD95 undefined."""

    threshold: tuple[float, ...]
    dice: tuple[float | None, ...]
    precision: tuple[float | None, ...]
    recall: tuple[float | None, ...]
    hd95: tuple[float | None, ...]
    hd95_mm: tuple[float | None, ...] | None = field(metadata=_OPTIONAL)
    gt_area_frac: tuple[float | None, ...]
    hd95_undefined: tuple[int, ...]

    def at(self, metric: str, threshold: float) -> float | None:
        """The mean over cases of ``metric`` ("dice", ...) at ``threshold``; None when the grid
        lacks that threshold or no case defines the value there."""
        values = getattr(self, metric)
        for t, value in zip(self.threshold, values or ()):
            if math.isclose(t, threshold, rel_tol=0, abs_tol=1e-9):
                return value
        return None


@dataclass(frozen=True)
class Table3:
    """Table 3 of one task (prediction >= 0.5 against each rater), mean ± std over cases."""

    ged2: MeanStd
    pred_rater_dist: MeanStd
    rater_diversity: MeanStd
    expected_dice: MeanStd


@dataclass(frozen=True)
class Reliability:
    """The pooled reliability diagram: bin ``i`` spans ``bin_edges[i] <= p < bin_edges[i + 1]``
    and holds ``count[i]`` pixels of mean prediction ``mean_pred[i]`` and mean soft label
    ``mean_soft[i]`` (None for an empty bin)."""

    bin_edges: tuple[float, ...]
    count: tuple[int, ...]
    mean_pred: tuple[float | None, ...]
    mean_soft: tuple[float | None, ...]


@dataclass(frozen=True)
class Calibration:
    """ECE and Brier score per case (mean ± std over cases), ECE pooled over every pixel."""

    ece: MeanStd
    brier: MeanStd
    ece_pooled: float
    n_bins: int
    reliability: Reliability


@dataclass(frozen=True)
class TaskResult:
    """Everything summarised of one task over its ``n_cases`` cases.

    ``table2`` is the paper's form (mean over cases per threshold, then mean ± std over the
    thresholds), ``table2_over_cases`` each case's mean over thresholds then mean ± std over
    cases. ``table3`` is None for agreement maps, ``table3_note`` then says why.
    ``hd95_undefined`` counts case x threshold rows with HD95 undefined, in
    ``hd95_undefined_cases`` cases, of ``hd95_rows`` rows. ``sampled``: the scores of
    hypothesis sets (:mod:`softseg.evaluation.sampled`), mean ± std over cases, or None.
    """

    n_cases: int
    table2: Table2
    table2_by_threshold: ByThreshold
    table2_over_cases: Table2
    table3: Table3 | None
    table3_note: str | None
    qubiq: MeanStd
    calibration: Calibration
    hd95_undefined: int
    hd95_undefined_cases: int
    hd95_rows: int
    # with hypotheses (evaluate --samples): ged_map and ged_N, hmiou_N, diversity_N per count N
    sampled: Mapping[str, MeanStd] | None = field(default=None, metadata=_OPTIONAL)


@dataclass(frozen=True)
class ClassCalibration:
    """Calibration of a multi-class prediction over all its ``classes`` (background first).

    ``classwise_ece`` and ``brier`` (the multi-class Brier score) per case, mean ± std over
    ``n_cases``; pooled over every pixel of every case, each class's ECE
    (``ece_by_class_pooled``) and their mean ``classwise_ece_pooled``.
    """

    classes: tuple[str, ...]
    n_cases: int
    classwise_ece: MeanStd
    brier: MeanStd
    classwise_ece_pooled: float
    ece_by_class_pooled: Mapping[str, float]


@dataclass(frozen=True)
class EvaluationResult:
    """One evaluation: the inputs, its conventions and a :class:`TaskResult` per task.

    ``predictions`` and ``data`` are the folders evaluated (absolute when evaluate wrote
    them); ``files[task][case]`` is the map evaluated, relative to ``predictions``.
    ``conventions`` states every rule in words (name -> text, or a number). ``classes``, for
    multi-class data only, is the calibration over all classes (the tasks are then the
    foreground classes, each evaluated as its binary problem).
    """

    softseg_version: str
    predictions: Path
    predictions_layout: str
    data: Path
    dataset: str
    layout: str
    split: str | None
    cases: tuple[str, ...]
    files: Mapping[str, Mapping[str, str]]
    conventions: Mapping[str, Any]
    tasks: Mapping[str, TaskResult]
    classes: ClassCalibration | None = field(default=None, metadata=_OPTIONAL)


def mean_stds(table: Table2 | Table3) -> dict[str, MeanStd]:
    """The entries of a table as ``{metric: MeanStd}`` in field order, absent ones left out."""
    return {f.name: getattr(table, f.name) for f in fields(table) if getattr(table, f.name) is not None}


# ----------------------------------------------------------------------------- writing


def to_json(result: EvaluationResult) -> dict[str, Any]:
    """The JSON object of summary.json (``schema`` first), ready for ``write_json_atomic``."""
    return {"schema": SCHEMA_VERSION, **_dump(result)}


def _dump(value: Any) -> Any:
    if is_dataclass(value):
        return {f.name: _dump(getattr(value, f.name)) for f in fields(value)
                if not (f.metadata.get("optional") and getattr(value, f.name) is None)}
    if isinstance(value, Mapping):
        return {str(k): _dump(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# ----------------------------------------------------------------------------- reading


def check_folder(eval_dir: Path) -> Path:
    """Raise unless ``eval_dir`` is an evaluation folder holding every file evaluate writes."""
    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        raise SoftsegError(
            f"{eval_dir}: expected an evaluation folder (written by `softseg evaluate`), "
            f"found {'a file' if eval_dir.exists() else 'nothing'}; "
            "run `softseg evaluate RUN DATA --out EVAL_DIR` first and pass EVAL_DIR"
        )
    missing = [name for name in EVALUATION_FILES if not (eval_dir / name).is_file()]
    if missing:
        raise DatasetError(
            [f"{eval_dir / name}: missing" for name in missing],
            header=f"{eval_dir}: not a complete evaluation folder (re-run `softseg evaluate`)",
        )
    return eval_dir


def read_result(eval_dir: str | Path) -> EvaluationResult:
    """The :class:`EvaluationResult` of an evaluation folder (its summary.json).

    Raises :class:`SoftsegError` naming the file for a folder that is not a complete
    evaluation or a summary of another schema version, and :class:`DatasetError` listing
    every missing or ill-typed key; the way out is always to re-run ``softseg evaluate``.
    """
    path = check_folder(Path(eval_dir)) / SUMMARY_FILE
    rerun = "re-run `softseg evaluate` to rewrite it"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:  # a JSON syntax error, or bytes that are not UTF-8
        raise DatasetError([f"{path}: expected JSON, found a syntax error ({error})"],
                           header=f"{path}: unreadable evaluation summary ({rerun})") from error
    found = data.get("schema") if isinstance(data, dict) else None
    if found != SCHEMA_VERSION:
        what = repr(found) if found is not None else "no schema version (written by an older softseg)"
        raise SoftsegError(f"{path}: expected an evaluation summary of schema {SCHEMA_VERSION!r}, "
                           f"found {what}; {rerun}")
    if not isinstance(data.get("tasks"), dict) or not data["tasks"]:
        raise DatasetError([f"{path}: expected an object with a non-empty \"tasks\" mapping "
                            "(task -> table2, table3, qubiq, calibration, hd95_undefined)"],
                           header=f"{path}: not an evaluation summary ({rerun})")
    problems: list[str] = []
    result = _parse(EvaluationResult, data, "", problems)
    if problems:
        raise DatasetError([f"{path}: {p}" for p in problems],
                           header=f"{path}: not a {SCHEMA_VERSION} evaluation summary ({rerun})")
    return result


_BAD = object()  # a value that could not be read (its problem is recorded)


def _parse(hint: Any, value: Any, where: str, problems: list[str]) -> Any:
    """``value`` (parsed JSON) as the type ``hint``; ``_BAD`` and a problem if it is not one."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _parse(inner, value, where, problems)
    if is_dataclass(hint):
        return _parse_object(hint, value, where, problems)
    if origin is tuple:
        if not isinstance(value, list):
            return _bad(problems, where, "a list", value)
        items = [_parse(args[0], v, f"{where}[{i}]", problems) for i, v in enumerate(value)]
        return _BAD if any(v is _BAD for v in items) else tuple(items)
    if origin is collections.abc.Mapping:
        if not isinstance(value, dict):
            return _bad(problems, where, "an object", value)
        items = {k: _parse(args[1], v, f"{where}.{k}", problems) for k, v in value.items()}
        return _BAD if any(v is _BAD for v in items.values()) else items
    if hint is Any:
        return value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else _bad(problems, where, "a number", value)
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return value if ok else _bad(problems, where, "an integer", value)
    if hint in (str, Path):
        return hint(value) if isinstance(value, str) else _bad(problems, where, "a string", value)
    raise TypeError(f"result.py: no reader for the type {hint!r} of {where}")  # a schema bug


def _parse_object(cls: type, value: Any, where: str, problems: list[str]) -> Any:
    names = [f.name for f in fields(cls)]
    if not isinstance(value, dict):
        return _bad(problems, where, f"an object with keys {', '.join(names)}", value)
    hints = get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        key = f"{where}.{f.name}" if where else f.name
        if f.name not in value:
            if f.metadata.get("optional"):
                kwargs[f.name] = None
                continue
            problems.append(f"{key}: missing")
            kwargs[f.name] = _BAD
            continue
        kwargs[f.name] = _parse(hints[f.name], value[f.name], key, problems)
    return _BAD if any(v is _BAD for v in kwargs.values()) else cls(**kwargs)


def _bad(problems: list[str], where: str, expected: str, value: Any) -> object:
    shown = json.dumps(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    problems.append(f"{where}: expected {expected}, found {shown}")
    return _BAD
