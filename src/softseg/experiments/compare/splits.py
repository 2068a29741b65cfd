"""Which cases each run of a comparison trains on and is tested on: the dataset's official
Training/Validation split, a fixed split from a CSV file (any layout), or patient-level k-fold
cross-validation (:mod:`softseg.experiments.folds`).

Only cases labelled for every trained task can train or be tested. K-fold (and so the
training fractions, subsets of its folds) leaves the others out, and the dataset's Testing
split too (QUBIQ's unlabelled challenge cases), saying how many in a warning and in the plan's
note; a fixed split that names such a case is refused, since the user or the dataset asked
for it explicitly.

Planning reads (the dataset, the CSV files, a manifest saved by an earlier run) and writes
nothing, so every problem is found before the output folder is touched; :func:`save_plan`
then writes the manifest a resumed run must keep: ``folds.json`` or ``split.json``.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from softseg.data.cases import Dataset
from softseg.errors import SoftsegError
from softseg.experiments.folds import FoldManifest, patient_map, planned_folds, write_manifest
from softseg.files import write_json_atomic

log = logging.getLogger(__name__)

SPLIT_FORMAT = "softseg-split/1"
# values of a split CSV's "split" column, compared case-insensitively
TRAIN_VALUES = ("training", "train")
TEST_VALUES = ("validation", "test")
HELD_BACK_SPLIT = "Testing"  # the dataset's own test set (QUBIQ: unlabelled); never in folds


@dataclass(frozen=True)
class Fold:
    """One training run's cases."""

    name: str  # its run folder: "fold<F>", or "run" for a fixed split
    index: int  # fold number (0 for a fixed split); seeds the permutation of training fractions
    train: tuple[str, ...]
    test: tuple[str, ...]


@dataclass(frozen=True)
class SplitPlan:
    """The folds to run, each case's patient, and how the split was made."""

    folds: tuple[Fold, ...]
    patients: Mapping[str, str]  # case id -> patient id (the case id unless grouped)
    note: str  # one sentence for the tables
    complete: bool  # False when only some folds of a k-fold split are run (--run-folds)
    manifest: FoldManifest | None = None  # k-fold only
    fixed: Mapping[str, object] | None = None  # fixed split only: what split.json holds
    left_out: tuple[str, ...] = ()  # k-fold: the dataset's cases in no fold (unlabelled, Testing)

    @property
    def tag(self) -> str:
        """Suffix of the evaluation and result of a subset of the folds (``-fold0``), so runs of
        different subsets never mix; empty when the whole split is run."""
        return "" if self.complete else "-" + "-".join(f.name for f in self.folds)


def plan_splits(
    dataset: Dataset,
    out: Path,
    *,
    tasks: Sequence[str] | None = None,
    folds: int | None = None,
    run_folds: Sequence[int] | None = None,
    split_seed: int = 0,
    group_regex: str | None = None,
    patients_csv: Path | None = None,
    split_csv: Path | None = None,
) -> SplitPlan:
    """The comparison's split: ``--folds K`` (patients grouped by ``group_regex`` or
    ``patients_csv``), ``--split-csv FILE``, or else the dataset's Training/Validation split.

    ``tasks`` are the trained tasks (default: the dataset's); a case without a label for one
    of them cannot train or be tested. K-fold leaves such cases out, and the dataset's Testing
    split, with a warning; a fixed split naming one is refused. Patients are found among the
    cases that may enter the split only. A manifest saved in ``out`` by an earlier run is read
    back and must agree. Writes nothing; raises :class:`SoftsegError`."""
    out = Path(out)
    tasks = tuple(tasks or dataset.tasks)
    if split_csv is not None and folds is not None:
        raise SoftsegError("--split-csv and --folds both given; choose a fixed split or cross-validation")
    if run_folds is not None and folds is None:
        raise SoftsegError("--run-folds selects folds of --folds K; give --folds too")
    unlabelled = _unlabelled(dataset, tasks)
    labelled = [c.case_id for c in dataset.cases if c.case_id not in unlabelled]
    if folds is not None:
        reasons = {c.case_id: _why_left_out(c.split == HELD_BACK_SPLIT, unlabelled.get(c.case_id))
                   for c in dataset.cases if c.case_id in unlabelled or c.split == HELD_BACK_SPLIT}
        usable = [c for c in labelled if c not in reasons]
        if not usable:
            raise SoftsegError(
                f"{dataset.root}: no case to cross-validate: none outside the {HELD_BACK_SPLIT} split is labelled "
                f"for every trained task ({', '.join(tasks)}); check the data (softseg check) or choose the "
                "tasks to train (--config with tasks: [...])"
            )
        patients, grouping = patient_map(usable, group_regex=group_regex, mapping_csv=patients_csv)
        return _kfold_plan(out, usable, patients, grouping, folds, run_folds, split_seed, reasons)
    patients, grouping = patient_map(labelled, group_regex=group_regex, mapping_csv=patients_csv)
    if split_csv is not None:
        ids = [c.case_id for c in dataset.cases]
        train, test = read_split_csv(Path(split_csv), ids, patients if grouping != "case id" else None,
                                     unlabelled=unlabelled)
        source = str(Path(split_csv).resolve())
        left_out = len(ids) - len(train) - len(test)
        note = (f"fixed split from {Path(split_csv).name}: {len(train)} training, {len(test)} test cases"
                + (f" ({left_out} case(s) of the dataset not listed, left out)" if left_out else ""))
    else:
        train = tuple(c.case_id for c in dataset.cases if c.split == "Training")
        test = tuple(c.case_id for c in dataset.cases if c.split == "Validation")
        if not train or not test:
            raise SoftsegError(
                f"{dataset.root}: no official Training/Validation split ({len(train)} Training, "
                f"{len(test)} Validation cases); pass --folds K for patient-level cross-validation "
                "or --split-csv FILE for a fixed split"
            )
        missing = [f"{c} ({unlabelled[c]})" for c in train + test if c in unlabelled]
        if missing:
            raise SoftsegError(
                f"{dataset.root}: the official split has {len(missing)} case(s) that cannot train or be tested: "
                + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
                + "; label them, or pass --split-csv FILE without them, or --folds K (which leaves them out)"
            )
        source = "official"
        note = f"official split: {len(train)} Training, {len(test)} Validation cases"
    fixed = {"format": SPLIT_FORMAT, "source": source, "train": list(train), "test": list(test)}
    _check_saved_split(out / "split.json", fixed)
    used = {c: patients[c] for c in train + test}
    return SplitPlan((Fold("run", 0, train, test),), used, note, True, fixed=fixed)


