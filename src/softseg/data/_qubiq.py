"""Reader of the QUBIQ layout: ``[Split/]caseNN/image.nii.gz`` + ``taskTT_segRR.nii.gz``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence


from softseg.data.cases import QUBIQ_SPLITS, Scan, is_qubiq_case, natural_key
from softseg.errors import SoftsegError

from softseg.data._reading import (
    MaskFiles,
    QUBIQ_MASK,
    check_rater_sets,
    class_problems,
    multiclass_task,
    read_case,
    restrict_tasks,
    make_scan,
    select_tasks,
)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- QUBIQ


def read_qubiq(
    root: Path, name: str, tasks: Sequence[str] | None, splits: Sequence[str] | None, strict: bool,
    classes: Sequence[str] = (),
) -> Scan:
    """``<root>/{Training,Validation,Testing}/caseNN/`` or ``<root>/caseNN/``, each with
    ``image.nii.gz`` and ``taskTT_segRR.nii.gz``. With ``classes`` each ``taskTT_segRR`` is a
    rater's class map (one task at most), and ``tasks`` selects among the foreground classes."""
    problems: list[str] = []
    warnings: list[str] = []
    folders = _qubiq_case_folders(root, splits)
    listed: list[tuple[str, str | None, Path, MaskFiles]] = []
    seen: set[str] = set()
    for split, folder in folders:
        case_id = folder.name
        if case_id in seen:
            renamed = f"{(split or '').lower()}-{case_id}"
            warnings.append(f"{folder}: case id {case_id} is used in another split; named {renamed}")
            case_id = renamed
        seen.add(case_id)
        files: MaskFiles = {}
        for path in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
            match = QUBIQ_MASK.match(path.name)
            if match and path.is_file():
                files.setdefault(match.group(1).lower(), []).append((match.group(2).lower(), path))
            elif path.name not in ("image.nii.gz", "image.nii") and not path.name.startswith("."):
                log.info("%s: ignored (not image.nii.gz or taskTT_segRR.nii.gz)", path)
        listed.append((case_id, split, folder, files))

    found_tasks = sorted({t for *_, files in listed for t in files}, key=natural_key)
    multiclass_task(root, found_tasks, classes)
    selected = tuple(found_tasks) if classes else select_tasks(root, found_tasks, tasks)
    cases = []
    declared: dict[str, MaskFiles] = {}
    for case_id, split, folder, files in listed:
        image = next((folder / n for n in ("image.nii.gz", "image.nii") if (folder / n).is_file()), None)
        if image is None and not files:
            continue
        if not files and split not in ("Testing",) and found_tasks:
            problems.append(
                f"{folder}: {case_id}: expected rater masks taskTT_segRR.nii.gz "
                f"({', '.join(found_tasks)}) in a {split or 'labelled'} case, found none"
            )
        elif files:
            for task in selected:
                if task not in files:
                    problems.append(
                        f"{folder}: {case_id}: expected masks {task}_segRR.nii.gz like other "
                        f"cases, found none"
                    )
        case = read_case(case_id, image, restrict_tasks(files, selected), split, problems,
                          image_hint=str(folder / "image.nii.gz"), classes=classes)
        if case is not None:
            cases.append(case)
            declared[case_id] = files
    if not found_tasks and cases:
        warnings.append(f"{root}: no rater masks in any case; all {len(cases)} cases are unlabelled")
    check_rater_sets(declared, selected, "qubiq", strict, problems, warnings)
    if classes:
        problems += class_problems(cases, classes, root)
        selected = select_tasks(root, classes[1:], tasks)
    return make_scan(root, name, "qubiq", selected, cases, problems, warnings, classes)


def _qubiq_case_folders(root: Path, splits: Sequence[str] | None) -> list[tuple[str | None, Path]]:
    split_dirs = [s for s in QUBIQ_SPLITS if (root / s).is_dir()]
    if not split_dirs:
        if splits is not None:
            raise SoftsegError(
                f"{root}: splits {', '.join(splits)} were asked for but the dataset has no "
                f"Training/Validation/Testing folders; leave the split selection out"
            )
        return [(None, f) for f in _case_like(root)]
    missing = [s for s in (splits or ()) if s not in split_dirs]
    if missing:
        raise SoftsegError(
            f"{root}: expected split folder(s) {', '.join(missing)}, found only "
            f"{', '.join(split_dirs)}; choose among those splits"
        )
    wanted = [s for s in split_dirs if splits is None or s in splits]
    return [(s, f) for s in wanted for f in _case_like(root / s)]


def _case_like(folder: Path) -> list[Path]:
    out = []
    for child in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if child.is_dir() and not child.name.startswith("."):
            if is_qubiq_case(child) or any(QUBIQ_MASK.match(p.name) for p in child.iterdir()):
                out.append(child)
    return out


