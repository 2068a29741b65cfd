"""The HTML report of an evaluation: one self-contained page plus PNG copies of its figures.

``write_report(eval_dir, out)`` reads an evaluation folder (``softseg evaluate``'s
metrics.csv, cases.csv, curves.csv, summary.json, tables.md) and optionally a run folder's
history.csv, and writes ``out`` (HTML with every image embedded as a data: URI, CSS and
JavaScript inline, nothing fetched from the network) and ``<out stem>_files/`` beside it
with every figure as PNG. The report renders numbers, it computes none: the tables and scores
come from summary.json (read by :func:`softseg.evaluation.result.read_result`, formatted as in
tables.md by :mod:`softseg.evaluation.tables`), the slider's precision/recall from curves.csv.

Contents: a headline card per task (QUBIQ score, Dice at t = 0.5, ECE, D²_GED), Tables 2 and
3 with their conventions and the count of undefined HD95s, Dice/precision/recall against the
threshold, the reliability diagram, the training curves (with ``run``), and for a few cases
per task (best, median, worst by QUBIQ score) the paper's Figure 2, the uncertainty maps
beside the probability map where ``softseg predict --uncertainty`` wrote them, and a
confidence slider that redraws the predicted mask at any threshold 0.01 … 0.99.
"""

from __future__ import annotations

import io as _bytes_io
import logging
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from softseg.errors import SoftsegError
from softseg.evaluation.registry import spec
from softseg.files import atomic_path, temp_folder
from softseg.report import figures as figures
from softseg.report import html as markup
from softseg.report.examples import Example, load_examples, threshold_levels
from softseg.report.inputs import finite, read_evaluation, read_history

log = logging.getLogger(__name__)

__all__ = ["write_report", "files_folder"]


def files_folder(out: Path) -> Path:
    """Where the PNG copies of ``out``'s figures go: ``report.html`` -> ``report_files/``."""
    out = Path(out)
    return out.with_name(out.stem + "_files")


def write_report(
    eval_dir: Path,
    out: Path,
    run: Path | None = None,
    n_cases: int = 3,
    overwrite: bool = False,
) -> Path:
    """Write the report of ``eval_dir`` to ``out`` and its figures to ``files_folder(out)``.

    ``run`` is one run folder (with history.csv) whose training curves to include.
    ``n_cases`` example cases per task get Figure 2 and a slider (0 for none). Existing
    outputs are replaced only with ``overwrite``; both are written to temporary names first
    and renamed into place. Raises :class:`SoftsegError` for unusable inputs or outputs.
    Returns the path of the HTML file.
    """
    out = Path(out)
    if n_cases < 0:
        raise SoftsegError(f"--cases: expected 0 or more example cases per task, found {n_cases}")
    folder = files_folder(out)
    _check_outputs(out, folder, overwrite)
    evaluation = read_evaluation(Path(eval_dir))
    history = read_history(Path(run)) if run is not None else None
    examples = load_examples(evaluation, n_cases)

    pngs: dict[str, bytes] = {}  # file name -> PNG, in page order
    sections = [
        ("summary", "Summary", markup.headline(evaluation)),
        ("tables", "Tables 2 and 3", markup.tables(evaluation)),
    ]
    per_class = evaluation.result.classes is not None
    if not per_class:
        # one flowing row of figures: with one task, curves and reliability sit side by side
        sections.append(("curves", "Thresholds and calibration", _figures(evaluation, pngs, evaluation.tasks)))
    else:  # multi-class: a section per foreground class, its examples in it
        for task in evaluation.tasks:
            chosen = [e for e in examples if e.task == task]
            sections.append((re.sub(r"[^A-Za-z0-9_-]", "_", f"class-{task}"), f"Class {task}",
                             _figures(evaluation, pngs, [task])
                             + (_examples_section(chosen, pngs, examples.index(chosen[0])) if chosen else "")))
    if history is not None:
        name = _save(pngs, "training.png", figures.training_curves(history, Path(run).name))
        sections.append(("training", "Training", markup.figure(
            pngs[name], "training curves",
            f"Run {Path(run).resolve()}: loss, validation QUBIQ score and learning rate per "
            "epoch, from history.csv.", name)))
    if examples and not per_class:
        sections.append(("examples", "Example cases", _examples_section(examples, pngs)))
    meta = [
        f"evaluation: {evaluation.root.resolve()}",
        f"predictions: {evaluation.predictions}",
        f"data: {evaluation.data}",
        *([f"run: {Path(run).resolve()}"] if run is not None else []),
        f"tasks: {', '.join(evaluation.tasks)} · written "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
    ]
    name = evaluation.result.dataset
    title = "softseg evaluation report" + (f": {name}" if name else "")
    document = markup.page(title, meta, sections)
    _write(out, folder, document, pngs)
    log.info("report written to %s (%d figures in %s)", out, len(pngs), folder)
    return out


def _figures(evaluation, pngs: dict[str, bytes], tasks) -> str:
    """Threshold curves, then reliability diagrams, of ``tasks`` in one flowing row."""
    return ('<div class="figures">' + _curves_section(evaluation, pngs, tasks)
            + _calibration_section(evaluation, pngs, tasks) + "</div>")


def _curves_section(evaluation, pngs: dict[str, bytes], tasks) -> str:
    items = []
    for task in tasks:
        name = _save(pngs, f"curves_{task}.png", figures.threshold_curves(evaluation, task))
        items.append(markup.figure(
            pngs[name], f"{task}: Dice, precision and recall by threshold",
            "Lines: curves.csv at t = 0.01 … 0.99; circles: metrics.csv at 0.1 … 0.9; both "
            "averaged over cases. A threshold can be chosen for the precision or recall an "
            "application needs.", name))
    return "".join(items)


