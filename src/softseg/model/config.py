"""Training configuration: one frozen dataclass, the QUBIQ task presets, file + CLI overrides.

Settings are resolved in this order, later ones winning: the dataclass defaults (the paper's
procedure, SPEC.md "The method"), a preset chosen by name, a YAML config file, and the
command line. :func:`validate` is the one place that checks a configuration; every problem
is reported at once. The resolved configuration is written to ``RUN/config.json`` with
:func:`to_dict` and read back with :func:`from_dict`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from softseg.errors import SoftsegError
from softseg.files import write_text_atomic

log = logging.getLogger(__name__)

LABEL_MODES = ("soft", "majority", "random_rater", "staple")
LOSSES = ("ce", "dml", "ce+dml")
PRECISIONS = ("auto", "fp32", "bf16", "amp")
BEST_METRICS = ("qubiq", "loss")
NORMALIZATIONS = ("zscore",)
DIMS = ("2d", "3d")
HEAD_KINDS = ("deterministic", "ssn")

# Defaults of the 3D mode where they differ from the paper's 2D procedure, applied under a
# preset, a config file and the command line. batch_size 2: nnU-Net's 3D batch (the growing
# batch makes it 8 patches a step). lr 1e-3: Adam's usual rate for a 3D U-Net with instance
# norm; the paper's 1e-2 is for its 2D network with batch norm.
DIMS_DEFAULTS: dict[str, dict[str, Any]] = {"2d": {}, "3d": {"batch_size": 2, "lr": 1e-3, "lr_min": 1e-5}}

# Defaults of a head where they differ, applied like DIMS_DEFAULTS (under a preset, a config
# file and the command line). The SSN learns the raters' spread from one rater's mask drawn per
# image per step, and its loss is the Monte Carlo likelihood of the cross-entropy (see
# softseg.model.ssn); validate() refuses other choices with it.
HEAD_DEFAULTS: dict[str, dict[str, Any]] = {"deterministic": {}, "ssn": {"label_mode": "random_rater", "loss": "ce"}}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs, and everything prediction needs to use its model.

    Spatial sizes are in pixels of the (possibly resized) training grid. ``tasks`` and
    ``in_channels`` are empty/0 until :func:`softseg.training.train.train` fills them in from the
    data; a preset may fix ``tasks`` to train one QUBIQ task only. ``resize`` (pixels) resizes
    every image and label to ``resize x resize`` before cropping; predictions are resized back
    to the source grid. ``precision`` "auto" becomes "bf16" on a CPU with bf16 support, "amp"
    on a GPU and "fp32" otherwise; the resolved value is what ``config.json`` records.
    Normalisation "zscore" is per image (per volume for volumes) and per channel (mean 0,
    std 1), in training and in inference alike.

    ``dims`` "2d" trains the paper's 2D network: on 2D images, or on volumes as 2D slices
    along ``slice_axis``. "3d" trains a 3D U-Net (MONAI DynUNet, see
    :mod:`softseg.model.network3d`) on random ``patch_size`` patches of volumes; the
    network is planned from ``patch_size`` and ``voxel_spacing`` (mm; filled in at training
    from the training volumes' median spacing, and planned there too when ``patch_size`` is
    empty), with ``base_filters`` channels at full resolution. Both modes rotate volumes about
    ``slice_axis``, the through-plane axis.

    ``head`` "deterministic" predicts one logit per output channel (a sigmoid per task, or a
    softmax over ``classes``); "ssn" is a Stochastic Segmentation Network (Monteiro et al. 2020,
    :mod:`softseg.model.ssn`): the logits of an image are one low-rank Gaussian, of rank
    ``ssn_rank``, trained on ``ssn_samples`` Monte Carlo samples per image and step; its
    probability map is the mean over ``ssn_eval_samples`` seeded samples.
    """

    # data
    tasks: tuple[str, ...] = ()
    # multi-class data: every class in value order, background first (filled in at training
    # from the dataset's labels); the model then has one softmax output per class and
    # ``tasks`` are the foreground classes. () for binary data: one sigmoid output per task
    classes: tuple[str, ...] = ()
    in_channels: int = 0
    label_mode: str = "soft"
    # soft cross-entropy + the Dice semimetric loss (softseg.model.losses): on BU-BIL's 5
    # folds it beat the paper's CE alone and majority vote (README, "What to expect on real
    # data"); the QUBIQ presets and `reproduce` keep the paper's "ce"
    loss: str = "ce+dml"
    dml_weight: float = 1.0  # weight of the Dice semimetric term in loss "ce+dml"
    resize: int | None = None
    # target voxel spacing (mm, one value per spatial axis): images and soft labels are
    # resampled linearly to it before training, predictions back onto the source grid; () none
    spacing: tuple[float, ...] = ()
    # volumes: the through-plane spatial axis (0-2), the one 2D mode cuts them along into
    # slices and 3D mode rotates about; None for 2D data, and for volumes until training
    # resolves it (the axis of largest voxel spacing)
    slice_axis: int | None = None
    dims: str = "2d"
    # 3D mode: the training patch in voxels (X, Y, Z), multiples of the network's divisor per
    # axis; () until training plans it from the data
    patch_size: tuple[int, ...] = ()
    voxel_spacing: tuple[float, ...] = ()  # 3D mode: the spacing (mm) the network was planned for
    base_filters: int = 32  # 3D mode: channels at full resolution (nnU-Net: 32)
    # output head (softseg.model.heads): "deterministic" or "ssn"; the SSN's covariance rank,
    # its Monte Carlo samples per training image and step, and per predicted image
    head: str = "deterministic"
    ssn_rank: int = 10
    ssn_samples: int = 20
    ssn_eval_samples: int = 100
    normalization: str = "zscore"
    val_fraction: float = 0.2
    # model
    encoder: str = "efficientnet-b0"
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    encoder_weights: str = "imagenet"
    bn_momentum: float = 0.1
    # procedure (SPEC.md, "The method")
    epochs: int = 150
    batch_size: int = 8
    aug_copies: int = 3
    crop_size: int = 256
    lr: float = 1e-2
    lr_min: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    translate: float = 0.1
    rotate: float = 15.0
    zoom: float = 0.1
    hflip: float = 0.5
    vflip: float = 0.5
    # running
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    val_every: int = 1
    best_metric: str = "qubiq"
    preset: str | None = None

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# The seven QUBIQ 2021 2D tasks (SPEC.md table): crop size, epochs, vertical flip; then the two 3D
# tasks. Each task has
# one name everywhere (train --preset, reproduce --tasks, folder names): <dataset>-taskNN.
PRESETS: dict[str, dict[str, Any]] = {
    "brain-growth-task01": {"tasks": ("task01",), "crop_size": 256},
    "brain-tumor-task01": {"tasks": ("task01",), "crop_size": 224},
    "brain-tumor-task02": {"tasks": ("task02",), "crop_size": 224},
    "brain-tumor-task03": {"tasks": ("task03",), "crop_size": 224, "epochs": 180},
    "kidney-task01": {"tasks": ("task01",), "crop_size": 320, "vflip": 0.0},
    "prostate-task01": {"tasks": ("task01",), "crop_size": 480},
    "prostate-task02": {"tasks": ("task02",), "crop_size": 480},
    # QUBIQ 2021's 3D CT tasks (2 raters), which the paper did not train: the 3D mode with its
    # defaults (DIMS_DEFAULTS, the patch planned from the data; docs/training.md says where
    # each setting comes from), the paper's epochs and augmentation
    "pancreas-task01": {"tasks": ("task01",), "dims": "3d"},
    "pancreatic-lesion-task01": {"tasks": ("task01",), "dims": "3d"},
}
# The paper's loss for the tasks it trained (softseg's default is CE + DML).
for _name, _values in PRESETS.items():
    if _values.get("dims", "2d") == "2d":
        _values.setdefault("loss", "ce")


