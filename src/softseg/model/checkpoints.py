"""Checkpoints: written atomically, read weights-only (tensors and plain types, never code)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Mapping

import torch

from softseg.errors import SoftsegError
from softseg.files import write_with
def save_checkpoint(state: Mapping[str, Any], path: Path) -> None:
    """``torch.save(state)`` atomically (see :mod:`softseg.files`).

    ``state`` must hold only tensors and plain Python types (dicts, lists, numbers,
    strings, None): :func:`load_checkpoint` reads weights-only.
    """
    write_with(path, lambda tmp: torch.save(dict(state), tmp))


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`, read with ``weights_only=True``.

    Weights-only loading unpickles nothing but tensors and plain types, so a checkpoint
    from someone else cannot run code here. One holding other objects is refused.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError as error:
        raise SoftsegError(f"{path}: checkpoint not found") from error
    except pickle.UnpicklingError as error:
        # torch raises this when the pickle asks for anything beyond tensors and plain types
        raise SoftsegError(
            f"{path}: the checkpoint holds objects other than tensors and plain types, which "
            f"softseg does not load (weights-only loading: loading arbitrary pickles can run "
            f"code); use a checkpoint written by softseg train"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        # torch's zip reader raises RuntimeError for a truncated or foreign file
        raise SoftsegError(f"{path}: cannot read checkpoint ({error}); the file is damaged") from error
