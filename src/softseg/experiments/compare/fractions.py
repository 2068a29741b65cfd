"""Data efficiency: nested subsets of each fold's training patients, with a saved manifest
(``fractions.json``).

For a fold, its training patients (sorted naturally) are permuted with a generator seeded by
(split seed, fold number); fraction ``f`` trains on the cases of the first ceil(f × n) of them.
So a smaller fraction's cases are a subset of a larger one's, a patient's cases are never
split, and fraction 1.0 is the whole training set: the ordinary run. Held-out cases do not
change with the fraction.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from softseg.data.cases import natural_key
from softseg.errors import SoftsegError
from softseg.files import write_json_atomic

FRACTIONS_FORMAT = "softseg-fractions/1"
FULL = 1.0


def check_fractions(values: Sequence[float]) -> tuple[float, ...]:
    """The distinct fractions, ascending, with 1.0 always among them (the comparison's tables
    and statistics are of whole training sets). Each must lie in (0, 1]; every wrong value is
    named at once. Raises :class:`SoftsegError`."""
    bad = [v for v in values if not (isinstance(v, (int, float)) and 0 < float(v) <= 1)]
    if bad:
        raise SoftsegError(f"--fractions: expected fractions in (0, 1], e.g. 0.25 0.5 1.0; found {bad}")
    return tuple(sorted({float(v) for v in values} | {FULL}))


def fraction_folder(fraction: float) -> str:
    """``frac0.25``: the folder of a fraction below 1.0 (fraction 1.0 has none: the ordinary run)."""
    return f"frac{fraction:g}"


def n_patients(fraction: float, n: int) -> int:
    """ceil(fraction × n), robust to floating point (0.1 × 30 is 3, not 4), at least 1."""
    return max(1, math.ceil(round(fraction * n, 9)))


def patient_order(train_ids: Sequence[str], patients: Mapping[str, str], seed: int, fold: int) -> list[str]:
    """The training patients of a fold in the order fractions take them: sorted naturally,
    then permuted by ``numpy.random.default_rng([seed, fold])``."""
    names = sorted({patients[c] for c in train_ids}, key=natural_key)
    permutation = np.random.default_rng([int(seed), int(fold)]).permutation(len(names))
    return [names[i] for i in permutation]


def nested_subsets(
    train_ids: Sequence[str], patients: Mapping[str, str], fractions: Sequence[float], seed: int, fold: int
) -> dict[float, tuple[str, ...]]:
    """Per fraction, the training cases (in ``train_ids`` order) of the first
    :func:`n_patients` patients of :func:`patient_order`."""
    order = patient_order(train_ids, patients, seed, fold)
    subsets = {}
    for fraction in fractions:
        chosen = set(order[: n_patients(fraction, len(order))])
        subsets[float(fraction)] = tuple(c for c in train_ids if patients[c] in chosen)
    return subsets


def prepare_fractions(
    path: Path, folds: Sequence, patients: Mapping[str, str], fractions: Sequence[float], seed: int,
    *, write: bool = True,
) -> dict[str, dict[float, tuple[str, ...]]]:
    """Per fold name, per fraction, the training case ids; saved in ``path`` (merged with the
    fractions and folds an earlier run saved there, which must agree).

    ``folds`` are :class:`softseg.experiments.compare.splits.Fold` (name, index, train). With
    ``write=False`` only the check against a saved manifest is made.
    """
    path = Path(path)
    saved = _read(path) if path.is_file() else {"folds": {}}
    entries = dict(saved["folds"])
    result: dict[str, dict[float, tuple[str, ...]]] = {}
    problems = []
    for fold in folds:
        subsets = nested_subsets(fold.train, patients, fractions, seed, fold.index)
        result[fold.name] = subsets
        entry = {"patients": patient_order(fold.train, patients, seed, fold.index),
                 "train": {f"{f:g}": list(ids) for f, ids in subsets.items()}}
        old = entries.get(fold.name)
        if old is not None and old.get("patients") != entry["patients"]:
            problems.append(f"{fold.name}: the saved patient order differs from this run's")
        elif old is not None:
            entry["train"] = {**old.get("train", {}), **entry["train"]}
        entries[fold.name] = entry
    if problems or saved.get("seed", seed) != seed:
        raise SoftsegError(
            f"{path}: saved training fractions (split seed {saved.get('seed')}) do not match this run "
            f"(split seed {seed}): " + ("; ".join(problems) or "other seed") + "; use a fresh --out"
        )
    if write:
        write_json_atomic(path, {
            "format": FRACTIONS_FORMAT, "seed": seed,
            "rule": "patients sorted naturally, permuted by numpy default_rng([seed, fold]); "
                    "fraction f takes the first ceil(f * n) of them",
            "folds": dict(sorted(entries.items(), key=lambda kv: natural_key(kv[0]))),
        })
    return result


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data.get("folds"), dict):
            raise ValueError("no 'folds' mapping")
        return data
    except (OSError, ValueError, AttributeError) as error:
        raise SoftsegError(f"{path}: not a readable fractions manifest ({error}); use a fresh --out") from error
