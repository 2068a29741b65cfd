"""``softseg evaluate --samples N``: the LIDC benchmark's scores of N hypotheses per case.

Where the hypotheses come from is read from the prediction folder's ``predictions.json``:

* a sampling run (head ssn) whose ``predict --samples M`` wrote its own draws (record
  ``samples.source`` "drawn"): the first N of the M files ``<task>_sample-XX.<ext>`` (for
  classes ``label-map_sample-XX``, the class's pixels);
* anything else: N stratified level sets of the probability map (:mod:`hypotheses`), computed
  here from the map itself, so that no files are needed.

Per case and task the columns are ``ged_map`` (the map at 0.5 as the one hypothesis) and, for
each N, ``ged_N``, ``hmiou_N`` and ``diversity_N``; D²_GED and the diversity keep the
self-pairs i = i′ (the field's convention, :mod:`hypotheses`), unlike Table 3's D²_GED.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from softseg.data import io
from softseg.errors import SoftsegError
from softseg.evaluation import hypotheses
from softseg.evaluation.matching import Prediction

METRICS = ("ged", "hmiou", "diversity")
CONVENTION = (
    "hypotheses: N per case, from a sampling run's own draws (predictions.json samples.source "
    "'drawn': the first N written) or else N stratified level sets p >= (k - 1/2)/N of the map "
    "(marginals = p; classes: the class at that level of the CDF taken from the last class down); "
    "d = 1 - IoU with d(empty, empty) = 0; ged_N = 2 mean d(s, y) - mean d(s, s') - mean d(y, y') "
    "with the self-pairs i = i' kept (the Probabilistic U-Net / PHiSeg / SSN code; Table 3 leaves "
    "y = y' out); diversity_N = mean d(s, s') over all N^2 pairs; hmiou_N = the raters tiled to N "
    "(or both to lcm(N, R)), Hungarian matching at cost 1 - IoU, mean IoU of the pairs; ged_map = "
    "ged of the one hypothesis map >= 0.5; NaN without individual raters"
)


def keys(counts: Sequence[int]) -> tuple[str, ...]:
    """The per-case columns of ``counts``: ``ged_map``, then per N ``ged_N``, ``hmiou_N``, ``diversity_N``."""
    return ("ged_map", *(f"{m}_{n}" for n in counts for m in METRICS))


def check_counts(counts: Sequence[int]) -> tuple[int, ...]:
    """``counts`` as a tuple of distinct integers >= 1, in the order given; SoftsegError otherwise."""
    out = tuple(counts)
    bad = [c for c in out if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1]
    if bad or len(set(out)) != len(out):
        raise SoftsegError(f"--samples: expected distinct hypothesis counts >= 1, got {list(out)}")
    return out


@dataclass(frozen=True)
class Source:
    """Where a prediction folder's hypotheses come from: ``drawn`` files per case written by
    a sampling run (0: none, level sets of the map instead)."""

    drawn: int = 0

    @property
    def description(self) -> str:
        return (f"the run's own samples (the first N of {self.drawn} written per case)" if self.drawn
                else "stratified level sets of the probability map")


def source_of(predictions: Path) -> Source:
    """The :class:`Source` of a prediction folder, from its record (none: level sets)."""
    path = Path(predictions) / io.PREDICTIONS_FILE
    if not path.is_file():
        return Source()
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise SoftsegError(f"{path}: expected the JSON record of softseg predict, found a syntax error ({error})") \
            from error
    samples = record.get("samples") if isinstance(record, dict) else None
    if not isinstance(samples, dict) or samples.get("source", "drawn") != "drawn":
        return Source()
    return Source(drawn=int(samples["count"]))


def check_source(source: Source, counts: Sequence[int], predictions: Path) -> None:
    """SoftsegError when a sampling run's folder holds fewer draws than the largest N."""
    if source.drawn and max(counts) > source.drawn:
        raise SoftsegError(
            f"{predictions}: --samples {max(counts)} needs {max(counts)} hypotheses per case, but the sampling "
            f"run's prediction wrote {source.drawn} ({io.PREDICTIONS_FILE}); rerun softseg predict with --samples {max(counts)}")


def _drawn(pred: Prediction, n: int, source: Source, class_index: int | None) -> np.ndarray:
    folder, suffix = pred.path.parent, pred.path.name[len(io.stem(pred.path)):]
    name = io.LABEL_MAP if class_index is not None else pred.task
    masks = []
    for k in range(n):
        path = folder / f"{name}_{io.sample_name(k, source.drawn)}{suffix}"
        if not path.is_file():
            raise SoftsegError(f"{path}: missing; the record says {source.drawn} samples per case were written")
        if class_index is None:
            masks.append(io.read_probability(path)[0] >= 0.5)
        else:  # a label map of class values, stored as they are (8-bit PNG: read back x 255)
            masks.append(np.rint(io.read_map(path, upper=255.0)[0]) == class_index)
    return np.stack(masks)


def case_hypotheses(
    pred: Prediction, prob: np.ndarray, n: int, source: Source,
    class_maps: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """``n`` hypotheses ``(n, *spatial)`` bool of one case and task: the run's draws, or level
    sets of ``prob`` (multi-class: of all ``class_maps``, background first, keeping the task's class)."""
    index = list(class_maps).index(pred.task) if class_maps else None
    if source.drawn:
        return _drawn(pred, n, source, index)
    if class_maps:
        return hypotheses.level_set_labels(np.stack(list(class_maps.values())), n) == index
    return hypotheses.level_set_masks(prob, n)


def case_scores(
    pred: Prediction, prob: np.ndarray, counts: Sequence[int], source: Source,
    class_maps: Mapping[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """The columns :func:`keys` of one case and task (NaN without individual raters)."""
    raters = pred.case.masks.get(pred.task)
    if raters is None:
        return {key: float("nan") for key in keys(counts)}
    raters = np.asarray(raters, dtype=bool)
    out = {"ged_map": hypotheses.ged_terms(hypotheses.level_set_masks(prob, 1), raters)["ged"]}
    for n in counts:
        scores = hypotheses.sampled_scores(case_hypotheses(pred, prob, n, source, class_maps), raters)
        out.update({f"{m}_{n}": scores[m] for m in METRICS})
    return out
