"""Inference variants of a trained method in ``softseg compare``: flip TTA and temperature
scaling cross-fitted on the held-out cases.

Temperature scaling needs labelled cases the model did not train on, and an honest
comparison must not fit a case's temperature on that case. A fold's held-out cases are
therefore split in two seeded halves: each half is predicted with the temperature fitted on
the other half (2-fold cross-fitting), so every prediction is calibrated on data that is
neither its own nor training data, and the model is the very model of the trained method
(the pair isolates the effect of the temperature). The temperatures are written to
``temperatures.json`` beside the predictions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from softseg.data.cases import Dataset
from softseg.errors import SoftsegError
from softseg.experiments import pipeline as steps
from softseg.files import write_json_atomic

TEMPERATURES_FILE = "temperatures.json"


def halves(case_ids: Sequence[str], split_seed: int, fold: str) -> tuple[list[str], list[str]]:
    """Two halves of ``case_ids`` (sizes differ by at most one, each in the given order),
    from a permutation seeded by the split seed and the fold's name."""
    ids = list(case_ids)
    if len(ids) < 2:
        raise SoftsegError(
            f"{fold}: {len(ids)} held-out case(s); temperature scaling cross-fitted on the "
            "held-out cases needs at least 2 (drop the @ts variant or use more test cases)"
        )
    seed = np.random.SeedSequence([int(split_seed), *fold.encode("utf-8")])
    order = np.random.default_rng(seed).permutation(len(ids))
    first = set(order[: len(ids) // 2].tolist())
    return [c for i, c in enumerate(ids) if i in first], [c for i, c in enumerate(ids) if i not in first]


def predict_crossfitted(
    dataset: Dataset, run_dir: Path, test_ids: Sequence[str], pred_dir: Path, *, fold: str,
    split_seed: int, tta: str = "none", progress: bool = True,
) -> dict:
    """Predict ``test_ids`` with ``run_dir``'s model into ``pred_dir``, each half with the
    temperatures fitted on the other half; record them in ``pred_dir/../temperatures.json``
    under ``fold`` and return that entry."""
    a, b = halves(test_ids, split_seed, fold)
    entry = {"halves": [a, b], "fitted_on_other_half": []}
    for predict, fit in ((a, b), (b, a)):
        temperatures = steps.fitted_temperatures(run_dir, dataset.select(case_ids=fit).cases, progress=progress)
        entry["fitted_on_other_half"].append(temperatures)
        steps.predict_cases([run_dir], dataset.select(case_ids=predict).cases, pred_dir, tta=tta,
                            temperature=list(temperatures.values()), progress=progress)
    record_path = Path(pred_dir).parent / TEMPERATURES_FILE
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    record[fold] = entry
    write_json_atomic(record_path, record)
    return entry
