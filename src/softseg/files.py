"""Writing outputs safely: the one atomic writer and the one output-folder guard.

Every file softseg writes (maps, checkpoints, JSON, CSV, HTML, ONNX) goes through
:func:`atomic_path`: it is written under a unique temporary name in the destination's folder
and renamed into place, so a reader never sees half a file, an interrupted run leaves the
old file intact, and two processes writing the same folder never share a temporary name.
Files and folders get the permissions the user's umask gives (``mkstemp``/``mkdtemp`` alone
would make them 0600/0700, unreadable for colleagues on a shared server).

Every command that writes into a folder asks :func:`prepare_out_dir` first: a non-empty
folder is refused unless the caller passes ``overwrite`` (replace outputs of the same names)
or ``resume`` (keep what is there and continue).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from softseg.errors import SoftsegError


def _umask() -> int:
    # Linux states the umask in /proc: reading it there changes nothing, whereas os.umask can
    # only be read by setting it, which for an instant would apply to files other threads
    # (the prediction writer) create. Elsewhere: set it and put it back at once.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_suffix(path: Path) -> str:
    # Keep the real ending last so libraries that pick a format by name (nibabel: .nii.gz) still do.
    name = path.name.lower()
    for ending in (".nii.gz", ".tar.gz"):
        if name.endswith(ending):
            return ".tmp" + ending
    return ".tmp" + path.suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path``; on success rename it over ``path``.

    The caller writes the file at the yielded path (with any library: ``torch.save``,
    nibabel, onnx). On an exception the temporary file is removed and ``path`` is untouched.
    With ``overwrite=False`` an existing ``path`` raises :class:`SoftsegError` before anything
    is written. The result has the permissions of a file created under the current umask.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise SoftsegError(f"{path}: already exists; remove it or allow overwriting")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_temp_suffix(path), dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"), overwrite=overwrite)


def write_json_atomic(path: str | os.PathLike, data: Any, *, overwrite: bool = True) -> None:
    """``data`` as indented JSON (NaN written as ``null``), atomically."""
    text = json.dumps(_nan_to_none(data), indent=2, allow_nan=False) + "\n"
    write_text_atomic(path, text, overwrite=overwrite)


def write_with(path: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = True) -> None:
    """Call ``write(tmp)`` to produce the file at a temporary path, then rename it to ``path``."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        write(tmp)


def _nan_to_none(value: Any) -> Any:
    # JSON has no NaN; an undefined value (e.g. HD95 with one empty mask) becomes null.
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


def temp_folder(beside: str | os.PathLike) -> Path:
    """A new empty folder with a unique name next to ``beside``, with umask permissions.

    For outputs that must appear whole (an evaluation's files): fill it, then
    :func:`publish_folder` it.
    """
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{beside.name}.", suffix=".tmp", dir=beside.parent))
    os.chmod(folder, 0o777 & ~_umask())
    return folder


def publish_folder(tmp: Path, out: Path) -> None:
    """Move the files of the finished folder ``tmp`` into ``out``.

    An absent or empty ``out`` is replaced by ``tmp`` in one rename; otherwise (the caller
    has already allowed overwriting) each file is renamed over its namesake and ``tmp``
    removed. Files in ``out`` that ``tmp`` does not have are kept.
    """
    tmp, out = Path(tmp), Path(out)
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.replace(tmp, out)
        return
    for file in tmp.iterdir():
        os.replace(file, out / file.name)
    tmp.rmdir()


def prepare_out_dir(
    out: str | os.PathLike,
    *,
    overwrite: bool | None = False,
    resume: bool | None = False,
    what: str = "output",
    option: str = "--out",
    create: bool = True,
) -> Path:
    """Check (and create) the output folder ``out``: the one guard of every writing command.

    A non-empty folder is refused unless ``overwrite`` (files of the same names are
    replaced, nothing else is deleted) or ``resume`` (the caller keeps what is there and
    continues) is set. The message names the folder, what was found and the way out,
    offering only the options the caller supports (pass ``overwrite``/``resume`` as ``None``
    where a command has no such option). ``what`` names the earlier run in the message
    ("prediction", "evaluation", "demo", ...) and ``option`` how the user named the folder
    ("--out", or "OUT" for a positional argument). Raises :class:`SoftsegError`.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SoftsegError(f"{out}: expected an output folder, found a file; choose another {option}")
    if out.is_dir() and any(out.iterdir()) and not (overwrite or resume):
        ways = [f"choose another {option}"]
        if overwrite is not None:
            ways.append("pass --overwrite to replace its outputs")
        if resume is not None:
            ways.append("pass --resume to continue it")
        raise SoftsegError(
            f"{out}: output folder is not empty (an earlier {what} run?); " + " or ".join(ways)
        )
    if create:
        out.mkdir(parents=True, exist_ok=True)
    return out
