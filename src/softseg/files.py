"""Writing experiment outputs safely: atomic files and output folders that are never reused silently."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from softseg.errors import SoftsegError


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename,
    so a reader never sees half a file and an interrupted run leaves the old one intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as indented JSON (NaN written as ``null``), atomically."""
    write_text_atomic(path, json.dumps(_nan_to_none(data), indent=2, allow_nan=False) + "\n")


def _nan_to_none(value: Any) -> Any:
    # JSON has no NaN; an undefined value (e.g. HD95 with one empty mask) becomes null.
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


def prepare_out_dir(out: Path, *, overwrite: bool = False, resume: bool = False, command: str) -> Path:
    """Create the output folder ``out``, refusing a non-empty one unless told otherwise.

    ``resume`` keeps what is there (the caller skips finished work); ``overwrite`` allows
    writing into it (files of the same names are replaced, nothing else is deleted).
    Raises :class:`SoftsegError` naming the folder and the way out.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SoftsegError(f"{out}: expected an output folder, found a file; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (overwrite or resume):
        # demo offers --overwrite (its outputs are cheap to remake); experiments offer --resume
        way_out = "pass --overwrite to replace its outputs" if command == "demo" else "pass --resume to continue that run"
        raise SoftsegError(
            f"{out}: output folder is not empty (an earlier {command} run?); choose another --out or {way_out}"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out
