"""HTML of the report: one self-contained page (inline CSS/JS, images as data: URIs).

Functions here turn already-read numbers and already-drawn PNGs into markup; text from the
files is escaped. Nothing is fetched from the network.
"""

from __future__ import annotations

import base64
import html
import json
import math
from typing import Sequence

from softseg.evaluation.registry import ALL_CLASSES, spec
from softseg.evaluation.result import MeanStd, Table3
from softseg.evaluation.tables import TextTable, paper_tables
from softseg.report.assets import CSS, JS
from softseg.report.examples import Example
from softseg.report.inputs import Evaluation, finite

esc = html.escape


def data_uri(png: bytes) -> str:
    """PNG bytes as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def page(title: str, meta: Sequence[str], sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document. ``sections`` are (anchor id, heading, inner HTML)."""
    nav = "".join(f'<a href="#{esc(sid)}">{esc(head)}</a>' for sid, head, _ in sections)
    nav = f'<div class="wrap">{nav}</div>'
    body = "".join(
        f'<section id="{esc(sid)}"><h2>{esc(head)}</h2>{inner}</section>'
        for sid, head, inner in sections
    )
    meta_html = "".join(f"<p>{esc(line)}</p>" for line in meta)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header class="top"><div class="wrap"><h1>{esc(title)}</h1>{meta_html}</div></header>'
        f"<nav>{nav}</nav><main>{body}</main>"
        "<footer>Written by softseg report. Every number on this page is read from the "
        "evaluation files; the page needs no network.</footer>"
        f"<script>{JS}</script></body></html>\n"
    )


def headline(evaluation: Evaluation) -> str:
    """One card per task: QUBIQ score, Dice at t = 0.5, ECE and D²_GED from summary.json; for
    multi-class data one more over all classes (class-wise ECE, multi-class Brier)."""
    cards = []
    for task, entry in evaluation.result.tasks.items():
        stats = [
            (spec("qubiq").long_name, entry.qubiq),
            (f"{spec('dice_at_0.5').long_name} (mean over cases)", entry.table2_by_threshold.at("dice", 0.5)),
            (spec("ece").long_name, entry.calibration.ece),
            (spec("ged2").long_name, None if entry.table3 is None else entry.table3.ged2),
        ]
        cards.append(_card(task, stats, _verdict(entry.table3)))
    classes = evaluation.result.classes
    if classes is not None:
        cards.append(_card(f"{ALL_CLASSES} ({', '.join(classes.classes)})",
                           [(spec("classwise_ece").long_name, classes.classwise_ece),
                            (spec("multiclass_brier").long_name, classes.brier)]))
    return f'<div class="cards">{"".join(cards)}</div>'


def _card(title: str, stats: list[tuple[str, MeanStd | float | None]], extra: str = "") -> str:
    cells = "".join(f'<div class="stat"><div class="value">{_number(v)}</div>'
                    f'<div class="label">{esc(label)}</div></div>' for label, v in stats)
    return f'<div class="card"><h3>{esc(title)}</h3><div class="stats">{cells}</div>{extra}</div>'


def _verdict(table3: Table3 | None) -> str:
    """The paper's headline read off Table 3: is the model closer to a rater (E[1 - IoU(y, ŷ)])
    than the raters are to each other (E[1 - IoU(y, y')])?"""
    if table3 is None:
        return ""
    model, raters = table3.pred_rater_dist.mean, table3.rater_diversity.mean
    if not (finite(model) and finite(raters)):
        return ""
    closer = "closer to" if model < raters else "not closer to"
    return (f'<p class="verdict">Model–rater distance {model:.3f} vs rater–rater '
            f"{raters:.3f} (Table 3, E[1 − IoU]): the model is {closer} a rater than the "
            "raters are to each other.</p>")


def tables(evaluation: Evaluation) -> str:
    """Tables 2 and 3, QUBIQ score and calibration (the cells of tables.md), then the count
    of undefined HD95s and the conventions."""
    parts = [_table(table) for table in paper_tables(evaluation.result)]
    undefined = "".join(
        f"<dt>{esc(task)}</dt><dd>{entry.hd95_undefined} of {entry.hd95_rows} case × "
        "threshold rows</dd>"
        for task, entry in evaluation.result.tasks.items()
    )
    parts.append("<h3>Undefined HD95 (exactly one of prediction and label empty)</h3>"
                 f'<dl class="conventions">{undefined}</dl>')
    items = "".join(f"<dt>{esc(name)}</dt><dd>{esc(str(text))}</dd>"
                    for name, text in evaluation.result.conventions.items())
    parts.append(f'<h3>Conventions</h3><dl class="conventions">{items}</dl>')
    return "".join(parts)


def _table(table: TextTable) -> str:
    level = table.level + 1  # the page's own h1/h2 come first
    head = "".join(f"<th>{esc(cell)}</th>" for cell in table.header)
    body = "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>"
                   for row in table.rows)
    return (f"<h{level}>{esc(table.title)}</h{level}><p>{esc(table.note)}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def figure(png: bytes, alt: str, caption: str = "", name: str = "") -> str:
    """An embedded figure; ``name`` is the PNG copy written beside the report."""
    copy = f" PNG copy: {name}." if name else ""
    return (f'<figure><img src="{data_uri(png)}" alt="{esc(alt)}">'
            f"<figcaption>{esc(caption)}{esc(copy)}</figcaption></figure>")


def viewer(example: Example, image_png: bytes, levels_png: bytes, index: int) -> str:
    """The interactive threshold viewer of one example (drawn by the inline script)."""
    curves = {k: [v if math.isfinite(v) else None for v in values]
              for k, values in example.curves.items()}
    # "</" cannot appear in JSON of numbers and nulls, so the script element stays closed.
    return (
        f'<div class="viewer" id="viewer-{index}" data-case="{esc(example.case_id)}" '
        f'data-task="{esc(example.task)}">'
        '<canvas class="overlay" width="1" height="1"></canvas>'
        '<div class="controls">'
        '<label>confidence threshold <input class="threshold" type="range" min="0.01" '
        'max="0.99" step="0.01" value="0.50"><output class="t-value">0.50</output></label>'
        '<dl class="readout"><dt>precision</dt><dd class="precision">—</dd>'
        '<dt>recall</dt><dd class="recall">—</dd><dt>Dice</dt><dd class="dice">—</dd></dl>'
        '<label><input class="show-label" type="checkbox" checked> show soft label ≥ t</label>'
        '<p class="legend"><span style="background:#00aaff"></span>prediction ≥ t'
        '<span style="background:#ffbe00"></span>soft label ≥ t (contour)</p>'
        '<canvas class="pr-plot" width="280" height="170"></canvas>'
        '<p class="note">precision (red), recall (green), Dice (blue) of this case from '
        "curves.csv; the dashed line is the slider.</p></div>"
        f'<img class="source source-image" alt="image of {esc(example.case_id)}" '
        f'src="{data_uri(image_png)}">'
        f'<img class="source source-levels" alt="threshold levels of {esc(example.case_id)}" '
        f'src="{data_uri(levels_png)}">'
        f'<script type="application/json" class="curves">{json.dumps(curves)}</script>'
        "</div>"
    )


def _number(value: MeanStd | float | None) -> str:
    """A headline number: mean (± std when it has one), "—" when undefined."""
    mean, std = (value.mean, value.std) if isinstance(value, MeanStd) else (value, None)
    if not finite(mean):
        return "—"
    text = f"{mean:.3f}"
    if finite(std):
        text += f'<span class="note"> ± {std:.3f}</span>'
    return text

