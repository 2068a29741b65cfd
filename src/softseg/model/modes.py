"""The run's mode: how the network sees an image. Decided once from the run's configuration
(:func:`mode_of`).

- :class:`Image2D` ("image"): 2D images through the 2D network (smp U-Net), each whole image
  padded to a multiple of 32; training samples random crops.
- :class:`Slices2D` ("slices"): volumes cut into 2D slices along the run's ``slice_axis``, each
  slice an image as above, the outputs stacked back in place (a 2D image is one slice).
- :class:`Volume3D` ("volume"): volumes through the 3D network (MONAI DynUNet) by sliding
  windows of the training patch; training samples random patches.

"Run the model over whole images" is :meth:`Mode.outputs`, the one path that validation,
predict, calibrate, threshold and export take. A new mode is one class with the methods of
:class:`Mode` plus its entry in :data:`MODES` (the mode there that ``claims`` a configuration
is its mode).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np
import torch

from softseg.errors import SoftsegError
from softseg.model.heads import head_of
from softseg.model.preprocess import (
    padded_size,
    predict_logits_batch,
    predict_logits_volume,
    resampled_shape,
    resize,
    resize_input,
    stack_slices,
    volume_slices,
)
from softseg.model.runtime import memory_format

if TYPE_CHECKING:
    from softseg.data.cases import Case
    from softseg.model.config import TrainConfig

log = logging.getLogger(__name__)

#: ``(n, C, *grid)`` model inputs -> ``(n, K, *grid)`` float32 outputs on the CPU
Forward = Callable[[torch.Tensor], torch.Tensor]

# On a CPU, a forward pass holds at most this many input pixels, which bounds the memory of
# its activations whatever --batch-size asks. Measured with the paper's model in bf16 (freed
# memory kept, see softseg.model.runtime.keep_freed_memory): four 480x480 images in one pass were 6%
# faster per image than one at a time, larger passes no faster; at 256x256 passes of 4 to 32
# images ran alike. On a GPU a pass holds up to 8x more (32 slices of 512x512), so that a
# volume's slices never go through in one pass whatever their number.
CPU_BATCH_PIXELS = 2**20
GPU_BATCH_PIXELS = 2**23


def in_plane_axes(axis: int) -> tuple[int, int]:
    """The two spatial axes of a volume other than ``axis``, in order (vertical, horizontal)."""
    first, second = (a for a in range(3) if a != axis)
    return first, second


class Mode(Protocol):
    """The interface every mode implements (see the module doc)."""

    name: str
    #: the training windows: "crop" (square 2D crops of ``crop_size``) or "patch" (3D ``patch_size``)
    window: str
    #: training keeps volumes whole (patches are cut per step) instead of cutting them into slices
    whole_training_volumes: bool
    #: what the mode does with a volume about its through-plane axis (for the log)
    volume_axis: str

    @staticmethod
    def claims(config: TrainConfig) -> bool:
        """Whether a run with ``config`` runs in this mode."""
        ...

    def check_dataset(self, cases: Sequence[Case], root: Path) -> None:
        """Raise SoftsegError when this mode cannot train on ``cases``."""
        ...

    def plan(self, config: TrainConfig, volumes: Sequence[Case], root: Path) -> TrainConfig:
        """``config`` with what this mode plans from the training ``volumes`` filled in."""
        ...

    def check_training_cases(self, config: TrainConfig, cases: Sequence[Case]) -> None:
        """Raise SoftsegError when a training case cannot give this mode's training windows."""
        ...

    def check_image(self, index: int, image: np.ndarray, config: TrainConfig) -> None:
        """Raise SoftsegError unless ``image`` ``(C, *spatial)`` is what this mode predicts."""
        ...

    def create_network(self, config: TrainConfig, encoder_weights: str | Path | None) -> torch.nn.Module:
        """The network this mode trains, for a filled-in ``config``."""
        ...

    def memory_format(self, precision: str, device: torch.device) -> torch.memory_format:
        """The memory format of the network's weights and inputs."""
        ...

    def flip_dims(self, config: TrainConfig, view: tuple[int, ...]) -> tuple[int, ...]:
        """A test-time view (2D flip dims: -1 horizontal, -2 vertical) as dims of this mode's
        ``(n, C, *grid)`` model inputs."""
        ...

    def network_logits(self, model: torch.nn.Module, batch: torch.Tensor, config: TrainConfig,
                       precision: str, device: torch.device) -> torch.Tensor:
        """Logits ``(n, K, *grid)`` float32 of whole ``(n, C, *grid)`` model inputs."""
        ...

    def outputs(self, forward: Forward, inputs: Sequence[torch.Tensor], config: TrainConfig,
                device: torch.device, *, clamp01: bool) -> list[torch.Tensor]:
        """``forward`` over whole images: per normalised ``(C, *spatial)`` input, its output
        ``(K, *spatial)`` on the input's grid, on the CPU (``clamp01`` for probabilities)."""
        ...

    def check_export(self, run_dir: Path) -> None:
        """Raise SoftsegError when this mode's prediction is not one ONNX forward pass."""
        ...


