"""The loaders behind :mod:`softseg.data.io`: nibabel and Pillow calls that return a file's
stored array with its :class:`Geometry`, and the comparison of two NIfTI grids. Only ``io``
imports this module; everything else reads files through ``io``."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError
from PIL import Image, UnidentifiedImageError

from softseg.errors import SoftsegError


@dataclass(frozen=True)
class Geometry:
    """What is needed to write an output exactly like its source file.

    ``disk_shape`` is the array shape as stored (e.g. ``(240, 240, 4)`` for a channels-last
    NIfTI, ``(H, W, 3)`` for an RGB PNG). ``affine``/``header`` are set for NIfTI only,
    ``png_mode``/``bit_depth`` for PNG only.
    """

    format: str
    disk_shape: tuple[int, ...]
    affine: np.ndarray | None = None
    header: Any | None = None
    png_mode: str | None = None
    bit_depth: int | None = None


def grid_difference(a: Geometry, b: Geometry) -> float | None:
    """How far apart (mm, the largest over the corners of ``a``'s volume) the same voxel index
    lands on two NIfTI grids. None unless both declare a world space (qform or sform code
    > 0): PNG has none, and a NIfTI with both codes 0 states none either."""
    if not (_declares_space(a) and _declares_space(b)):
        return None
    spatial = [max(int(n) - 1, 0) for n in a.disk_shape[:3]] + [0] * (3 - len(a.disk_shape[:3]))
    corners = np.array(np.meshgrid(*[[0, n] for n in spatial], indexing="ij")).reshape(3, -1)
    points = np.vstack([corners, np.ones(corners.shape[1])])
    return float(np.abs((a.affine - b.affine) @ points)[:3].max())


def _declares_space(geometry: Geometry) -> bool:
    header = geometry.header
    if geometry.affine is None or header is None:
        return False
    return int(header["sform_code"]) > 0 or int(header["qform_code"]) > 0


# ----------------------------------------------------------------------------- reading

# What nibabel and Pillow raise for a damaged or foreign file (truncated gzip, bad header,
# wrong magic, short data), found by truncating and corrupting real files: a NIfTI header
# with a negative or huge dimension gives OverflowError; Pillow refuses a header claiming
# an enormous image with DecompressionBombError (not an OSError). A programming error
# (TypeError, AttributeError, ...) is not among them and keeps its traceback.
_NIFTI_READ_ERRORS = (ImageFileError, HeaderDataError, OSError, EOFError, ValueError,
                      OverflowError, zlib.error, struct.error)
_PNG_READ_ERRORS = (UnidentifiedImageError, OSError, EOFError, ValueError, SyntaxError,
                    zlib.error, struct.error, Image.DecompressionBombError)


def _load_nifti(path: Path) -> tuple[np.ndarray, Geometry, tuple[float, ...]]:
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except _NIFTI_READ_ERRORS as error:
        raise SoftsegError(
            f"{path}: cannot read as NIfTI ({type(error).__name__}: {error}); "
            f"expected a valid .nii/.nii.gz file"
        ) from error
    geometry = Geometry(
        format="nifti",
        disk_shape=tuple(int(s) for s in data.shape),
        affine=np.array(img.affine, dtype=np.float64),
        header=img.header.copy(),
    )
    # Zooms are stored as float32; 7 significant digits give back the value that was meant
    # (0.8, not 0.800000011920929). They are the file's own: nibabel turns a zero pixdim
    # into 1 on loading, and a volume without a spacing must be refused, not taken as 1 mm.
    zooms = img.header.get_zooms()
    if 1.0 in zooms:  # a 1 may be a stored 0 that nibabel fixed: read the header as stored
        with nib.openers.ImageOpener(str(path)) as handle:
            zooms = type(img.header).from_fileobj(handle, check=False)["pixdim"][1 : len(zooms) + 1]
    zooms = tuple(float(f"{float(z):.7g}") for z in zooms)
    return data, geometry, zooms


def _load_png(path: Path, palette_indices: bool = False) -> tuple[np.ndarray, Geometry]:
    """``palette_indices``: keep a palette PNG's indices (label maps) instead of its colours."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode == "P" and not palette_indices:
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                mode = img.mode
            data = np.array(img)
    except _PNG_READ_ERRORS as error:
        raise SoftsegError(
            f"{path}: cannot read as PNG ({type(error).__name__}: {error}); "
            f"expected a valid .png file"
        ) from error
    bit_depth = 16 if data.dtype in (np.uint16, np.int32) and mode.startswith("I") else 8
    if mode == "F":
        bit_depth = 32
    geometry = Geometry(
        format="png", disk_shape=tuple(int(s) for s in data.shape), png_mode=mode, bit_depth=bit_depth
    )
    return data, geometry


def _squeeze_trailing(data: np.ndarray) -> np.ndarray:
    """Drop trailing singleton axes beyond the second: (960, 640, 1) -> (960, 640)."""
    while data.ndim > 2 and data.shape[-1] == 1:
        data = data[..., 0]
    return data
