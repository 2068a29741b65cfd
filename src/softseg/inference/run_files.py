"""The files commands store in a run folder beside training's: ``threshold.json``
(``softseg threshold``, also in a folder of seeds) and ``temperature.json`` (``softseg
calibrate``): their formats, checks, and atomic writes. Read through
:mod:`softseg.inference.runs` when a run is loaded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from softseg.errors import SoftsegError
from softseg.files import write_json_atomic

THRESHOLD_FILE = "threshold.json"
TEMPERATURE_FILE = "temperature.json"


def _read_json(path: Path, command: str) -> Any:
    """The JSON a ``softseg <command>`` stored in a run; SoftsegError saying how to redo it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SoftsegError(
            f"{path}: cannot read it as JSON ({error}); delete it or rerun `softseg {command}`"
        ) from error


def read_threshold_file(directory: Path) -> dict | None:
    """The ``threshold.json`` of a run (or of a folder of seeds), or None when there is none.

    Raises :class:`SoftsegError` when the file exists but is not a valid threshold file.
    """
    path = Path(directory) / THRESHOLD_FILE
    if not path.is_file():
        return None
    payload = _read_json(path, "threshold")
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


# ----------------------------------------------------------------------------- temperature.json


def checkpoint_key(run_dir: Path, checkpoint: Path) -> str:
    """How ``temperature.json`` names a checkpoint: relative to the run folder when inside it
    (``checkpoints/last.pt``; a moved run keeps its temperatures), else the absolute path."""
    run_dir, checkpoint = Path(run_dir).resolve(), Path(checkpoint).resolve()
    if checkpoint.is_relative_to(run_dir):
        return checkpoint.relative_to(run_dir).as_posix()
    return str(checkpoint)


def read_temperature_file(run_dir: str | Path) -> dict | None:
    """The ``temperature.json`` of a single run, or None when there is none.

    Raises SoftsegError when the file exists but is not a valid temperature file:
    ``{"checkpoint_file": str, "checkpoint_epoch": int | null, "tasks": {task: {"temperature":
    finite T > 0, ...}}, ...}`` (see :func:`softseg.inference.calibration.calibrate`).
    """
    path = Path(run_dir) / TEMPERATURE_FILE
    if not path.is_file():
        return None
    payload = _read_json(path, "calibrate")
    tasks = payload.get("tasks") if isinstance(payload, dict) else None
    valid = isinstance(tasks, dict) and bool(tasks) and isinstance(payload.get("checkpoint_file"), str)
    valid = valid and all(
        isinstance(entry, dict)
        and isinstance(entry.get("temperature"), (int, float))
        and math.isfinite(entry["temperature"])
        and entry["temperature"] > 0
        for entry in tasks.values()
    )
    if not valid:
        raise SoftsegError(
            f"{path}: expected {{'checkpoint_file': ..., 'tasks': {{task: {{'temperature': T > 0}}}}}}, "
            f"found {str(payload)[:200]}; delete it or rerun `softseg calibrate`"
        )
    return payload


def stored_temperatures(
    run_dir: Path, tasks: Sequence[str], checkpoint: Path, epoch: int | None
) -> tuple[float, ...] | None:
    """The temperatures of ``run_dir/temperature.json`` for ``tasks`` (in that order), or None
    when the run has no such file.

    Raises SoftsegError when the file was fitted for another checkpoint than ``checkpoint``
    (another file, or the same file at another epoch: training went on; the run's best.pt
    and last.pt of one recorded epoch are the same weights) or lacks a task.
    """
    payload = read_temperature_file(run_dir)
    if payload is None:
        return None
    path = Path(run_dir) / TEMPERATURE_FILE
    fitted = (payload["checkpoint_file"], payload.get("checkpoint_epoch"))
    used = (checkpoint_key(run_dir, checkpoint), epoch)
    # best.pt and last.pt of one epoch hold the same weights (training saves both from one state)
    same_epoch = {fitted[0], used[0]} <= {"checkpoints/best.pt", "checkpoints/last.pt"} and (
        fitted[1] is not None and fitted[1] == used[1])
    if fitted != used and not same_epoch:
        raise SoftsegError(
            f"{path}: the temperatures were fitted for {_described(*fitted)}, not for the "
            f"checkpoint used now, {_described(*used)}; recalibrate for it (softseg calibrate "
            f"{run_dir} DATA --checkpoint {_checkpoint_argument(used[0])} --overwrite) or predict "
            "without temperatures (--temperature off)"
        )
    missing = [task for task in tasks if task not in payload["tasks"]]
    if missing:
        raise SoftsegError(
            f"{path}: no temperature for task(s) {', '.join(missing)} of the run; rerun "
            "`softseg calibrate ... --overwrite` or pass --temperature off"
        )
    return tuple(float(payload["tasks"][task]["temperature"]) for task in tasks)


def _described(key: str, epoch: Any) -> str:
    return key + ("" if epoch is None else f" (epoch {epoch})")


def _checkpoint_argument(key: str) -> str:
    """``checkpoints/last.pt`` -> ``last``: what to pass as --checkpoint for this key."""
    for name in ("best", "last"):
        if key == f"checkpoints/{name}.pt":
            return name
    return key


def check_can_store_temperature(run_dir: str | Path, overwrite: bool) -> None:
    """Raise SoftsegError when ``run_dir/temperature.json`` exists and ``overwrite`` is False."""
    path = Path(run_dir) / TEMPERATURE_FILE
    if path.exists() and not overwrite:
        raise SoftsegError(f"{path} already holds fitted temperatures; pass --overwrite to replace it")


def write_temperature_file(run_dir: str | Path, payload: dict, overwrite: bool = False) -> Path:
    """Write ``run_dir/temperature.json`` atomically; refuse to replace one unless ``overwrite``."""
    check_can_store_temperature(run_dir, overwrite)
    path = Path(run_dir) / TEMPERATURE_FILE
    write_json_atomic(path, payload)
    return path