def task_name(name: str) -> str:
    """The one name of a QUBIQ task (a key of :data:`PRESETS`) for ``name``.

    Other spellings are accepted with a logged hint: an unpadded task number
    (``brain-tumor-task1``, the name before softseg 0.2) and the dataset name of a dataset
    with one task (``kidney``). Raises :class:`SoftsegError` listing the names otherwise.
    """
    if name in PRESETS:
        return name
    candidates = []
    match = re.fullmatch(r"(.+)-task0*(\d+)", name)
    if match:
        candidates.append(f"{match.group(1)}-task{int(match.group(2)):02d}")
    single = [key for key in PRESETS if key.rsplit("-task", 1)[0] == name]
    if len(single) == 1:
        candidates.append(single[0])
    for candidate in candidates:
        if candidate in PRESETS:
            log.info("QUBIQ task %r is called %r; using that name", name, candidate)
            return candidate
    raise SoftsegError(f"unknown QUBIQ task {name!r}; expected one of: {', '.join(PRESETS)}")


_FIELDS = {f.name: f for f in fields(TrainConfig)}
_TUPLE_FIELDS = {"tasks", "classes", "decoder_channels", "betas", "patch_size", "voxel_spacing", "spacing"}


def preset(name: str) -> TrainConfig:
    """The paper's configuration for one QUBIQ task, by name (see :data:`PRESETS` and
    :func:`task_name` for the other spellings accepted)."""
    name = task_name(name)
    values = {**DIMS_DEFAULTS.get(PRESETS[name].get("dims", "2d"), {}), **PRESETS[name]}
    return TrainConfig(**_coerce(values, f"preset {name}"), preset=name)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a YAML (or JSON) file: a mapping of TrainConfig field names to values."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as error:
        raise SoftsegError(f"{path}: config file not found; check the path given to --config") from error
    except yaml.YAMLError as error:
        raise SoftsegError(f"{path}: not valid YAML ({error}); fix the file or leave out --config") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SoftsegError(
            f"{path}: expected a mapping of setting: value, found {type(data).__name__}"
        )
    return _coerce(data, str(path))


