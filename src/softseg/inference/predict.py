"""Prediction: image files in -> probability, std and mask files out, in the source geometry.

One probability map per case and task, plus the optional side outputs::

    OUT/<case_id>/<task>.nii.gz            float32, the source affine and header
    OUT/<case_id>/<task>.png               16-bit grey, value round(p * 65535) (PNG input)
    OUT/<case_id>/<task>_std.<ext>         sqrt(p (1 - p)), with ``std=True``
    OUT/<case_id>/<task>_mask-0.50.<ext>   p >= 0.50: uint8 0/1 NIfTI or 8-bit 0/255 PNG
    OUT/predictions.json                   runs, input, thresholds, cases, version

With ``qubiq=True`` the QUBIQ submission layout ``OUT/<dataset>/<case_id>/<task>.nii.gz`` is
written instead (probability maps only), with ``OUT/predictions-<dataset>-<tasks>.json``
beside it; several calls (one run per task or dataset) may fill one submission folder.

Several runs (seeds) are averaged by :func:`softseg.inference.arrays.predict_images`, which also
normalises, pads to a multiple of 32 and crops back. Files are written atomically by
:mod:`softseg.data.io` on a background thread while the next batch is computed.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from softseg import __version__
from softseg.data import io
from softseg.files import write_json_atomic
from softseg.data.cases import Case, Dataset
from softseg.errors import SoftsegError
from softseg.inference.runs import load_models, resolve_runs

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.json"


def std_map(probability: np.ndarray) -> np.ndarray:
    """Pixel standard deviation of a Bernoulli with mean ``p``: ``sqrt(p (1 - p))`` in [0, 0.5].

    ``probability`` any shape, values in [0, 1]; returns float32 of the same shape.
    """
    p = np.clip(np.asarray(probability, dtype=np.float32), 0.0, 1.0)
    return np.sqrt(p * (1.0 - p))


def threshold_label(threshold: float) -> str:
    """The threshold as written in a mask's file name: two decimals when exact ("0.50")."""
    text = f"{threshold:.2f}"
    if float(text) != threshold:
        text = f"{threshold:.6f}".rstrip("0")
    return text


def check_thresholds(values: Sequence[float]) -> tuple[float, ...]:
    """Mask thresholds in (0, 1], sorted and without duplicates; SoftsegError otherwise."""
    bad = [v for v in values if not (isinstance(v, (int, float)) and 0.0 < v <= 1.0)]
    if bad:
        raise SoftsegError(
            f"mask thresholds must lie in (0, 1], got {', '.join(map(str, bad))}; "
            "give confidences such as 0.3 0.5 0.7"
        )
    return tuple(sorted({float(v) for v in values}))


def case_outputs(
    case: Case,
    probability: np.ndarray,
    tasks: Sequence[str],
    *,
    std: bool = False,
    thresholds: Mapping[str, Sequence[float]] | None = None,
    folder: str | None = None,
) -> list[tuple[Path, np.ndarray]]:
    """What to write for one case: ``(relative path, (*spatial) array)`` pairs.

    ``probability`` is ``(T, *spatial)`` float32 in [0, 1], tasks in ``tasks`` order, on the
    case's grid. ``thresholds[task]`` lists the mask thresholds of that task. Masks are bool
    (``p >= t``), which :func:`io.write_map` stores as binary masks. ``folder`` replaces
    ``case.case_id`` as the case's sub-folder (QUBIQ layout: ``<dataset>/<case_id>``).
    """
    if probability.shape != (len(tasks), *case.spatial_shape):
        raise SoftsegError(
            f"{case.case_id}: prediction shape {probability.shape} != "
            f"({len(tasks)} tasks, *{case.spatial_shape}); the model and the image disagree"
        )
    suffix = io.map_suffix(case.geometry)
    base = Path(folder if folder is not None else case.case_id)
    thresholds = thresholds or {}
    outputs: list[tuple[Path, np.ndarray]] = []
    for index, task in enumerate(tasks):
        prob = probability[index]
        outputs.append((base / f"{task}{suffix}", prob))
        if std:
            outputs.append((base / f"{task}_std{suffix}", std_map(prob)))
        for t in thresholds.get(task, ()):
            # compared at the map's own precision, like metrics.py and thresholds.py
            mask = prob >= np.asarray(t, dtype=prob.dtype)
            outputs.append((base / f"{task}_mask-{threshold_label(t)}{suffix}", mask))
    return outputs


