"""Finding the QUBIQ 2021 datasets under a release root, for ``softseg reproduce``.

Two layouts are accepted (SPEC.md, "QUBIQ 2021"):

* the release as unpacked: ``ROOT/training_data_v3/<dataset>/Training/caseNN/...`` and
  ``ROOT/validation_data_qubiq2021/<dataset>/Validation/caseNN/...``;
* one folder per dataset: ``ROOT/<dataset>/Training`` and ``ROOT/<dataset>/Validation``.

The official Training split trains, the official Validation split evaluates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from softseg.errors import SoftsegError

RELEASE_TRAINING = "training_data_v3"
RELEASE_VALIDATION = "validation_data_qubiq2021"


def locate_dataset(root: Path, dataset: str) -> dict[str, Path]:
    """The split folders of ``dataset`` under ``root``: ``{"Training": path, "Validation": path}``
    where each path is the dataset folder holding that split (the folder ``load_dataset`` reads).

    Raises :class:`SoftsegError` naming every place looked at.
    """
    root = Path(root)
    candidates = {
        "Training": [root / RELEASE_TRAINING / dataset, root / dataset],
        "Validation": [root / RELEASE_VALIDATION / dataset, root / dataset],
    }
    found: dict[str, Path] = {}
    for split, places in candidates.items():
        for place in places:
            if (place / split).is_dir():
                found[split] = place
                break
    missing = [s for s in candidates if s not in found]
    if missing:
        looked = "; ".join(
            f"{s}: " + " or ".join(str(p / s) for p in candidates[s]) for s in missing
        )
        raise SoftsegError(
            f"{root}: QUBIQ dataset {dataset!r} has no {' / '.join(missing)} split (looked in {looked}); "
            f"point QUBIQ_ROOT at the folder holding {RELEASE_TRAINING}/ and {RELEASE_VALIDATION}/, "
            f"or one holding {dataset}/Training and {dataset}/Validation, or leave {dataset} out with --tasks"
        )
    return found


def locate_all(root: Path, datasets: Sequence[str]) -> dict[str, dict[str, Path]]:
    """:func:`locate_dataset` for each of ``datasets``, reporting every missing one together."""
    root = Path(root)
    if not root.is_dir():
        raise SoftsegError(f"{root}: QUBIQ_ROOT not found; expected the folder of the unpacked QUBIQ 2021 release")
    found, problems = {}, []
    for name in datasets:
        try:
            found[name] = locate_dataset(root, name)
        except SoftsegError as error:
            problems.append(str(error))
    if problems:
        raise SoftsegError("\n".join(problems))
    return found