def _unlabelled(dataset: Dataset, tasks: Sequence[str]) -> dict[str, str]:
    """Case id -> "no label for task(s) ..." for each case lacking a label of ``tasks``."""
    found = {}
    for case in dataset.cases:
        missing = [t for t in tasks if not case.is_labelled(t)]
        if missing:
            found[case.case_id] = f"no label for task(s) {', '.join(missing)}"
    return found


def _why_left_out(held_back: bool, unlabelled: str | None) -> str:
    """"of the Testing split", "with no label for task(s) ...", or both."""
    return " ".join(filter(None, (f"of the {HELD_BACK_SPLIT} split" if held_back else "",
                                  f"with {unlabelled}" if unlabelled else "")))


def _left_out_note(reasons: Mapping[str, str], n_cases: int) -> str:
    """One sentence on the cases left out of the folds, by reason with a few case ids each."""
    by_reason: dict[str, list[str]] = {}
    for case, reason in reasons.items():
        by_reason.setdefault(reason, []).append(case)
    parts = [f"{len(cases)} {reason} ({', '.join(cases[:5])}{' ...' if len(cases) > 5 else ''})"
             for reason, cases in by_reason.items()]
    return (f"{len(reasons)} of the dataset's {n_cases} cases left out of the folds, since they cannot "
            f"train or be tested: " + "; ".join(parts))


def _kfold_plan(
    out: Path, ids: list[str], patients: Mapping[str, str], grouping: str, k: int,
    run_folds: Sequence[int] | None, split_seed: int, left_out: Mapping[str, str] | None = None,
) -> SplitPlan:
    """The folds of ``ids`` (only the cases that may enter folds); ``left_out`` maps each
    other case of the dataset to why it is not in any fold."""
    left_out = dict(left_out or {})
    manifest = planned_folds(out / "folds.json", patients, k, split_seed, grouping)
    chosen = list(range(manifest.k)) if run_folds is None else sorted(set(run_folds))
    bad = [f for f in chosen if not 0 <= f < manifest.k]
    if bad or not chosen:
        raise SoftsegError(f"--run-folds {bad or 'none'}: expected fold numbers 0 ... {manifest.k - 1}")
    folds = tuple(Fold(f"fold{i}", i, manifest.train_ids(i), manifest.test_ids(i)) for i in chosen)
    n_patients = len(set(manifest.patients.values()))
    n_tested = sum(len(f.test) for f in folds)
    which = "" if len(chosen) == manifest.k else f"; only fold(s) {chosen} run, {n_tested} held-out cases"
    note = (
        f"{manifest.k}-fold patient-level cross-validation of {len(ids)} cases / {n_patients} patients "
        f"(patients by {manifest.grouping}; split seed {manifest.seed}; manifest folds.json{which}); held-out "
        "predictions of the folds pooled, then evaluated"
    )
    if left_out:
        sentence = _left_out_note(left_out, len(ids) + len(left_out))
        log.warning("--folds %d: %s", manifest.k, sentence)
        note += f" ({sentence})"
    return SplitPlan(folds, dict(manifest.patients), note, len(chosen) == manifest.k, manifest=manifest,
                     left_out=tuple(left_out))