def resolve_config(
    preset_name: str | None = None,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Defaults <- preset <- config file <- overrides (None values in overrides are ignored).

    A config file may itself name a ``preset``; a preset given here wins over it.
    """
    from_file = load_config_file(config_file) if config_file is not None else {}
    name = preset_name or from_file.pop("preset", None)
    if name is not None and preset_name is not None:
        from_file.pop("preset", None)
    given = _coerce({k: v for k, v in (overrides or {}).items() if v is not None}, "command line")
    chosen = {**(PRESETS[task_name(name)] if name is not None else {}), **from_file, **given}
    dims, head = chosen.get("dims", TrainConfig.dims), chosen.get("head", TrainConfig.head)
    config = TrainConfig(**_coerce({**DIMS_DEFAULTS.get(dims, {}), **HEAD_DEFAULTS.get(head, {})},
                                   f"{dims} and {head} head defaults"))
    if name is not None:
        config = config.replace(**_coerce(PRESETS[task_name(name)], f"preset {name}"), preset=task_name(name))
    config = config.replace(**{**from_file, **given})
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    """Raise one SoftsegError listing every invalid setting of ``config``."""
    problems: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    c = config
    check(c.label_mode in LABEL_MODES, f"label_mode: expected one of {LABEL_MODES}, found {c.label_mode!r}")
    check(c.loss in LOSSES, f"loss: expected one of {LOSSES}, found {c.loss!r}")
    check(c.dml_weight > 0, f"dml_weight: expected > 0, found {c.dml_weight}")
    check(c.precision in PRECISIONS, f"precision: expected one of {PRECISIONS}, found {c.precision!r}")
    check(c.best_metric in BEST_METRICS, f"best_metric: expected one of {BEST_METRICS}, found {c.best_metric!r}")
    check(c.normalization in NORMALIZATIONS, f"normalization: expected one of {NORMALIZATIONS}, found {c.normalization!r}")
    check(0 < c.bn_momentum <= 1, f"bn_momentum: expected a value in (0, 1], found {c.bn_momentum}")
    check(c.epochs >= 1, f"epochs: expected >= 1, found {c.epochs}")
    check(c.batch_size >= 1, f"batch_size: expected >= 1, found {c.batch_size}")
    check(c.aug_copies >= 0, f"aug_copies: expected >= 0, found {c.aug_copies}")
    check(
        c.crop_size >= 32 and c.crop_size % 32 == 0,
        f"crop_size: expected a positive multiple of 32 (the U-Net downsamples 5 times), found "
        f"{c.crop_size}; use e.g. {max(32, round(c.crop_size / 32) * 32)}",
    )
    check(
        c.resize is None or c.resize >= 32,
        f"resize: expected at least 32 pixels or none, found {c.resize}",
    )
    check(0 < c.lr_min <= c.lr, f"lr, lr_min: expected 0 < lr_min <= lr, found lr={c.lr}, lr_min={c.lr_min}")
    check(len(c.betas) == 2 and all(0 <= b < 1 for b in c.betas), f"betas: expected two values in [0, 1), found {c.betas}")
    check(c.weight_decay >= 0, f"weight_decay: expected >= 0, found {c.weight_decay}")
    check(0 <= c.translate < 1, f"translate: expected a fraction in [0, 1), found {c.translate}")
    check(0 <= c.rotate <= 180, f"rotate: expected degrees in [0, 180], found {c.rotate}")
    check(0 <= c.zoom < 1, f"zoom: expected a fraction in [0, 1), found {c.zoom}")
    check(0 <= c.hflip <= 1, f"hflip: expected a probability in [0, 1], found {c.hflip}")
    check(0 <= c.vflip <= 1, f"vflip: expected a probability in [0, 1], found {c.vflip}")
    check(0 <= c.val_fraction < 1, f"val_fraction: expected a fraction in [0, 1), found {c.val_fraction}")
    check(c.val_every >= 1, f"val_every: expected >= 1, found {c.val_every}")
    check(
        c.slice_axis is None or (isinstance(c.slice_axis, int) and not isinstance(c.slice_axis, bool)
                                 and 0 <= c.slice_axis <= 2),
        f"slice_axis: expected a spatial axis 0, 1 or 2 of a volume, or none, found {c.slice_axis!r}",
    )
    check(c.dims in DIMS, f"dims: expected one of {DIMS}, found {c.dims!r}")
    check(
        c.patch_size == () or (len(c.patch_size) == 3 and all(isinstance(n, int) and n >= 4 for n in c.patch_size)),
        f"patch_size: expected three voxel counts >= 4 (X Y Z), or none to plan it from the data, "
        f"found {c.patch_size}",
    )
    check(c.voxel_spacing == () or (len(c.voxel_spacing) == 3 and all(v > 0 for v in c.voxel_spacing)),
          f"voxel_spacing: expected three positive spacings (mm), found {c.voxel_spacing}")
    check(c.spacing == () or (len(c.spacing) in (2, 3) and all(isinstance(v, (int, float)) and v > 0
                                                                 for v in c.spacing)),
          f"spacing: expected 2 (images) or 3 (volumes) positive spacings in mm, found {c.spacing}")
    check(not (c.spacing and c.resize is not None),
          f"spacing and resize: give one of them (both resample the grid), found spacing {c.spacing}, "
          f"resize {c.resize}")
    check(c.base_filters >= 1, f"base_filters: expected >= 1, found {c.base_filters}")
    check(c.head in HEAD_KINDS, f"head: expected one of {HEAD_KINDS}, found {c.head!r}")
    check(c.ssn_rank >= 1, f"ssn_rank: expected a covariance rank >= 1, found {c.ssn_rank}")
    check(c.ssn_samples >= 1, f"ssn_samples: expected >= 1 Monte Carlo samples per step, found {c.ssn_samples}")
    check(c.ssn_eval_samples >= 1,
          f"ssn_eval_samples: expected >= 1 samples per predicted map, found {c.ssn_eval_samples}")
    if c.head == "ssn":
        check(c.label_mode == "random_rater",
              f"label_mode: head ssn learns the raters' spread from one rater's mask drawn per image per "
              f"step: expected 'random_rater', found {c.label_mode!r} (or leave label_mode unset)")
        check(c.loss == "ce",
              f"loss: head ssn trains on the Monte Carlo likelihood of the cross-entropy: expected 'ce', "
              f"found {c.loss!r} (the Dice semimetric loss has no likelihood to integrate; leave loss unset)")
    check(c.in_channels >= 0, f"in_channels: expected >= 0, found {c.in_channels}")
    check(
        len(c.decoder_channels) == 5 and all(ch >= 1 for ch in c.decoder_channels),
        f"decoder_channels: expected 5 positive channel counts, found {c.decoder_channels}",
    )
    if problems:
        raise SoftsegError(
            f"invalid training configuration ({len(problems)}):\n"
            + "\n".join(f"  {p}" for p in problems)
        )


def to_dict(config: TrainConfig) -> dict[str, Any]:
    """A JSON-ready dict (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def from_dict(data: Mapping[str, Any], source: str = "config") -> TrainConfig:
    """The inverse of :func:`to_dict`; unknown keys are an error naming ``source``."""
    return TrainConfig(**_coerce(dict(data), source))


def save_config(config: TrainConfig, path: Path) -> None:
    """Write ``config`` as JSON atomically (see :mod:`softseg.files`)."""
    write_text_atomic(path, json.dumps(to_dict(config), indent=2) + "\n")


def load_config(path: Path) -> TrainConfig:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as error:
        raise SoftsegError(f"{path}: not found; is this a softseg run folder (RUN/seedN)?") from error
    except json.JSONDecodeError as error:
        raise SoftsegError(f"{path}: not valid JSON ({error}); the run folder is damaged") from error
    return from_dict(data, str(path))


def _coerce(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Check keys against TrainConfig and convert lists to tuples and ints to floats."""
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise SoftsegError(
            f"{source}: unknown setting(s) {', '.join(unknown)}; valid settings are: "
            f"{', '.join(_FIELDS)}"
        )
    out: dict[str, Any] = {}
    for key, value in data.items():
        default = _FIELDS[key].default
        if key in _TUPLE_FIELDS:
            if isinstance(value, str):
                value = (value,)
            try:
                value = tuple(value)
            except TypeError as error:
                raise SoftsegError(f"{source}: {key} expected a list, found {value!r}") from error
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(default, (int, float)) and not isinstance(value, type(default)) and value is not None:
            if key != "resize":
                kind = "an integer" if isinstance(default, int) else "a number"
                raise SoftsegError(f"{source}: {key} expected {kind}, found {value!r}")
        if key == "resize" and value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise SoftsegError(f"{source}: resize expected an integer pixel size or null, found {value!r}")
        out[key] = value
    return out