class _Planar:
    """What the 2D modes share: the 2D network over whole (resized, padded) images."""

    window = "crop"
    whole_training_volumes = False
    volume_axis = "cut into 2D slices along"

    def check_dataset(self, cases, root):
        return None  # 2D images, or volumes as slices

    def plan(self, config, volumes, root):
        return config

    def check_training_cases(self, config, cases):
        return None  # a crop larger than an image is padded (softseg.training.augment)

    def create_network(self, config, encoder_weights):
        from softseg.model.network import create_model

        return create_model(config.in_channels, head_of(config).channels(config), encoder=config.encoder,
                            decoder_channels=config.decoder_channels, encoder_weights=encoder_weights,
                            bn_momentum=config.bn_momentum)

    def memory_format(self, precision, device):
        return memory_format(precision, device)

    def flip_dims(self, config, view):
        return tuple(view)

    def network_logits(self, model, batch, config, precision, device):
        return predict_logits_batch(model, batch, precision, device)

    def _planes(self, x: torch.Tensor, config: TrainConfig) -> list[torch.Tensor]:
        return [x]

    def outputs(self, forward, inputs, config, device, *, clamp01):
        planes, owner = [], []
        for index, x in enumerate(inputs):
            parts = self._planes(x, config)
            planes += parts
            owner += [index] * len(parts)
        prepared = [resize_input(x, config) for x in planes]
        out: list[torch.Tensor | None] = [None] * len(planes)
        for indices in _passes(prepared, device):
            for i, y in zip(indices, forward(torch.stack([prepared[i] for i in indices]))):
                out[i] = resize(y, tuple(planes[i].shape[1:]), clamp01=clamp01)
        per_input: list[list[torch.Tensor]] = [[] for _ in inputs]
        for index, y in zip(owner, out):
            per_input[index].append(y)
        return [self._assemble(parts, x, config) for parts, x in zip(per_input, inputs)]

    def _assemble(self, parts: list[torch.Tensor], x: torch.Tensor, config: TrainConfig) -> torch.Tensor:
        return parts[0]

    def check_export(self, run_dir):
        return None  # one padded forward pass: what the ONNX graph holds


class Image2D(_Planar):
    name = "image"

    @staticmethod
    def claims(config):
        return config.dims == "2d" and config.slice_axis is None

    def check_image(self, index, image, config):
        _check_channels(index, image, config)
        if image.ndim == 4:
            raise SoftsegError(
                f"image {index}: a volume {image.shape} (channels first), but the run was trained "
                "on 2D images (its config has no slice_axis); predict volumes with a run trained "
                "on volumes, or cut them into 2D images first"
            )


class Slices2D(_Planar):
    name = "slices"

    @staticmethod
    def claims(config):
        return config.dims == "2d" and config.slice_axis is not None  # a 2D run trained on volumes

    def check_image(self, index, image, config):
        _check_channels(index, image, config)

    def _planes(self, x, config):
        return volume_slices(x, config.slice_axis) if x.ndim == 4 else [x]

    def _assemble(self, parts, x, config):
        return stack_slices(parts, config.slice_axis) if x.ndim == 4 else parts[0]


