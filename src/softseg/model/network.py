"""The U-Net of the paper (smp) and its encoder weights; the model a run configuration describes.

The model is ``segmentation_models_pytorch.Unet`` over an EfficientNet-B0 encoder with
decoder channels (256, 128, 64, 32, 16) and one output channel (a logit) per task. smp 0.6
already initialises decoder convolutions with Kaiming-uniform (fan_in, ReLU gain) and the
segmentation head with Xavier-uniform, zero biases and BatchNorm at (1, 0), which is what
the paper asks for; tests/test_model.py pins the resulting statistics.

smp's EfficientNet encoder keeps the classifier's ``_conv_head``/``_bn1`` although its
forward never uses them; they never receive gradients, which DistributedDataParallel rejects
unless told to search for unused parameters every step. They are removed here.

Batch-norm momentum: smp's EfficientNet encoder keeps TensorFlow's 0.99 decay, i.e. PyTorch
momentum 0.01, so its running statistics need about 500 steps to forget their initial
values; a run of a few hundred steps then validates (in eval mode) on stale statistics and
predicts almost nothing. Every BatchNorm here uses ``bn_momentum`` (PyTorch's default 0.1).
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import threading
from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError
from torch import nn

from softseg.errors import SoftsegError

log = logging.getLogger(__name__)

# Encoder modules that exist in smp's encoders but are never used by their forward.
_UNUSED_ENCODER_MODULES = ("_conv_head", "_bn1")
_IGNORED_WEIGHT_PREFIXES = ("_fc.", "_conv_head.", "_bn1.")
_HUB_TIMEOUT_S = 3.0


def create_model(
    in_channels: int,
    n_tasks: int,
    *,
    encoder: str = "efficientnet-b0",
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
    encoder_weights: str | Path | None = "none",
    bn_momentum: float = 0.1,
) -> nn.Module:
    """A U-Net taking ``(N, in_channels, H, W)`` (H, W multiples of 32) to ``(N, n_tasks, H, W)`` logits.

    ``encoder_weights``: "imagenet" (from the local hub cache, or fetched when the hub can
    be reached; a clear SoftsegError within seconds otherwise), a path to a state_dict file
    of the encoder (``torch.save(encoder.state_dict())`` or ``.safetensors``; 3-channel
    weights are adapted to ``in_channels`` as smp does), or "none"/None for random init.
    """
    import segmentation_models_pytorch as smp

    if in_channels < 1 or n_tasks < 1:
        raise SoftsegError(
            f"model needs at least one input channel and one task, found in_channels={in_channels}, "
            f"n_tasks={n_tasks}"
        )
    if encoder not in smp.encoders.get_encoder_names():
        raise SoftsegError(
            f"unknown encoder {encoder!r}; expected a segmentation_models_pytorch encoder name "
            f"such as 'efficientnet-b0' (see smp.encoders.get_encoder_names())"
        )
    weights_file = _weights_file(encoder, encoder_weights)
    state = _read_encoder_state(weights_file) if weights_file is not None else None
    # Build directly with in_channels when the file matches them; otherwise build with the
    # 3 channels of ImageNet weights and adapt the first convolution afterwards.
    build_channels = in_channels
    if state is not None and not _stem_matches(encoder, state, in_channels):
        build_channels = 3
    model = smp.Unet(
        encoder_name=encoder,
        encoder_weights=None,
        in_channels=build_channels,
        classes=n_tasks,
        decoder_channels=tuple(decoder_channels),
    )
    for name in _UNUSED_ENCODER_MODULES:
        if hasattr(model.encoder, name):
            delattr(model.encoder, name)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = bn_momentum
    if state is not None:
        _load_encoder_state(model.encoder, state, weights_file)
        if build_channels != in_channels:
            model.encoder.set_in_channels(in_channels, pretrained=True)
    return model


def _weights_file(encoder: str, weights: str | Path | None) -> Path | None:
    if weights is None or str(weights).lower() in ("none", ""):
        return None
    if str(weights) == "imagenet":
        return _imagenet_weights_file(encoder)
    path = Path(weights)
    if not path.is_file():
        raise SoftsegError(
            f"encoder weights {str(weights)!r}: expected 'imagenet', 'none' or an existing "
            f"state_dict file of the encoder; no such file"
        )
    return path


def _offline_message(encoder: str, why: str) -> str:
    return (
        f"encoder weights 'imagenet' for {encoder}: {why}. Either pass --encoder-weights PATH "
        f"with a state_dict file of the encoder (make it on a machine with internet: python -c "
        f"\"import torch, segmentation_models_pytorch as smp; torch.save(smp.encoders.get_encoder("
        f"'{encoder}', weights='imagenet').state_dict(), '{encoder}.pt')\"), copy that machine's "
        f"~/.cache/huggingface here, or pass --encoder-weights none to start from random weights"
    )


def _imagenet_weights_file(encoder: str) -> Path:
    """The cached ImageNet weights of ``encoder``; fetched only when the hub answers quickly."""
    import segmentation_models_pytorch as smp
    from huggingface_hub import constants, hf_hub_download

    settings = smp.encoders.encoders[encoder]["pretrained_settings"].get("imagenet")
    if settings is None:
        raise SoftsegError(
            f"encoder {encoder} has no ImageNet weights in segmentation_models_pytorch; "
            f"pass --encoder-weights PATH or none"
        )
    repo, revision = settings["repo_id"], settings["revision"]
    cached = _cached_hub_file(repo, revision)
    if cached is not None:
        return cached
    offline = [v for v in ("HF_HUB_OFFLINE", "SOFTSEG_OFFLINE") if _truthy(os.environ.get(v))]
    if offline:
        raise SoftsegError(_offline_message(encoder, f"not in the local cache and {offline[0]} is set"))
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    if not _reachable(host, 443, _HUB_TIMEOUT_S):
        raise SoftsegError(
            _offline_message(encoder, f"not in the local cache and {host} cannot be reached")
        )
    try:
        hf_hub_download(repo, filename="config.json", revision=revision, etag_timeout=10)
        return Path(hf_hub_download(repo, filename="model.safetensors", revision=revision, etag_timeout=10))
    except (OSError, ValueError) as error:
        # huggingface_hub's HTTP, connection and offline errors all derive from OSError
        # (requests' exceptions) or ValueError: each becomes the same advice
        raise SoftsegError(_offline_message(encoder, f"download from {host} failed ({error})")) from error


def _cached_hub_file(repo: str, revision: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, "model.safetensors", revision=revision)
    return Path(found) if isinstance(found, str) else None


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


def _reachable(host: str, port: int, timeout: float) -> bool:
    """True when ``host:port`` accepts a TCP connection within ``timeout`` seconds.

    Name resolution has no timeout of its own (it can hang ~20 s without network), so it
    runs in a daemon thread that is abandoned when it takes too long.
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _read_encoder_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, SafetensorError) as error:
        raise SoftsegError(
            f"{path}: cannot read encoder weights ({error}); expected a file written by "
            f"torch.save(encoder.state_dict()) or a .safetensors file"
        ) from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SoftsegError(f"{path}: expected a state_dict (name -> tensor) of the encoder")
    # A whole smp model's state_dict is accepted too: keep its encoder part.
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    return dict(state)


def _stem_matches(encoder: str, state: Mapping[str, torch.Tensor], in_channels: int) -> bool:
    import segmentation_models_pytorch as smp

    probe = smp.encoders.get_encoder(encoder, in_channels=in_channels, weights=None)
    first = next(n for n, m in probe.named_modules() if isinstance(m, nn.Conv2d))
    key = f"{first}.weight"
    return key in state and tuple(state[key].shape) == tuple(probe.state_dict()[key].shape)


def _load_encoder_state(encoder: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    state = {k: v for k, v in state.items() if not k.startswith(_IGNORED_WEIGHT_PREFIXES)}
    own = encoder.state_dict()
    wrong = [
        f"{k}: {tuple(v.shape)} in file, {tuple(own[k].shape)} in model"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if wrong or missing or unexpected:
        detail = "; ".join(
            part
            for part in (
                f"shape mismatch {wrong[:3]}" if wrong else "",
                f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}" if missing else "",
                f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}" if unexpected else "",
            )
            if part
        )
        raise SoftsegError(
            f"{path}: does not fit the {type(encoder).__name__} encoder ({detail}); save the "
            f"state_dict of the same encoder architecture"
        )
    nn.Module.load_state_dict(encoder, state, strict=True)