# ----------------------------------------------------------------------------- inputs


def _image_folder(path: Path, layout: str) -> Path | None:
    """The folder of unlabelled images to read, or None when ``path`` is a labelled layout.

    ``layout="images"``: ``path/images/`` if present, else ``path``. ``"auto"``: ``path/images/``
    without ``raters/`` or ``agreement/`` beside it, or a folder holding image files directly.
    """
    from softseg.data.datasets import is_qubiq_dataset

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
    from softseg.data.cases import natural_key

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
    from softseg.data.datasets import load_dataset

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


def check_channels(cases: Sequence[Case], in_channels: int, run_dir: Path) -> None:
    """Every case must have the channel count the model was trained on; all problems at once."""
    wrong = [f"{c.case_id}: {c.channels} channels" for c in cases if c.channels != in_channels]
    if wrong:
        shown = "; ".join(wrong[:10]) + (" ..." if len(wrong) > 10 else "")
        raise SoftsegError(
            f"{len(wrong)} image(s) do not have the {in_channels} channel(s) the run {run_dir} "
            f"was trained on ({shown}); predict with a run trained on such images"
        )


# ----------------------------------------------------------------------------- predicting


def predict_cases(
    loaded_runs: Sequence, cases: Sequence[Case], batch_size: int = 4, progress: bool = True
) -> Iterator[tuple[Case, np.ndarray]]:
    """Yield ``(case, (T, *spatial) float32 probabilities)`` in case order, ``batch_size``
    images at a time, averaged over ``loaded_runs`` (see :func:`inference.predict_images`)."""
    from softseg.inference.arrays import predict_images

    if batch_size < 1:
        raise SoftsegError(f"--batch-size must be at least 1, got {batch_size}")
    with tqdm(total=len(cases), desc="predict", unit="image", disable=not progress) as bar:
        for start in range(0, len(cases), batch_size):
            batch = cases[start : start + batch_size]
            maps = predict_images(loaded_runs, [case.image for case in batch])
            for case, prob in zip(batch, maps):
                yield case, np.asarray(prob, dtype=np.float32)
            bar.update(len(batch))


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise SoftsegError(f"{out_dir}: exists and is not a folder; choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise SoftsegError(
            f"{out_dir}: folder is not empty; choose a new --out or pass --overwrite to "
            "replace the predictions in it"
        )


def mask_thresholds(
    tasks: Sequence[str], requested: Sequence[float], stored: Mapping | None
) -> dict[str, tuple[float, ...]]:
    """Per task: the requested mask thresholds plus the run's stored operating threshold."""
    requested = check_thresholds(requested)
    out: dict[str, tuple[float, ...]] = {}
    for task in tasks:
        extra = ()
        if stored is not None and task in stored.get("tasks", {}):
            extra = (float(stored["tasks"][task]["threshold"]),)
        out[task] = check_thresholds(requested + extra)
    return out


