"""Run folders: finding them, loading their model, config and stored operating threshold.

The one place that reads a run folder written by ``softseg train`` (see docs/architecture.md,
"Run folder"): ``config.json``, ``checkpoints/{best,last}.pt`` and ``threshold.json``.
Prediction, thresholds, export and the experiments load runs only through this module.
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
from softseg.files import write_json_atomic
from softseg.inference.batchnorm_fold import fold_batchnorm
from softseg.training.config import TrainConfig, from_dict, load_config
from softseg.training.model import load_checkpoint, model_from_config
from softseg.training.runtime import memory_format, resolve_device, resolve_precision

log = logging.getLogger(__name__)

THRESHOLD_FILE = "threshold.json"


@dataclass(frozen=True)
class LoadedRun:
    """A trained model ready for inference: eval mode, fp32 weights, on ``device``, its
    BatchNorms folded into the convolutions before them (see :mod:`softseg.inference.batchnorm_fold`)."""

    run_dir: Path
    model: nn.Module
    config: TrainConfig
    tasks: tuple[str, ...]
    checkpoint: Path
    device: torch.device


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
    run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu"
) -> LoadedRun:
    """Load one run folder's model from ``checkpoints/<checkpoint>.pt`` ("best" or "last",
    or a path to a .pt file) in eval mode, its BatchNorms folded into the convolutions: the
    same function, about 9% faster, but a ``state_dict`` that differs from the checkpoint's.

    The checkpoint is read weights-only (see :func:`softseg.training.model.load_checkpoint`).
    Repeated forward passes run faster after
    :func:`softseg.training.runtime.keep_freed_memory` (process-wide, so the caller's choice).
    """
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
    model.to(device).to(memory_format=memory_format(precision, device)).eval()
    return LoadedRun(run_dir, model, config, tuple(config.tasks), ckpt_path, device)


def check_runs_compatible(runs: Sequence[LoadedRun]) -> None:
    """Raise SoftsegError unless all runs share tasks and input channels (so that their
    probabilities can be averaged); also when no run is given."""
    if not runs:
        raise SoftsegError("no trained run given; pass at least one run folder")
    first = runs[0]
    for run in runs[1:]:
        if run.tasks != first.tasks or run.config.in_channels != first.config.in_channels:
            raise SoftsegError(
                f"{run.run_dir}: tasks {run.tasks} / {run.config.in_channels} channels differ from "
                f"{first.run_dir}: {first.tasks} / {first.config.in_channels} channels; only runs "
                f"trained on the same tasks and image channels can be averaged"
            )


def load_models(run_dirs: Sequence[Path], device: str | None = "auto", checkpoint: str = "best") -> list:
    """:func:`load_run` for every run; all must share tasks and input channels."""
    device = resolve_device(device or "auto")
    loaded = [load_run(run, checkpoint=checkpoint, device=device) for run in run_dirs]
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


def read_threshold_file(directory: Path) -> dict | None:
    """The ``threshold.json`` of a run (or of a folder of seeds), or None when there is none.

    Raises :class:`SoftsegError` when the file exists but is not a valid threshold file.
    """
    path = Path(directory) / THRESHOLD_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SoftsegError(
            f"{path}: cannot read it as JSON ({error}); delete it or rerun `softseg threshold`"
        ) from error
    tasks = payload.get("tasks") if isinstance(payload, dict) else None
    if not isinstance(tasks, dict) or not all(
        isinstance(entry, dict)
        and isinstance(entry.get("threshold"), (int, float))
        and 0.0 < entry["threshold"] <= 1.0
        for entry in tasks.values()
    ):
        raise SoftsegError(
            f"{path}: expected {{'tasks': {{task: {{'threshold': value in (0, 1]}}}}}}, found "
            f"{str(payload)[:200]}; delete it or rerun `softseg threshold`"
        )
    return payload


def write_threshold_file(directory: Path, payload: dict, overwrite: bool = False) -> Path:
    """Write ``directory/threshold.json`` atomically; refuse to replace one unless ``overwrite``.

    ``payload`` holds at least ``{"tasks": {task: {"threshold": t, ...}}}`` (see
    :func:`softseg.inference.thresholds.choose_threshold` for the full form).
    """
    directory = Path(directory)
    path = directory / THRESHOLD_FILE
    check_can_store(directory, overwrite)
    write_json_atomic(path, payload)
    return path


def check_can_store(directory: Path, overwrite: bool) -> None:
    """Raise SoftsegError when ``directory/threshold.json`` exists and ``overwrite`` is False."""
    path = Path(directory) / THRESHOLD_FILE
    if path.exists() and not overwrite:
        try:
            previous = read_threshold_file(directory) or {}
        except SoftsegError:
            previous = {}
        chosen = ", ".join(
            f"{task} {entry.get('threshold')}" for task, entry in previous.get("tasks", {}).items()
        )
        raise SoftsegError(
            f"{path} already holds an operating threshold ({chosen or 'unreadable'}); "
            "pass --overwrite to replace it"
        )
