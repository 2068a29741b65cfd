"""Tables 2 and 3, QUBIQ score and calibration of an :class:`EvaluationResult`, as text cells.

One formatting for people, two renderings: :func:`tables_markdown` writes tables.md and the
report draws the same :class:`TextTable` cells as HTML, so both show the same digits.
Headers, units and decimals are each metric's in :mod:`softseg.evaluation.registry` (percent
columns are fractions x 100 with 2 decimals, distances and calibration 4 decimals, HD95 2
decimals); "n/a" where a value is undefined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from softseg.evaluation.registry import spec
from softseg.evaluation.result import EvaluationResult, MeanStd


@dataclass(frozen=True)
class TextTable:
    """One table: ``title`` (a heading of ``level`` 2 or 3), an explanatory ``note`` and rows
    of cells under ``header``, every cell already formatted."""

    title: str
    level: int
    note: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def _pm(entry: MeanStd | None, key: str) -> str:
    """``mean ± std`` of metric ``key`` in its display unit and decimals (evaluation.registry)."""
    if entry is None or entry.mean is None or not math.isfinite(entry.mean):
        return "n/a"
    return f"{spec(key).format(entry.mean)} ± {spec(key).format(entry.std)}"


def _labels(*keys: str) -> tuple[str, ...]:
    return tuple(spec(k).label for k in keys)


def paper_tables(result: EvaluationResult) -> list[TextTable]:
    """Table 2 (the paper's form, then over cases), Table 3, and QUBIQ score with calibration;
    one row per task. An HD95 mm column appears when any task has physical spacing."""
    tasks = result.tasks
    has_mm = any(s.table2.hd95_mm is not None for s in tasks.values())
    mm_head = _labels("hd95_mm") if has_mm else ()
    table2 = TextTable(
        "Table 2: prediction ≥ t against soft label ≥ t, t = 0.1 … 0.9", 2,
        "Mean over cases at each threshold, then mean ± std over the 9 thresholds (the "
        "paper's form). HD95 leaves out undefined rows (exactly one mask empty), counted in "
        "the last column.",
        ("Task", "Cases", *_labels("dice", "precision", "recall", "hd95"), *mm_head,
         *_labels("gt_area_frac"), "HD95 undefined"),
        tuple(
            (task, str(s.n_cases), _pm(s.table2.dice, "dice"), _pm(s.table2.precision, "precision"),
             _pm(s.table2.recall, "recall"), _pm(s.table2.hd95, "hd95"),
             *((_pm(s.table2.hd95_mm, "hd95_mm"),) if has_mm else ()),
             _pm(s.table2.gt_area_frac, "gt_area_frac"),
             f"{s.hd95_undefined} of {s.hd95_rows} ({s.hd95_undefined_cases} cases)")
            for task, s in tasks.items()
        ),
    )
    over_cases = TextTable(
        "Table 2 over cases", 3,
        "Each case's mean over the 9 thresholds, then mean ± std over cases.",
        ("Task", *_labels("dice", "precision", "recall", "hd95"), *mm_head),
        tuple(
            (task, _pm(t.dice, "dice"), _pm(t.precision, "precision"), _pm(t.recall, "recall"),
             _pm(t.hd95, "hd95"), *((_pm(t.hd95_mm, "hd95_mm"),) if has_mm else ()))
            for task, t in ((task, s.table2_over_cases) for task, s in tasks.items())
        ),
    )
    table3 = TextTable(
        "Table 3: prediction ≥ 0.5 against each rater", 2,
        "d = 1 − IoU, d(∅, ∅) = 0; mean ± std over cases.",
        ("Task", *_labels("ged2", "pred_rater_dist", "rater_diversity", "expected_dice")),
        tuple(
            (task, s.table3_note or "n/a", "n/a", "n/a", "n/a") if s.table3 is None else
            (task, _pm(s.table3.ged2, "ged2"), _pm(s.table3.pred_rater_dist, "pred_rater_dist"),
             _pm(s.table3.rater_diversity, "rater_diversity"), _pm(s.table3.expected_dice, "expected_dice"))
            for task, s in tasks.items()
        ),
    )
    calibration = TextTable(
        "QUBIQ score and calibration", 2,
        "Mean ± std over cases; pooled ECE over every pixel of every case.",
        ("Task", *_labels("qubiq", "ece", "ece_pooled", "brier")),
        tuple(
            (task, _pm(s.qubiq, "qubiq"), _pm(s.calibration.ece, "ece"),
             spec("ece_pooled").format(s.calibration.ece_pooled), _pm(s.calibration.brier, "brier"))
            for task, s in tasks.items()
        ),
    )
    tables = [table2, over_cases, table3, calibration]
    sampled = [(task, s.sampled) for task, s in tasks.items() if s.sampled]
    if sampled:
        tables.append(hypotheses_table(sampled))
    if result.classes is not None:
        tables.append(class_table(result))
    return tables


def hypotheses_table(sampled: list[tuple[str, dict[str, MeanStd]]]) -> TextTable:
    """evaluate --samples: the LIDC benchmark's scores, one row per task."""
    keys = tuple(sampled[0][1])
    return TextTable(
        "Hypotheses: the LIDC benchmark's scores", 2,
        "N hypotheses per case against every rater (the conventions' 'hypotheses'): D²_GED and "
        "diversity keep the self-pairs i = i′, unlike Table 3; HM-IoU matches the raters tiled "
        "to N. D²_GED one map: the map at 0.5 as the only hypothesis. Mean ± std over cases.",
        ("Task", *_labels(*keys)),
        tuple((task, *(_pm(values.get(k), k) for k in keys)) for task, values in sampled),
    )


def class_table(result: EvaluationResult) -> TextTable:
    """Multi-class data: the calibration over all classes, background included."""
    c = result.classes
    return TextTable(
        "Calibration over all classes", 2,
        "The softmax prediction against the class distribution: class-wise ECE (the mean over "
        "classes of each class's ECE) and the multi-class Brier score (sum over classes, in "
        "[0, 2]), mean ± std over cases; pooled ECE over every pixel of every case, per class "
        "and their mean.",
        ("Classes", "Cases", spec("classwise_ece").label, f"{spec('classwise_ece').label} pooled",
         spec("multiclass_brier").label, *(f"{spec('ece').name} {name} pooled" for name in c.classes)),
        ((", ".join(c.classes), str(c.n_cases), _pm(c.classwise_ece, "classwise_ece"),
          spec("classwise_ece").format(c.classwise_ece_pooled), _pm(c.brier, "multiclass_brier"),
          *(spec("ece_pooled").format(c.ece_by_class_pooled[name]) for name in c.classes)),),
    )


def tables_markdown(result: EvaluationResult) -> str:
    """tables.md: the inputs, :func:`paper_tables` as pipe tables, and every convention."""
    lines = [
        "# Evaluation", "",
        f"Predictions: `{result.predictions}` ({result.predictions_layout} layout)  ",
        f"Data: `{result.data}` (layout {result.layout}, split {result.split or 'all'})",
    ]
    for table in paper_tables(result):
        lines += ["", f"{'#' * table.level} {table.title}", "", table.note, "",
                  _pipe_row(table.header), "|" + "---|" * len(table.header)]
        lines += [_pipe_row(row) for row in table.rows]
    lines += ["", "## Conventions", ""]
    lines += [f"- **{name}**: {text}" for name, text in result.conventions.items()]
    return "\n".join(lines) + "\n"


def _pipe_row(cells: tuple[str, ...]) -> str:
    return "| " + " | ".join(cells) + " |"
