"""Training as in the paper: config in, run folder out.

``train`` trains one seed into one run folder (docs/architecture.md, "Run folder")::

    RUN/config.json      resolved TrainConfig (tasks, in_channels, precision filled in)
    RUN/split.json       data path, layout, train and validation case ids
    RUN/env.json         versions, device, processes, command line
    RUN/history.csv      epoch, train_loss, val_loss, val_qubiq, lr, seconds
    RUN/checkpoints/last.pt, best.pt   (atomic; last.pt also holds optimiser, step, RNG, history)

An existing run folder is refused unless ``resume`` (continue from last.pt to the same
result as an uninterrupted run) or ``overwrite`` (delete it first) is given. Under torchrun
every process calls ``train``; only rank 0 writes.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from softseg import __version__
from softseg.training import distributed as _distributed
from softseg.training.batches import prepare, select_cases, split_ids, through_plane_axis
from softseg.training.loop import (
    LoopState,
    lr_at,
    restore_rng_states,
    rng_states,
    smallest_share,
    steps_per_epoch,
    train_epoch,
    validate,
)
from softseg.model.losses import soft_cross_entropy
from softseg.model.runtime import resolve_device, resolve_precision, seeded_global_rng
from softseg.model.config import TrainConfig, load_config, save_config, to_dict, validate as validate_config
from softseg.data.cases import Dataset, check_channels
from softseg.errors import SoftsegError
from softseg.files import prepare_out_dir, write_text_atomic
from softseg.model.modes import mode_of, model_from_config
from softseg.model.checkpoints import load_checkpoint, save_checkpoint

__all__ = ["train", "split_ids", "soft_cross_entropy", "lr_at", "HISTORY_COLUMNS"]

log = logging.getLogger(__name__)
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_qubiq", "lr", "seconds")


def train(
    config: TrainConfig,
    dataset: Dataset,
    run_dir: str | Path,
    train_ids: Sequence[str],
    val_ids: Sequence[str],
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Train one model (one seed) on ``train_ids``, validating on ``val_ids``; returns ``run_dir``.

    ``config.tasks`` empty means all of ``dataset.tasks``; ``in_channels`` and ``precision``
    are resolved from the data and the device. The best checkpoint is chosen by
    ``config.best_metric`` on the validation cases (by training loss when there are none).

    The result depends only on the arguments: every random draw comes from generators
    seeded by ``config.seed``, and the caller's global RNG states (torch, NumPy, Python) are
    left as they were. Process-wide settings are the caller's choice (the command line
    calls :func:`softseg.model.runtime.keep_freed_memory`, which makes steps faster).
    """
    run_dir = Path(run_dir)
    dist = _distributed.from_environment()
    device = _distributed.device_for(dist, resolve_device(config.device))
    if resume and (run_dir / "checkpoints" / "last.pt").is_file():
        config = _resumed_config(config, run_dir)
    else:
        if resume:  # stopped before its first checkpoint: nothing to lose, start it again
            log.warning("%s: no checkpoints/last.pt yet; starting the run from the beginning", run_dir)
            overwrite = overwrite or _has_run_files(run_dir)
        resume = False
        config = _resolved(config, dataset, device)
    validate_config(config)
    _distributed.check_batch(dist, config.batch_size)
    train_cases = select_cases(dataset, list(train_ids), config.tasks, "training")
    val_cases = select_cases(dataset, list(val_ids), config.tasks, "validation")
    if len(train_cases) < max(1, dist.world):
        raise SoftsegError(
            f"{dataset.root}: {len(train_cases)} training case(s) for {dist.world} process(es); "
            f"need at least one per process; check the split / case ids"
        )
    mode_of(config).check_training_cases(config, train_cases)
    check_channels(train_cases + val_cases, config.in_channels,
                   reason=f"in_channels = {config.in_channels} of the configuration")
    problem = None
    if not resume and dist.is_main:
        try:
            _claim_run_dir(run_dir, overwrite)
        except SoftsegError as error:
            problem = str(error)
    # Every process must stop when rank 0 refuses the folder, or the others would wait forever.
    problem = _distributed.broadcast_object(problem, dist)
    if problem is not None:
        raise SoftsegError(problem)

    train_data = prepare(train_cases, config)
    val_data = prepare(val_cases, config, validation=True)
    state = _build_state(config, device, dist, len(train_data.images), resume)
    if resume:
        _restore(state, run_dir)
        log.info("%s: resuming after epoch %d of %d", run_dir, state.epoch, config.epochs)
    elif dist.is_main:
        save_config(config, run_dir / "config.json")
        _write_json(run_dir / "split.json", {
            "data": str(Path(dataset.root).resolve()), "layout": dataset.layout,
            "train": list(train_ids), "val": list(val_ids),
        })
        _write_json(run_dir / "env.json", _environment(device, dist))

    while state.epoch < config.epochs:
        start = time.perf_counter()
        train_loss = train_epoch(state, train_data, progress)
        state.epoch += 1
        row = {"epoch": state.epoch, "train_loss": train_loss, "val_loss": "", "val_qubiq": "",
               "lr": state.optimizer.param_groups[0]["lr"]}
        improved = False
        if dist.is_main:
            if val_data.images and (state.epoch % config.val_every == 0 or state.epoch == config.epochs):
                row["val_loss"], row["val_qubiq"] = validate(state, val_data)
                _report(f"epoch {state.epoch}/{config.epochs}: train loss {train_loss:.4f}, val loss "
                        f"{row['val_loss']:.4f}, val QUBIQ {row['val_qubiq']:.4f}", progress)
            improved = _update_best(state, row, bool(val_data.images))
        row["seconds"] = round(time.perf_counter() - start, 3)
        state.history.append(row)
        if dist.is_main:
            _save(state, run_dir, improved)
        _distributed.barrier(dist)
    return run_dir


