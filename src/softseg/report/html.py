"""HTML of the report: one self-contained page (inline CSS/JS, images as data: URIs).

Functions here turn already-read numbers and already-drawn PNGs into markup; text from the
files is escaped. Nothing is fetched from the network.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from typing import Any, Mapping, Sequence

import numpy as np

from softseg.report.assets import CSS, JS
from softseg.report.examples import Example
from softseg.report.inputs import Evaluation, finite, mean_std

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
    """One card per task: QUBIQ score, Dice at t = 0.5, ECE and D²_GED from the evaluation."""
    cards = []
    for task in evaluation.tasks:
        entry = evaluation.summary["tasks"].get(task) or {}
        calibration = entry.get("calibration") if isinstance(entry, Mapping) else None
        table3 = entry.get("table3") if isinstance(entry, Mapping) else None
        stats = [
            ("QUBIQ score", mean_std(entry.get("qubiq")) if isinstance(entry, Mapping) else None),
            _dice_at_half(evaluation, task, entry),
            ("ECE", mean_std(calibration.get("ece")) if isinstance(calibration, Mapping) else None),
            ("D²_GED", _find_ged(table3)),
        ]
        cells = "".join(
            f'<div class="stat"><div class="value">{_number(v)}</div>'
            f'<div class="label">{esc(label)}</div></div>'
            for label, v in stats
        )
        cards.append(f'<div class="card"><h3>{esc(task)}</h3>'
                     f'<div class="stats">{cells}</div>{_verdict(table3)}</div>')
    return f'<div class="cards">{"".join(cards)}</div>'


def _verdict(table3: Any) -> str:
    """The paper's headline read off Table 3: is the model closer to a rater (E[1 - IoU(y, ŷ)])
    than the raters are to each other (E[1 - IoU(y, y')])?"""
    if not isinstance(table3, Mapping):
        return ""
    model = mean_std(table3.get("pred_rater_dist"))
    raters = mean_std(table3.get("rater_diversity"))
    if model is None or raters is None or not (finite(model[0]) and finite(raters[0])):
        return ""
    closer = "closer to" if model[0] < raters[0] else "not closer to"
    return (f'<p class="verdict">Model–rater distance {model[0]:.3f} vs rater–rater '
            f"{raters[0]:.3f} (Table 3, E[1 − IoU]): the model is {closer} a rater than the "
            "raters are to each other.</p>")


def _dice_at_half(evaluation: Evaluation, task: str, entry: Any) -> tuple[str, Any]:
    """Dice at t = 0.5 over cases: summary.json's table2_by_threshold when it has it, else
    metrics.csv's per-case values averaged for the card."""
    by_threshold = entry.get("table2_by_threshold") if isinstance(entry, Mapping) else None
    if isinstance(by_threshold, Mapping):
        thresholds, values = by_threshold.get("threshold"), by_threshold.get("dice")
        if isinstance(thresholds, list) and isinstance(values, list) \
                and len(thresholds) == len(values):
            for t, value in zip(thresholds, values):
                if isinstance(t, (int, float)) and math.isclose(t, 0.5):
                    return ("Dice at t = 0.5 (mean over cases)", mean_std(value))
    metrics = evaluation.metrics
    rows = (metrics["task"] == task) & np.isclose(metrics["threshold"], 0.5)
    dice = metrics["dice"][rows]
    dice = dice[np.isfinite(dice)]
    return (f"Dice at t = 0.5 (mean of {dice.size} cases)",
            (float(dice.mean()), None) if dice.size else None)


def tables(evaluation: Evaluation) -> str:
    """Tables 2 and 3 as tables.md states them, then the conventions and undefined HD95s."""
    parts = [markdown(evaluation.tables_md)]
    undefined = []
    for task in evaluation.tasks:
        entry = evaluation.summary["tasks"].get(task) or {}
        entry = entry if isinstance(entry, Mapping) else {}
        count, rows = entry.get("hd95_undefined"), entry.get("hd95_rows")
        text = "not stated" if count is None else str(count)
        if count is not None and isinstance(rows, int):
            text += f" of {rows} case × threshold rows"
        undefined.append(f"<dt>{esc(task)}</dt><dd>{esc(text)}</dd>")
    parts.append("<h3>Undefined HD95 (exactly one of prediction and label empty)</h3>"
                 f'<dl class="conventions">{"".join(undefined)}</dl>')
    conventions = evaluation.summary.get("conventions")
    if re.search(r"^#+\s.*conventions", evaluation.tables_md, re.IGNORECASE | re.MULTILINE):
        pass  # tables.md states them already, from the same summary
    elif isinstance(conventions, Mapping) and conventions:
        items = "".join(f"<dt>{esc(str(k))}</dt><dd>{esc(_text(v))}</dd>"
                        for k, v in conventions.items())
        parts.append(f'<h3>Conventions</h3><dl class="conventions">{items}</dl>')
    elif conventions:
        parts.append(f"<h3>Conventions</h3><p>{esc(_text(conventions))}</p>")
    else:
        parts.append('<p class="note">summary.json states no conventions.</p>')
    return "".join(parts)


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


def markdown(text: str) -> str:
    """The subset of Markdown tables.md uses: headings, pipe tables, bullet lists, paragraphs,
    bold and code spans; everything else is escaped text."""
    out: list[str] = []
    kind, block = "", []  # the open block ("table", "list", "text") and its lines

    def close() -> None:
        if kind == "table" and block:
            head, *body = block
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head)
                       + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                                 for row in body)
                       + "</tbody></table>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block) + "</ul>")
        elif kind == "text":
            out.append(f"<p>{_inline(' '.join(block))}</p>")
        block.clear()

    for line in text.splitlines():
        stripped = line.strip()
        heading = re.match(r"(#{1,6})\s+(.*)", stripped)
        bullet = re.match(r"[-*]\s+(.*)", stripped)
        if stripped.startswith("|"):
            new_kind = "table"
        elif bullet:
            new_kind = "list"
        elif stripped and not heading and kind in ("list", "text"):
            new_kind = kind  # a wrapped list item or paragraph line
        elif stripped and not heading:
            new_kind = "text"
        else:
            new_kind = ""
        if new_kind != kind:
            close()
            kind = new_kind
        if heading:
            level = min(len(heading.group(1)) + 2, 6)  # the page's own h1/h2 come first
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif new_kind == "table":
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if any(cells) and not all(re.fullmatch(r":?-{2,}:?", c) for c in cells if c):
                block.append(cells)
        elif bullet:
            block.append(bullet.group(1))
        elif new_kind == "list":
            block[-1] += " " + stripped
        elif new_kind == "text":
            block.append(stripped)
    close()
    return "".join(out)


def _inline(text: str) -> str:
    escaped = esc(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


def _find_ged(table3: Any) -> tuple[float, float | None] | None:
    if not isinstance(table3, Mapping):
        return None
    for key in sorted(table3, key=lambda k: (k != "ged2", k)):
        if "ged" in str(key).lower():
            return mean_std(table3[key])
    return None


def _number(value: tuple[float, float | None] | None) -> str:
    if value is None or not finite(value[0]):
        return "—"
    mean, std = value
    text = f"{mean:.3f}"
    if finite(std):
        text += f'<span class="note"> ± {std:.3f}</span>'
    return text


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