def predict(
    runs: Sequence[str | Path],
    input_path: str | Path,
    out_dir: str | Path,
    *,
    layout: str = "auto",
    split: str | None = None,
    std: bool = False,
    masks: Sequence[float] = (),
    use_run_threshold: bool = True,
    qubiq: bool = False,
    batch_size: int = 4,
    device: str | None = "auto",
    checkpoint: str = "best",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Predict every case of ``input_path`` with ``runs`` and write the files into ``out_dir``.

    See the module docstring for the layout. ``masks``: thresholds in (0, 1] for binary
    masks ``p >= t``; the operating threshold stored in the run(s) by ``softseg threshold`` is
    added unless ``use_run_threshold`` is False. ``qubiq``: the QUBIQ submission layout
    (NIfTI input, probability maps only). Refuses a non-empty ``out_dir`` (with ``qubiq``:
    any submission file it would replace) unless ``overwrite``. Returns the path of the
    summary JSON.
    """
    out_dir = Path(out_dir)
    masks = check_thresholds(masks)
    if qubiq and (std or masks):
        raise SoftsegError(
            "--qubiq writes a submission (probability maps only); drop --std/--masks, or "
            "predict again without --qubiq into another folder for those"
        )
    if not qubiq:
        _check_out_dir(out_dir, overwrite)
    run_set = resolve_runs(runs)
    dataset = load_input(input_path, layout=layout, split=split)
    if qubiq:
        not_nifti = [c.case_id for c in dataset.cases if c.geometry.format != "nifti"]
        if not_nifti:
            raise SoftsegError(
                f"--qubiq needs NIfTI images, found {len(not_nifti)} other(s) "
                f"({', '.join(not_nifti[:5])}); leave out --qubiq for PNG input"
            )
    loaded = load_models(run_set.run_dirs, device=device, checkpoint=checkpoint)
    tasks = loaded[0].tasks
    check_channels(dataset.cases, loaded[0].config.in_channels, loaded[0].run_dir)
    submission = submission_name(dataset) if qubiq else None
    if qubiq and not overwrite:
        # One submission folder collects several runs (one per task or dataset): refuse only
        # the files this call would replace, and before any prediction is made.
        taken = [
            out_dir / submission / case.case_id / f"{task}.nii.gz"
            for case in dataset.cases
            for task in tasks
            if (out_dir / submission / case.case_id / f"{task}.nii.gz").exists()
        ]
        if taken:
            raise SoftsegError(
                f"{taken[0]}: already exists ({len(taken)} of the submission files would be "
                "replaced); choose another --out or pass --overwrite"
            )
    stored = run_set.threshold if use_run_threshold and not qubiq else None
    per_task = mask_thresholds(tasks, masks, stored)

    written: list[str] = []
    # One writer thread: gzip/PNG encoding releases the GIL, so writing overlaps the next
    # batch's compute. At most two batches of results wait, which bounds the memory held.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="softseg-write") as writer:
        pending: list[Future] = []
        for case, prob in predict_cases(loaded, dataset.cases, batch_size, progress):
            folder = f"{submission}/{case.case_id}" if qubiq else None
            outputs = case_outputs(case, prob, tasks, std=std, thresholds=per_task, folder=folder)
            for relative, array in outputs:
                pending.append(
                    writer.submit(io.write_map, out_dir / relative, array, case.geometry,
                                  overwrite=overwrite)
                )
                written.append(relative.as_posix())
            while len(pending) > 2 * batch_size * len(outputs):
                pending.pop(0).result()
        for future in pending:
            future.result()

    summary = {
        "softseg_version": __version__,
        "runs": [str(r) for r in run_set.run_dirs],
        "checkpoint": checkpoint,
        "input": str(Path(input_path).resolve()),
        "dataset": dataset.name,
        "layout": dataset.layout,
        "split": split,
        "tasks": list(tasks),
        "cases": [case.case_id for case in dataset.cases],
        "format": sorted({case.geometry.format for case in dataset.cases}),
        "layout_written": "qubiq" if qubiq else "cases",
        "std": std,
        "mask_thresholds": {task: list(values) for task, values in per_task.items()},
        "run_threshold": None
        if stored is None
        else {
            "file": str(run_set.threshold_path),
            "tasks": {t: stored["tasks"][t]["threshold"] for t in stored["tasks"]},
        },
        "files": written,
    }
    if qubiq:
        # beside the submission folder, not in it; one per dataset and task set
        path = out_dir / f"predictions-{submission}-{'-'.join(tasks)}.json"
    else:
        path = out_dir / PREDICTIONS_FILE
    write_json_atomic(path, summary)
    return path


def submission_name(dataset: Dataset) -> str:
    """The dataset's folder name in a QUBIQ submission (``brain-growth``), also when the
    split folder itself (``brain-growth/Testing``) was given."""
    from softseg.data.cases import QUBIQ_SPLITS

    if dataset.name in QUBIQ_SPLITS:
        return Path(dataset.root).resolve().parent.name
    return dataset.name