def _report(line: str, progress: bool) -> None:
    """Validation results: a line under the progress bars, or a log record without them."""
    if progress:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
    else:
        log.info("%s", line)


def _resolved(config: TrainConfig, dataset: Dataset, device: torch.device) -> TrainConfig:
    if dataset.classes and config.tasks and tuple(config.tasks) != dataset.classes[1:]:
        raise SoftsegError(
            f"{dataset.root}: a multi-class dataset trains all its classes together (one softmax), "
            f"its tasks are {', '.join(dataset.classes[1:])}; found tasks {', '.join(config.tasks)} "
            "(from a preset or --tasks): leave them out"
        )
    tasks = tuple(config.tasks) or tuple(dataset.tasks)
    unknown = [t for t in tasks if t not in dataset.tasks]
    if unknown:
        raise SoftsegError(
            f"{dataset.root}: task(s) {', '.join(unknown)} not in this dataset (it has "
            f"{', '.join(dataset.tasks)}); choose another preset or set tasks"
        )
    channels = {c.channels for c in dataset.cases}
    in_channels = config.in_channels or (min(channels) if channels else 0)
    volumes = [c for c in dataset.cases if c.image.ndim == 4]
    mode = mode_of(config)
    mode.check_dataset(dataset.cases, dataset.root)
    axes = {len(c.spacing) for c in dataset.cases}
    if config.spacing and axes != {len(config.spacing)}:
        raise SoftsegError(
            f"{dataset.root}: spacing {config.spacing} has {len(config.spacing)} value(s), but the "
            f"cases have {' and '.join(map(str, sorted(axes)))} spatial axes; give one spacing (mm) per axis"
        )
    slice_axis = config.slice_axis
    if volumes and slice_axis is None:
        slice_axis = through_plane_axis(volumes)
        log.info("%s: volumes are %s spatial axis %d (largest spacing)", dataset.root, mode.volume_axis, slice_axis)
    config = config.replace(
        tasks=tasks, classes=tuple(dataset.classes), in_channels=in_channels,
        precision=resolve_precision(config.precision, device),
        slice_axis=slice_axis if volumes else config.slice_axis,
    )
    return mode_of(config).plan(config, volumes, dataset.root)


# filled in from the data and the device when a run starts: a resumed run keeps its own
_RESOLVED = ("tasks", "classes", "in_channels", "precision", "slice_axis", "patch_size", "voxel_spacing")


