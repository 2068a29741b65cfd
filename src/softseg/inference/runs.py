"""Run folders: finding them and loading their model, config, split, stored operating
threshold and fitted temperatures.

The one place that reads a run folder written by ``softseg train`` (see docs/architecture.md,
"Run folder"): ``config.json``, ``split.json``, ``checkpoints/{best,last}.pt``, and through
:mod:`softseg.inference.run_files` ``threshold.json`` (``softseg threshold``) and
``temperature.json`` (``softseg calibrate``). Prediction, calibration, thresholds, export and
the experiments load runs only through this module.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from softseg.data.cases import natural_key
from softseg.errors import SoftsegError
from softseg.inference import DEFAULT_CHECKPOINT, TEMPERATURE_MODES
from softseg.inference.batchnorm_fold import fold_batchnorm
from softseg.inference.run_files import THRESHOLD_FILE, read_threshold_file, stored_temperatures
from softseg.model.config import TrainConfig, from_dict, load_config
from softseg.model.heads import head_of
from softseg.model.modes import mode_of, model_from_config
from softseg.model.checkpoints import load_checkpoint
from softseg.model.runtime import resolve_device, resolve_precision

log = logging.getLogger(__name__)

SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class LoadedRun:
    """A trained model ready for inference: eval mode, fp32 weights, on ``device``, its
    BatchNorms folded into the convolutions before them (see :mod:`softseg.inference.batchnorm_fold`).

    ``temperature``: one T > 0 per task (``tasks`` order) that prediction divides the logits
    by, from the run's ``temperature.json``; None for none. ``epoch``: the checkpoint's
    epoch where it records one.
    """

    run_dir: Path
    model: nn.Module
    config: TrainConfig
    tasks: tuple[str, ...]
    checkpoint: Path
    device: torch.device
    temperature: tuple[float, ...] | None = None
    epoch: int | None = None


@dataclass(frozen=True)
class RunSet:
    """The runs behind one prediction and the operating thresholds stored for them.

    ``run_dirs``: every single-seed run folder (expanded with :func:`find_runs`).
    ``threshold``: the ``threshold.json`` payload that applies to exactly these runs, or
    None; ``threshold_path`` where it was read.
    """

    run_dirs: tuple[Path, ...]
    threshold: dict | None
    threshold_path: Path | None


def find_runs(path: str | Path) -> list[Path]:
    """The run folders under ``path``: ``[path]`` for a single run, else its ``seed*/`` runs."""
    path = Path(path)
    if (path / "config.json").is_file():
        return [path]
    if path.is_dir():
        runs = [p for p in path.iterdir() if p.is_dir() and (p / "config.json").is_file()]
        if runs:
            return sorted(runs, key=lambda run: natural_key(run.name))
    raise SoftsegError(
        f"{path}: no softseg run found; expected RUN/config.json or RUN/seedN/config.json "
        f"(the folder given to 'softseg train --out')"
    )


def load_run(
    run_dir: str | Path,
    checkpoint: str = DEFAULT_CHECKPOINT,
    device: str | torch.device = "cpu",
    temperature: str = "auto",
) -> LoadedRun:
    """Load one run folder's model from ``checkpoints/<checkpoint>.pt`` ("last", the default,
    or "best", or a path to a .pt file) in eval mode, its BatchNorms folded into the
    convolutions: the same function, about 9% faster, but a ``state_dict`` that differs from
    the checkpoint's.

    ``temperature``: "auto" attaches the temperatures of the run's ``temperature.json`` when
    there is one (SoftsegError when it was fitted for another checkpoint, see
    :func:`stored_temperatures`); "off" attaches none.

    The checkpoint is read weights-only (see :func:`softseg.model.network.load_checkpoint`).
    Repeated forward passes run faster after
    :func:`softseg.model.runtime.keep_freed_memory` (process-wide, so the caller's choice).
    """
    if temperature not in TEMPERATURE_MODES:
        raise SoftsegError(
            f"temperature {temperature!r}: expected one of {', '.join(TEMPERATURE_MODES)}"
        )
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.json")
    ckpt_path = Path(checkpoint) if checkpoint not in ("best", "last") else run_dir / "checkpoints" / f"{checkpoint}.pt"
    if not ckpt_path.is_file():
        others = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.pt"))
        raise SoftsegError(
            f"{ckpt_path}: checkpoint not found; available: {others or 'none'} "
            f"(is the run still training, or was it stopped before its first epoch?)"
        )
    device = torch.device(device)
    state = load_checkpoint(ckpt_path, "cpu")
    if "config" in state:
        config = from_dict(state["config"], str(ckpt_path))
    model = model_from_config(config, encoder_weights="none")
    model.load_state_dict(state["model"])
    fold_batchnorm(model)
    # The memory format training used: channels_last makes CPU inference ~1.3x faster.
    precision = resolve_precision(config.precision, device)
    model.to(device).to(memory_format=mode_of(config).memory_format(precision, device)).eval()
    epoch = state.get("epoch")
    epoch = int(epoch) if isinstance(epoch, int) else None
    tasks = tuple(config.tasks)
    temperatures = stored_temperatures(run_dir, tasks, ckpt_path, epoch) if temperature == "auto" else None
    return LoadedRun(run_dir, model, config, tasks, ckpt_path, device, temperatures, epoch)


def check_runs_compatible(runs: Sequence[LoadedRun]) -> None:
    """Raise SoftsegError unless all runs share tasks, input channels, dims and slice axis
    (so that their probabilities can be averaged the same way); also when no run is given."""
    if not runs:
        raise SoftsegError("no trained run given; pass at least one run folder")
    first = runs[0]
    for run in runs[1:]:
        outputs, first_outputs = head_of(run.config).outputs(run.config), head_of(first.config).outputs(first.config)
        if outputs != first_outputs or run.config.in_channels != first.config.in_channels:
            raise SoftsegError(
                f"{run.run_dir}: outputs {outputs} / {run.config.in_channels} channels differ "
                f"from {first.run_dir}: {first_outputs} / {first.config.in_channels} channels; "
                f"only runs trained on the same tasks (or classes) and image channels can be averaged"
            )
        if head_of(run.config).name != head_of(first.config).name:
            raise SoftsegError(
                f"{run.run_dir} and {first.run_dir}: heads {head_of(run.config).name} and "
                f"{head_of(first.config).name} (sigmoid: binary, softmax: multi-class, ssn: sampled "
                "logits); only runs with the same head can be averaged"
            )
        if (run.config.dims, run.config.slice_axis, run.config.spacing) != (
                first.config.dims, first.config.slice_axis, first.config.spacing):
            raise SoftsegError(
                f"{run.run_dir}: dims {run.config.dims}, slice axis {run.config.slice_axis}, spacing "
                f"{run.config.spacing} differ from {first.run_dir}: dims {first.config.dims}, slice "
                f"axis {first.config.slice_axis}, spacing {first.config.spacing}; "
                f"only runs that see volumes the same way are averaged here"
            )


def load_models(
    run_dirs: Sequence[Path],
    device: str | None = "auto",
    checkpoint: str = DEFAULT_CHECKPOINT,
    temperature: str = "auto",
) -> list:
    """:func:`load_run` for every run; all must share tasks and input channels."""
    device = resolve_device(device or "auto")
    loaded = [load_run(run, checkpoint=checkpoint, device=device, temperature=temperature)
              for run in run_dirs]
    check_runs_compatible(loaded)
    return loaded


def resolve_runs(run_paths: Sequence[str | Path]) -> RunSet:
    """Expand run arguments (run folders or folders of seeds) and find their stored threshold.

    A threshold is stored by ``softseg threshold`` in ``threshold.json`` of the folder it was
    given (a run, or a folder of seeds). It applies when exactly one RUN argument is given and
    the file lists exactly the runs being used (``run_names``, relative to that folder, so a
    moved run keeps its threshold; else absolute ``runs``); otherwise it is ignored with a
    warning.
    """
    if not run_paths:
        raise SoftsegError("no run given; pass the folder written by 'softseg train --out'")
    run_dirs: list[Path] = []
    for given in run_paths:
        for run in find_runs(given):
            resolved = run.resolve()
            if resolved not in run_dirs:
                run_dirs.append(resolved)
    threshold, threshold_path = None, None
    for given in run_paths:
        payload = read_threshold_file(Path(given))
        if payload is None:
            continue
        where = Path(given) / THRESHOLD_FILE
        if "run_names" in payload:
            # relative to the folder holding threshold.json: survives moving the runs
            stored = sorted(str((Path(given) / r).resolve()) for r in payload["run_names"])
        else:
            stored = sorted(str(Path(r).resolve()) for r in payload.get("runs", []))
        if len(run_paths) == 1 and stored == sorted(map(str, run_dirs)):
            threshold, threshold_path = payload, where
        else:
            log.warning(
                "%s was chosen for the runs %s, not for the %d runs given now; not applied",
                where, stored, len(run_dirs),
            )
    return RunSet(tuple(run_dirs), threshold, threshold_path)


# ----------------------------------------------------------------------------- split.json


def validation_ids(run_dir: str | Path, way_out: str = "choose the cases explicitly") -> list[str]:
    """The validation case ids that training recorded in ``run_dir/split.json`` (maybe empty).

    Raises SoftsegError, ending with ``way_out``, when the file is missing or holds no list
    of ids under ``val``.
    """
    return _split_ids(run_dir, "val", "validation", way_out)


def training_ids(run_dir: str | Path, way_out: str = "choose the cases explicitly") -> list[str]:
    """The training case ids recorded in ``run_dir/split.json``; SoftsegError as
    :func:`validation_ids`."""
    return _split_ids(run_dir, "train", "training", way_out)


def _split_ids(run_dir: str | Path, key: str, what: str, way_out: str) -> list[str]:
    path = Path(run_dir) / SPLIT_FILE
    try:
        ids = json.loads(path.read_text())[key]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SoftsegError(f"{path}: cannot read the {what} case ids ({error}); {way_out}") from error
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise SoftsegError(f"{path}: '{key}' must be a list of case ids, found {str(ids)[:100]}; {way_out}")
    return list(ids)


def warn_best_on_validation(runs: Sequence[LoadedRun], case_ids: Sequence[str], doing: str) -> int:
    """Log a warning when a run uses its ``best`` checkpoint on cases among its own validation
    ids: "best" was chosen on those cases, so what is measured on them is optimistic.

    Returns how many of ``case_ids`` were validation cases of some such run (0: no warning).
    Runs without a readable ``split.json`` are skipped.
    """
    given = set(case_ids)
    seen: set[str] = set()
    for run in runs:
        if run.checkpoint.resolve() != (run.run_dir / "checkpoints" / "best.pt").resolve():
            continue
        try:
            overlap = given.intersection(validation_ids(run.run_dir))
        except SoftsegError:
            continue
        if overlap:
            seen |= overlap
            log.warning(
                "%s: %s %d of %d case(s) with the 'best' checkpoint, which was chosen on those "
                "validation cases (split.json), so results on them are optimistic; use "
                "--checkpoint last (the default) for unbiased numbers",
                run.run_dir, doing, len(overlap), len(given),
            )
    return len(seen)


# ----------------------------------------------------------------------------- temperature.json


def applied_temperatures(runs: Sequence[LoadedRun]) -> dict[str, dict[str, float]] | None:
    """What predictions record: ``{run folder: {task: T}}`` for the runs with temperatures,
    None when no run has any."""
    applied = {str(run.run_dir.resolve()): dict(zip(run.tasks, run.temperature))
               for run in runs if run.temperature is not None}
    return applied or None