class Volume3D:
    name = "volume"
    window = "patch"
    whole_training_volumes = True
    volume_axis = "rotated about"

    @staticmethod
    def claims(config):
        return config.dims == "3d"

    def check_dataset(self, cases, root):
        flat = [c.case_id for c in cases if c.image.ndim != 4]
        if flat:
            raise SoftsegError(
                f"{root}: dims 3d trains on volumes (C, X, Y, Z), but {len(flat)} case(s) are 2D "
                f"images (e.g. {', '.join(flat[:3])}); train 2D data with --dims 2d"
            )

    def plan(self, config, volumes, root):
        """The network spacing (the volumes' median, per axis) and patch (planned from the
        volumes' median shape when not given), checked against the network's divisor."""
        from softseg.model.network3d import check_patch, plan_patch

        spacing = config.voxel_spacing or tuple(float(v) for v in config.spacing) or tuple(
            float(np.median([c.spacing[a] for c in volumes])) for a in range(3))
        patch = config.patch_size or plan_patch([_grid(c, config) for c in volumes], spacing)
        if not config.patch_size:
            log.info("%s: 3D patch %s voxels planned for spacing %s mm", root, patch,
                     tuple(round(s, 3) for s in spacing))
        check_patch(patch, spacing)
        if config.encoder_weights not in ("none", "imagenet"):
            log.warning("encoder_weights %s: ignored by the 3D U-Net, which starts from random weights",
                        config.encoder_weights)
        return config.replace(voxel_spacing=tuple(spacing), patch_size=tuple(int(p) for p in patch),
                              encoder_weights="none")

    def check_training_cases(self, config, cases):
        """Every training volume must hold a whole patch (the patch is cut inside the volume)."""
        small = [f"{c.case_id} {_grid(c, config)}" for c in cases
                 if any(n < p for n, p in zip(_grid(c, config), config.patch_size))]
        if small:
            after = f" after resampling to {config.spacing} mm" if config.spacing else ""
            raise SoftsegError(
                f"patch_size {config.patch_size}: larger than {len(small)} training volume(s){after} on "
                f"some axis: {', '.join(small[:5])}{' ...' if len(small) > 5 else ''}; give a smaller "
                f"--patch-size (multiples of the network's divisor)"
            )

    def check_image(self, index, image, config):
        if image.ndim != 4:
            raise SoftsegError(
                f"image {index}: shape {image.shape} (channels first), but the run is a 3D model "
                f"(dims 3d) that predicts volumes (C, X, Y, Z); use a 2D run for 2D images"
            )
        _check_channels(index, image, config)

    def create_network(self, config, encoder_weights):
        from softseg.model.network3d import create_model_3d

        return create_model_3d(config.in_channels, head_of(config).channels(config), config.patch_size,
                               config.voxel_spacing, config.base_filters)

    def memory_format(self, precision, device):
        # channels_last_3d made the 3D U-Net's CPU step no faster beyond noise (about 5 %, fp32 on AVX2)
        return torch.contiguous_format

    def flip_dims(self, config, view):
        # the in-plane axes of the through-plane slice_axis, as softseg.training.augment3d flips them
        vertical, horizontal = in_plane_axes(config.slice_axis)
        return tuple(sorted(horizontal + 2 if d == -1 else vertical + 2 for d in view))

    def network_logits(self, model, batch, config, precision, device):
        return torch.stack([predict_logits_volume(model, x, config.patch_size, precision, device) for x in batch])

    def outputs(self, forward, inputs, config, device, *, clamp01):
        # one volume a pass: the sliding windows bound the memory, not the number of volumes
        out = [forward(x[None])[0] for x in inputs]
        return [y.clamp_(0.0, 1.0) if clamp01 else y for y in out]

    def check_export(self, run_dir):
        raise SoftsegError(
            f"{run_dir}: a 3D run (dims 3d) predicts by sliding windows, which the ONNX "
            f"graph of one forward pass does not hold; export supports 2D runs; predict volumes "
            f"with softseg predict"
        )


#: every mode by name; exactly one claims any valid configuration
MODES: dict[str, type] = {m.name: m for m in (Volume3D, Slices2D, Image2D)}


def mode_of(config: TrainConfig) -> Mode:
    """The mode of a run, the one place that decides it: the one of :data:`MODES` that
    claims ``config`` (the 3D network for ``dims`` "3d", slices for a 2D run trained on
    volumes, which has a ``slice_axis``, whole 2D images otherwise)."""
    mode = next((cls() for cls in MODES.values() if cls.claims(config)), None)
    if mode is None:
        raise SoftsegError(f"dims {config.dims!r}: no mode runs it; expected one of 2d, 3d")
    return mode


def model_from_config(config: TrainConfig, encoder_weights: str | Path | None = "none") -> torch.nn.Module:
    """The model a run with ``config`` trains (tasks and in_channels must be filled in, and
    for the 3D mode patch_size and voxel_spacing; it has no pretrained weights)."""
    return mode_of(config).create_network(config, encoder_weights)


def _grid(case: Case, config: TrainConfig) -> tuple[int, ...]:
    """The voxel grid ``case`` trains on: its own, or resampled to the run's spacing."""
    shape = tuple(int(n) for n in case.image.shape[1:])
    return resampled_shape(shape, case.spacing, config.spacing) if config.spacing else shape


def _check_channels(index: int, image: np.ndarray, config: TrainConfig) -> None:
    if image.ndim not in (3, 4):
        raise SoftsegError(
            f"image {index}: expected a 2D image (C, H, W) or a volume (C, X, Y, Z), found "
            f"shape {image.shape}"
        )
    if image.shape[0] != config.in_channels:
        raise SoftsegError(
            f"image {index}: expected {config.in_channels} channel(s) as in training, "
            f"found {image.shape[0]} (shape {image.shape})"
        )


def _passes(prepared: Sequence[torch.Tensor], device: torch.device) -> list[list[int]]:
    """Indices of same-shaped model inputs per forward pass, each pass at most
    :data:`CPU_BATCH_PIXELS` (GPU: :data:`GPU_BATCH_PIXELS`) padded pixels, at least one image.
    The caller bounds how many images come at once (predict's --batch-size)."""
    budget = CPU_BATCH_PIXELS if device.type == "cpu" else GPU_BATCH_PIXELS
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, x in enumerate(prepared):
        groups.setdefault(tuple(x.shape), []).append(index)
    passes = []
    for indices in groups.values():
        h, w = prepared[indices[0]].shape[-2:]
        per_pass = max(1, budget // (padded_size(h) * padded_size(w)))
        passes.extend(list(indices[i : i + per_pass]) for i in range(0, len(indices), per_pass))
    return passes