def _calibration_section(evaluation, pngs: dict[str, bytes], tasks) -> str:
    items = []
    for task in tasks:
        calibration = evaluation.result.tasks[task].calibration
        ece, brier = calibration.ece.mean, calibration.brier.mean
        data = figures.reliability_data(calibration.reliability)
        name = _save(pngs, f"reliability_{task}.png",
                     figures.reliability_diagram(task, data, ece, brier))
        scores = ", ".join(f"{spec(key).name} {spec(key).format(value)}" for key, value
                           in (("ece", ece), ("brier", brier)) if finite(value))
        items.append(markup.figure(
            pngs[name], f"{task}: reliability diagram",
            f"{calibration.n_bins} bins of predicted probability, as summary.json gives them; a "
            f"calibrated model lies on the diagonal. {scores or 'No ECE/Brier'} (mean over "
            "cases).", name))
    return "".join(items)


def _examples_section(examples: list[Example], pngs: dict[str, bytes], first: int = 0) -> str:
    """Figure 2 and a slider per example; ``first`` numbers the sliders on from earlier ones."""
    parts = ['<p class="note">Per task, the cases with the best, median and worst QUBIQ '
             "score. Figure 2 of the paper: soft label ≥ t (top) above prediction ≥ t "
             "(bottom), false positives red, false negatives green. Below it, move the slider "
             "to redraw the prediction's mask at any confidence threshold.</p>"]
    for index, example in enumerate(examples, start=first):
        name = _save(pngs, f"figure2_{example.task}_{example.case_id}.png",
                     figures.threshold_grid(example))
        levels = np.stack([threshold_levels(example.prob), threshold_levels(example.soft),
                           np.zeros(example.prob.shape, np.uint8)], axis=-1)
        note = f" ({example.note})" if example.note else ""
        parts.append(
            f'<div class="example"><h3>{markup.esc(example.task)} · '
            f"{markup.esc(example.case_id)}: {markup.esc(example.rank)}, QUBIQ "
            f"{example.qubiq:.3f}</h3>"
            + markup.figure(pngs[name], f"Figure 2 for {example.case_id}",
                            f"Thresholds 0.1 … 0.9{note}.", name)
            + _uncertainty_figure(example, pngs)
            + markup.viewer(example, _encode_png(example.image), _encode_png(levels), index)
            + "</div>")
    return "".join(parts)


def _uncertainty_figure(example: Example, pngs: dict[str, bytes]) -> str:
    """The probability map beside the uncertainty maps `softseg predict --uncertainty` wrote
    for this case; nothing where there are none."""
    if not example.uncertainty:
        return ""
    name = _save(pngs, f"uncertainty_{example.task}_{example.case_id}.png", figures.uncertainty_panels(example))
    several = "mi" in example.uncertainty
    over = " over all classes (background included), the same for every class" if example.over_classes else ""
    caption = (f"Per-pixel entropy of the prediction{over} in nats (natural log; 0 where it is certain, "
               f"ln K = {example.max_nats:.3f} at its most uncertain)"
               + (", split into the mutual information (how much the seeds disagree: epistemic) and the "
                  "expected entropy (the seeds' own uncertainty: aleatoric), which add up to it"
                  if several else "; one model, so no split into mutual information and expected entropy")
               + ". Read from the predictions folder" + (f" ({example.note})." if example.note else "."))
    return markup.figure(pngs[name], f"uncertainty maps of {example.case_id}", caption, name)


def _save(pngs: dict[str, bytes], name: str, figure) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    pngs[name] = figures.png_bytes(figure)
    return name


def _encode_png(array: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> lossless PNG bytes for embedding (exact values survive)."""
    buffer = _bytes_io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="RGB").save(buffer, "PNG")
    return buffer.getvalue()


def _check_outputs(out: Path, folder: Path, overwrite: bool) -> None:
    if out.suffix.lower() not in (".html", ".htm"):
        raise SoftsegError(f"{out}: expected an .html file name for the report, found "
                           f"{out.suffix or 'no suffix'}; pass e.g. --out report.html")
    if out.is_dir():
        raise SoftsegError(f"{out}: expected a file name for the report, found a folder; "
                           "pass a path such as --out report.html")
    existing = [str(p) for p in (out, folder) if p.exists()]
    if existing and not overwrite:
        raise SoftsegError(f"{' and '.join(existing)} already exist(s); pass --overwrite to "
                           "replace the earlier report, or choose another --out")
    if folder.exists() and not folder.is_dir():
        raise SoftsegError(f"{folder}: expected a folder for the report's figures, found a file; "
                           "move it away or choose another --out")


def _write(out: Path, folder: Path, document: str, pngs: dict[str, bytes]) -> None:
    """Replace the page and its figure folder whole: the figures go into a new folder under a
    unique temporary name, which takes the old folder's place (no stale figure survives),
    then the page is renamed into place. On a failure the earlier report stays as it was."""
    new_folder = temp_folder(folder)
    old_folder = new_folder.with_name(new_folder.name + ".old")  # unique: new_folder's is
    try:
        with atomic_path(out) as page:
            page.write_text(document, encoding="utf-8")
            for name, png in pngs.items():
                # a fresh folder no reader knows yet: the folder's rename is the atomic step
                (new_folder / name).write_bytes(png)
            if folder.exists():  # only reached with overwrite=True (checked before)
                os.rename(folder, old_folder)
            try:
                os.rename(new_folder, folder)
            except OSError:
                if old_folder.exists():
                    os.rename(old_folder, folder)
                raise
    finally:
        for leftover in (new_folder, old_folder):
            if leftover.exists():
                shutil.rmtree(leftover)