def _resumed_config(given: TrainConfig, run_dir: Path) -> TrainConfig:
    saved = load_config(run_dir / "config.json")
    differs = [k for k, v in to_dict(given).items()
               if k not in _RESOLVED and to_dict(saved)[k] != v]
    if differs:
        log.warning("%s: resuming with the run's saved config; ignoring new values of %s",
                    run_dir, ", ".join(differs))
    return saved


def _has_run_files(run_dir: Path) -> bool:
    return (run_dir / "config.json").exists() or (run_dir / "checkpoints").exists()


def _claim_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Create ``run_dir``; an existing non-empty one only with ``overwrite`` (and only if it
    is a softseg run folder: never delete a folder this code did not write)."""
    # The one folder guard refuses a non-empty folder; unlike other outputs, --overwrite
    # then replaces the whole run (stale checkpoints must not survive into the new one).
    prepare_out_dir(run_dir, overwrite=overwrite, resume=False, what="training", create=False)
    if run_dir.exists() and any(run_dir.iterdir()):
        if not _has_run_files(run_dir):
            raise SoftsegError(
                f"{run_dir}: not a softseg run folder (no config.json or checkpoints/); refusing "
                f"to delete it even with --overwrite; choose another --out"
            )
        log.warning("%s: --overwrite: deleting the earlier run", run_dir)
        shutil.rmtree(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)


def _build_state(config: TrainConfig, device, dist, n_train: int, resume: bool) -> LoopState:
    # The initial weights come from the run's seed, not from (or into) the caller's RNG.
    # On resume the weights come from last.pt: no need to fetch encoder weights again.
    with seeded_global_rng(config.seed):
        model = model_from_config(config, encoder_weights="none" if resume else config.encoder_weights)
    model = model.to(device).to(memory_format=mode_of(config).memory_format(config.precision, device))
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay
    )
    scaler = torch.amp.GradScaler("cuda") if (config.precision == "amp" and device.type == "cuda") else None
    return LoopState(
        config=config, model=model, wrapped=_distributed.wrap(model, dist, device),
        optimizer=optimizer, scaler=scaler, device=device, dist=dist,
        sampler=torch.Generator().manual_seed(config.seed),
        steps_per_epoch=steps_per_epoch(n_train, config.batch_size, dist.world, smallest_share(config)),
    )


def _update_best(state: LoopState, row: dict, has_val: bool) -> bool:
    if has_val and row["val_loss"] == "":
        return False
    if not has_val:
        value = -row["train_loss"]
    elif state.config.best_metric == "qubiq":
        value = row["val_qubiq"]
    else:
        value = -row["val_loss"]
    if state.best is None or value > state.best:
        state.best = value
        return True
    return False


def _save(state: LoopState, run_dir: Path, improved: bool) -> None:
    weights = {k: v.detach().cpu() for k, v in state.model.state_dict().items()}
    common = {"model": weights, "config": to_dict(state.config), "epoch": state.epoch}
    save_checkpoint({
        **common, "optimizer": state.optimizer.state_dict(), "step": state.step,
        "best": state.best, "history": state.history, "rng": rng_states(state),
        "scaler": state.scaler.state_dict() if state.scaler is not None else None,
    }, run_dir / "checkpoints" / "last.pt")
    if improved:
        save_checkpoint(common, run_dir / "checkpoints" / "best.pt")
    _write_history(run_dir / "history.csv", state.history)


def _restore(state: LoopState, run_dir: Path) -> None:
    saved = load_checkpoint(run_dir / "checkpoints" / "last.pt", "cpu")
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    if state.scaler is not None and saved.get("scaler"):
        state.scaler.load_state_dict(saved["scaler"])
    state.epoch, state.step, state.best = saved["epoch"], saved["step"], saved["best"]
    state.history = list(saved["history"])
    restore_rng_states(state, saved["rng"])


def _write_history(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def _write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def _environment(device: torch.device, dist) -> dict:
    import numpy
    import segmentation_models_pytorch as smp

    return {
        "softseg": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "segmentation_models_pytorch": smp.__version__, "numpy": numpy.__version__,
        "platform": platform.platform(), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch_threads": torch.get_num_threads(), "processes": dist.world,
        "command": sys.argv,
    }