def save_plan(out: Path, plan: SplitPlan) -> None:
    """Write the plan's manifest into ``out`` unless it is there already: ``folds.json``
    (:func:`softseg.experiments.folds.write_manifest`) or ``split.json`` (source, train, test)."""
    out = Path(out)
    if plan.manifest is not None and not (out / "folds.json").exists():
        write_manifest(out / "folds.json", plan.manifest)
    if plan.fixed is not None and not (out / "split.json").exists():
        write_json_atomic(out / "split.json", dict(plan.fixed))


def _check_saved_split(path: Path, fixed: Mapping[str, object]) -> None:
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        same = saved["train"] == fixed["train"] and saved["test"] == fixed["test"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SoftsegError(f"{path}: not a readable split manifest ({error}); use a fresh --out") from error
    if not same:
        raise SoftsegError(
            f"{path}: the saved split ({len(saved['train'])} training, {len(saved['test'])} test cases, "
            f"from {saved.get('source')}) differs from this run's ({len(fixed['train'])} training, "
            f"{len(fixed['test'])} test cases, from {fixed['source']}); its models belong to the saved "
            "split: use a fresh --out"
        )


def read_split_csv(
    path: Path, case_ids: Sequence[str], patients: Mapping[str, str] | None = None, *,
    unlabelled: Mapping[str, str] | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Training and test case ids (in ``case_ids`` order) of a CSV with header columns ``case``
    (or ``case_id``) and ``split``; split values ``Training``/``train`` or
    ``Validation``/``test``, case-insensitive. Cases of ``case_ids`` the file does not list are
    left out. With ``patients`` (case -> patient), no patient may be on both sides.
    ``unlabelled`` maps the cases that cannot train or be tested to why (no label for a
    trained task); a row naming one is a problem.

    Every problem is reported at once, by row (row 1 is the header): unknown case ids,
    unlabelled cases, unknown split values, cases listed twice, no training or no test case.
    Raises :class:`SoftsegError`.
    """
    unlabelled = unlabelled or {}
    accepted = "Training/train or Validation/test (any case)"
    if not path.is_file():
        raise SoftsegError(f"{path}: split CSV not found; expected a file with columns case,split")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = [f.strip() for f in reader.fieldnames or []]
        reader.fieldnames = fields
        case_col = "case" if "case" in fields else "case_id" if "case_id" in fields else None
        if case_col is None or "split" not in fields:
            raise SoftsegError(
                f"{path}: expected a header with columns 'case' (or 'case_id') and 'split', found {fields}"
            )
        known, side, first_row, problems = set(case_ids), {}, {}, []
        for row_number, row in enumerate(reader, start=2):
            case, value = (row.get(case_col) or "").strip(), (row.get("split") or "").strip()
            if not case:
                problems.append(f"row {row_number}: empty case id")
                continue
            if case in first_row:
                problems.append(f"row {row_number}: case {case} listed again (first in row {first_row[case]})")
                continue
            first_row[case] = row_number
            if case not in known:
                problems.append(f"row {row_number}: unknown case id {case!r} (not in the dataset)")
            elif case in unlabelled:
                problems.append(f"row {row_number}: case {case} cannot train or be tested: {unlabelled[case]}; "
                                "leave the row out")
                continue
            if value.lower() in TRAIN_VALUES:
                side[case] = "train"
            elif value.lower() in TEST_VALUES:
                side[case] = "test"
            else:
                problems.append(f"row {row_number}: unknown split {value!r} for case {case}; expected {accepted}")
    train = tuple(c for c in case_ids if side.get(c) == "train")
    test = tuple(c for c in case_ids if side.get(c) == "test")
    if not train:
        problems.append("no training case")
    if not test:
        problems.append("no test case")
    if patients is not None:
        straddling = sorted({patients[c] for c in train} & {patients[c] for c in test})
        if straddling:
            problems.append(f"patient(s) on both sides: {', '.join(straddling[:10])}")
    if problems:
        raise SoftsegError(
            f"{path}: split CSV has problems: " + "; ".join(problems)
            + f"; expected columns case,split with split {accepted}"
        )
    return train, test
