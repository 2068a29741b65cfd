"""Patient-level k-fold splits with a saved manifest (``folds.json``).

Several images of one patient must never sit on both sides of a split, or the held-out score
measures memory rather than generalisation. A case's patient is its case id by default, the
match of a regular expression on the case id, or a row of a CSV file ``case,patient``.
Splits are deterministic given the case ids, the patient map, ``k`` and the seed.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from softseg.files import write_json_atomic
from softseg.errors import SoftsegError

MANIFEST_FORMAT = "softseg-folds/1"


@dataclass(frozen=True)
class FoldManifest:
    """``folds[i]`` holds the held-out case ids of fold ``i`` in dataset order."""

    k: int
    seed: int
    grouping: str  # how patients were found: "case id", "regex ...", "csv ..."
    patients: Mapping[str, str]  # case id -> patient id
    folds: tuple[tuple[str, ...], ...]

    @property
    def case_ids(self) -> tuple[str, ...]:
        return tuple(self.patients)

    def test_ids(self, fold: int) -> tuple[str, ...]:
        return self.folds[fold]

    def train_ids(self, fold: int) -> tuple[str, ...]:
        held_out = set(self.folds[fold])
        return tuple(c for c in self.patients if c not in held_out)


def patient_map(
    case_ids: Sequence[str], *, group_regex: str | None = None, mapping_csv: Path | None = None
) -> tuple[dict[str, str], str]:
    """Each case's patient id, and a description of the grouping for the manifest.

    ``group_regex`` is searched in each case id; its first group (or the whole match if it has
    no group) is the patient: ``r"^(ds\\d+[a-z]?)_"`` groups ``ds1_B01`` with ``ds1_B02``.
    ``mapping_csv`` has a header with ``case`` (or ``case_id``) and ``patient`` columns; rows
    for cases not in ``case_ids`` are ignored. Every problem is reported at once.
    """
    if group_regex and mapping_csv:
        raise SoftsegError("--group-regex and --patients-csv both given; choose one way to find patients")
    if group_regex:
        return _by_regex(case_ids, group_regex), f"regex {group_regex}"
    if mapping_csv:
        return _by_csv(case_ids, Path(mapping_csv)), f"csv {Path(mapping_csv).resolve()}"
    return {c: c for c in case_ids}, "case id"


def _by_regex(case_ids: Sequence[str], pattern: str) -> dict[str, str]:
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise SoftsegError(f"--group-regex {pattern!r} is not a valid regular expression: {error}") from error
    patients, unmatched = {}, []
    for case in case_ids:
        match = regex.search(case)
        if match is None:
            unmatched.append(case)
            continue
        patients[case] = match.group(1) if regex.groups else match.group(0)
    if unmatched:
        shown = ", ".join(unmatched[:10]) + (" ..." if len(unmatched) > 10 else "")
        raise SoftsegError(
            f"--group-regex {pattern!r} matches no patient id in {len(unmatched)} case id(s): {shown}; "
            "make the expression match every case id"
        )
    return patients


def _by_csv(case_ids: Sequence[str], path: Path) -> dict[str, str]:
    if not path.is_file():
        raise SoftsegError(f"{path}: patient mapping CSV not found; expected a file with columns case,patient")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        case_col = "case" if "case" in fields else "case_id" if "case_id" in fields else None
        if case_col is None or "patient" not in fields:
            raise SoftsegError(
                f"{path}: expected a header with columns 'case' (or 'case_id') and 'patient', found {fields}"
            )
        mapping: dict[str, str] = {}
        problems = []
        for line, row in enumerate(reader, start=2):
            case, patient = (row.get(case_col) or "").strip(), (row.get("patient") or "").strip()
            if not case or not patient:
                problems.append(f"line {line}: empty case or patient")
            elif case in mapping and mapping[case] != patient:
                problems.append(f"line {line}: case {case} mapped to {mapping[case]!r} and {patient!r}")
            else:
                mapping[case] = patient
    missing = [c for c in case_ids if c not in mapping]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        problems.append(f"no patient for {len(missing)} case(s): {shown}")
    if problems:
        raise SoftsegError(f"{path}: patient mapping has problems: " + "; ".join(problems) + "; fix the CSV")
    return {c: mapping[c] for c in case_ids}


def make_folds(patients: Mapping[str, str], k: int, seed: int = 0) -> tuple[tuple[str, ...], ...]:
    """Split the cases of ``patients`` (case id -> patient id) into ``k`` held-out folds.

    All cases of a patient land in the same fold. Patients are shuffled with ``seed``, then
    placed largest first into the fold with the fewest cases so far (ties: lowest fold),
    which balances fold sizes. Each fold lists its case ids in the mapping's order.
    """
    if k < 2:
        raise SoftsegError(f"--folds {k}: expected at least 2 folds")
    by_patient: dict[str, list[str]] = {}
    for case, patient in patients.items():
        by_patient.setdefault(patient, []).append(case)
    if k > len(by_patient):
        raise SoftsegError(
            f"--folds {k}: only {len(by_patient)} patient(s) in {len(patients)} case(s); "
            f"use at most {len(by_patient)} folds"
        )
    names = sorted(by_patient)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    order.sort(key=lambda p: -len(by_patient[p]))  # stable: shuffled order kept within a size
    sizes = [0] * k
    fold_of: dict[str, int] = {}
    for patient in order:
        fold = int(np.argmin(sizes))
        sizes[fold] += len(by_patient[patient])
        fold_of[patient] = fold
    return tuple(tuple(c for c, p in patients.items() if fold_of[p] == f) for f in range(k))


def write_manifest(path: Path, manifest: FoldManifest) -> None:
    """Save ``manifest`` as JSON: k, seed, grouping, case -> patient, and each fold's train/test ids."""
    write_json_atomic(
        path,
        {
            "format": MANIFEST_FORMAT,
            "k": manifest.k,
            "seed": manifest.seed,
            "grouping": manifest.grouping,
            "patients": dict(manifest.patients),
            "folds": [
                {"fold": i, "test": list(manifest.test_ids(i)), "train": list(manifest.train_ids(i))}
                for i in range(manifest.k)
            ],
        },
    )


