"""The images to predict: a dataset folder of any layout, a folder of images, or one file.

:func:`load_input` turns what the user gave ``softseg predict`` into a :class:`Dataset` of
(possibly unlabelled) cases; file formats stay in :mod:`softseg.data.io`.
"""

from __future__ import annotations

from pathlib import Path

from softseg.data import io
from softseg.data.cases import Case, Dataset, natural_key
from softseg.data.datasets import is_qubiq_dataset, load_dataset
from softseg.errors import SoftsegError


def _image_folder(path: Path, layout: str) -> Path | None:
    """The folder of unlabelled images to read, or None when ``path`` is a labelled layout.

    ``layout="images"``: ``path/images/`` if present, else ``path``. ``"auto"``: ``path/images/``
    without ``raters/`` or ``agreement/`` beside it, or a folder holding image files directly.
    """
    has_images = (path / "images").is_dir()
    labelled = (path / "raters").is_dir() or (path / "agreement").is_dir()
    if layout == "images":
        return path / "images" if has_images else path
    if layout != "auto" or labelled or is_qubiq_dataset(path):
        return None
    if has_images:
        return path / "images"
    if any(f.is_file() and io.is_supported(f) for f in path.iterdir()):
        return path
    return None


def _read_images(folder: Path, root: Path) -> Dataset:
    """Every image file of ``folder`` as an unlabelled case named after its file."""
    files = sorted(
        (f for f in folder.iterdir() if f.is_file() and io.is_supported(f) and not f.name.startswith(".")),
        key=lambda f: natural_key(f.name),
    )
    cases, seen = [], {}
    for file in files:
        case_id = io.stem(file)
        if case_id in seen:
            raise SoftsegError(
                f"{file}: case id {case_id} is also {seen[case_id]}; keep one file per name"
            )
        seen[case_id] = file
        image, spacing, geometry = io.read_image(file)
        cases.append(Case(case_id, image, spacing, geometry, file))
    return Dataset(root, root.resolve().name, "images", (), tuple(cases))


def load_input(path: str | Path, layout: str = "auto", split: str | None = None) -> Dataset:
    """The cases to predict: a dataset folder (any layout ``load_dataset`` reads, labelled or
    not), a folder of images without labels (``images/`` or image files directly; layout
    "images"), or a single image file (one case named after the file).

    ``split`` keeps only the cases of that split ("Training", "Validation", "Testing"; QUBIQ
    layout). Raises SoftsegError for a missing path or an empty selection.
    """
    path = Path(path)
    if not path.exists():
        raise SoftsegError(f"{path}: no such file or folder; give an image file or a dataset folder")
    if path.is_file():
        if split is not None:
            raise SoftsegError(f"{path}: --split applies to a dataset folder, not a single file")
        image, spacing, geometry = io.read_image(path)
        case = Case(io.stem(path), image, spacing, geometry, path)
        return Dataset(path.parent, io.stem(path), "file", (), (case,))
    folder = _image_folder(path, layout)
    if folder is not None:
        if split is not None:
            raise SoftsegError(f"{path}: --split applies to the QUBIQ layout, not a folder of images")
        dataset = _read_images(folder, path)
        if not dataset.cases:
            raise SoftsegError(f"{folder}: no image files found; expected {io.SUPPORTED}")
        return dataset
    dataset = load_dataset(path, layout=layout, splits=None if split is None else (split,))
    if split is not None:
        dataset = dataset.select(split=split)
    if not dataset.cases:
        where = f" in split {split!r}" if split else ""
        raise SoftsegError(
            f"{path}: no images found{where}; check the folder, --layout and --split"
        )
    return dataset
