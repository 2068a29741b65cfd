"""Device, precision and random-number choices shared by training and inference.

Precision names (the resolved value is stored in ``config.json``):
- "fp32": plain float32.
- "bf16": bfloat16 autocast (CPU or GPU); on the CPU also channels_last memory format,
  which is where oneDNN's bf16 convolutions are fastest. Losses stay in float32.
- "amp": float16 autocast with a GradScaler on a GPU; on a CPU it means "bf16".
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from softseg.errors import SoftsegError


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> the first GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise SoftsegError(f"device {device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SoftsegError(f"device {device!r}: no CUDA GPU is available here; use --device cpu")
    return resolved


def cpu_supports_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> "bf16" on a CPU with native bf16, "amp" on a GPU, else "fp32"."""
    if precision == "auto":
        if device.type == "cuda":
            return "amp"
        return "bf16" if cpu_supports_bf16() else "fp32"
    if precision == "amp" and device.type == "cpu":
        return "bf16"
    return precision


def autocast(precision: str, device: torch.device):
    """The autocast context for a resolved precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if (precision == "amp" and device.type == "cuda") else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def memory_format(precision: str, device: torch.device) -> torch.memory_format:
    """The 2D network's: channels_last on the CPU (about 1.4x faster in fp32 and needed for
    fast bf16) and on the GPU under mixed precision (tensor cores); contiguous otherwise (the
    3D network's is its mode's, :meth:`softseg.model.modes.Mode.memory_format`)."""
    if device.type == "cpu" or precision != "fp32":
        return torch.channels_last
    return torch.contiguous_format


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Run the block with torch's global generators seeded with ``seed``; restore them after.

    For what draws only from the global generators (a model's initialisation, EfficientNet's
    stochastic depth inside the forward pass): reproducible from ``seed``, while the
    caller's random state is left exactly as it was. The CPU generator is always forked and
    seeded; so is the CUDA generator of ``device`` when it is a GPU (the one its kernels
    draw from). Other accelerators are not forked (their generator is seeded process-wide
    with ``torch.manual_seed``, as softseg did before).
    """
    if device is None or device.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            yield
    elif device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        with torch.random.fork_rng(devices=[index], device_type="cuda"):
            torch.random.default_generator.manual_seed(seed)
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
            yield
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse rather than hand it back to the OS.

    A forward pass allocates and frees the same few hundred MB for every image. By default
    glibc gives large freed blocks back (blocks above the mmap threshold, and free space at
    the top of the heap above the trim threshold), and the next pass faults every page back
    in, zero-filled. Whether that happens depends on where other allocations land, so it
    comes and goes: measured with the paper's model at 480x480 in bf16, 8-15 thousand page
    faults per image and 56-60 ms instead of 45-46 ms with this setting and no faults; a
    training step at 256x256 (32 samples) ran 1.4x faster in bf16 and 1.9x in fp32. Both
    thresholds are raised to 1 GiB: the process keeps up to that much freed memory.

    Process-wide and idempotent, so library functions never call it: the commands that
    train or predict (``softseg train``, ``predict``, ...) call it at their start, and a
    Python user opts in the same way by calling it once before training or predicting.
    Returns False where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # older glibc caps the mmap threshold at 32 MiB on 64-bit machines
    mmap = mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES) or mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    return bool(mmap) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))