def read_manifest(path: Path) -> FoldManifest:
    """Load and check a manifest written by :func:`write_manifest` (or by hand, same keys)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        patients = {str(c): str(p) for c, p in data["patients"].items()}
        folds = tuple(tuple(str(c) for c in f["test"]) for f in data["folds"])
        manifest = FoldManifest(int(data["k"]), int(data["seed"]), str(data["grouping"]), patients, folds)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise SoftsegError(
            f"{path}: not a readable fold manifest ({type(error).__name__}: {error}); "
            "expected keys k, seed, grouping, patients, folds[].test; delete it to make new folds"
        ) from error
    _check(manifest, path)
    return manifest


def _check(manifest: FoldManifest, path: Path) -> None:
    problems = []
    if len(manifest.folds) != manifest.k:
        problems.append(f"k = {manifest.k} but {len(manifest.folds)} folds listed")
    seen: dict[str, int] = {}
    for i, fold in enumerate(manifest.folds):
        for case in fold:
            if case in seen:
                problems.append(f"case {case} held out in folds {seen[case]} and {i}")
            seen[case] = i
            if case not in manifest.patients:
                problems.append(f"case {case} in fold {i} has no patient")
    missing = [c for c in manifest.patients if c not in seen]
    if missing:
        problems.append(f"case(s) in no fold: {', '.join(missing[:10])}")
    fold_of_patient: dict[str, int] = {}
    for case, fold in seen.items():
        patient = manifest.patients.get(case)
        if patient is not None and fold_of_patient.setdefault(patient, fold) != fold:
            problems.append(f"patient {patient} straddles folds {fold_of_patient[patient]} and {fold}")
    if problems:
        raise SoftsegError(f"{path}: invalid fold manifest: " + "; ".join(problems) + "; delete it to make new folds")


def planned_folds(
    path: Path, patients: Mapping[str, str], k: int, seed: int, grouping: str
) -> FoldManifest:
    """The folds an experiment folder will use, without writing anything: the manifest at
    ``path`` if it exists (a resumed run must keep its splits), else new folds.

    An existing manifest must cover exactly the same cases with the same ``k``; otherwise the
    error says what differs and to use a fresh output folder.
    """
    path = Path(path)
    if path.exists():
        manifest = read_manifest(path)
        if manifest.k != k or set(manifest.patients) != set(patients):
            added = sorted(set(patients) - set(manifest.patients))
            dropped = sorted(set(manifest.patients) - set(patients))
            raise SoftsegError(
                f"{path}: saved folds (k={manifest.k}, {len(manifest.patients)} cases) do not match this run "
                f"(k={k}, {len(patients)} cases; new: {added[:5]}, gone: {dropped[:5]}); "
                "use a fresh --out, or delete the manifest to re-split"
            )
        return manifest
    return FoldManifest(k, seed, grouping, dict(patients), make_folds(patients, k, seed))


def prepare_folds(
    path: Path, patients: Mapping[str, str], k: int, seed: int, grouping: str
) -> FoldManifest:
    """:func:`planned_folds`, saved at ``path`` when they are new."""
    manifest = planned_folds(path, patients, k, seed, grouping)
    if not Path(path).exists():
        write_manifest(path, manifest)
    return manifest
