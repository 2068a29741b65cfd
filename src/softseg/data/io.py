"""Reading and writing image, mask and probability files: the only module that knows formats.

Formats: NIfTI (``.nii``, ``.nii.gz``, via nibabel) and PNG (read via Pillow; grey maps
and masks written by the small encoder :func:`softseg.data._encode.encode_grey_png`, for speed). Writing
compresses with ISA-L (the ``isal`` package) where it is installed, else with zlib: the
files are the same formats either way, only written several times faster.

Conventions
-----------
* Images come back channels first, float32: ``(C, *spatial)``. Spatial axes keep the
  on-disk array order: nibabel's ``(x, y[, z])`` for NIfTI, ``(row, col)`` for PNG.
* Trailing singleton axes beyond the second are dropped (QUBIQ stores some 2D masks as
  ``(960, 640, 1)``); the on-disk shape is kept in :class:`Geometry` so outputs can be
  written back the same way.
* A NIfTI array whose last axis is small (<= 4) is either a volume or channels-last
  (QUBIQ brain-tumor: ``(240, 240, 4)``). Callers that know the masks' shape pass it as
  ``spatial_shape`` and the matching reading is chosen; otherwise a 3-axis array with a
  last axis of 2-4 is read as channels-last. A 4-axis array is a volume with channels last
  (the Medical Segmentation Decathlon's convention) when its last axis is <= 4; a longer
  fourth axis (a time series, 4D CT/fMRI) is refused.
* PNG images: "L", "I;16", "I", "F", "1" -> one channel; "RGB" -> three; "LA"/"RGBA" ->
  the alpha channel is dropped with a logged warning (alpha is transparency, not signal);
  "P" (palette) is converted to RGB for images; for masks its indices are read.
* Probability maps on disk: float32 NIfTI with the source affine and header, or 16-bit
  grey PNG with value ``round(p * 65535)``. Binary masks: uint8 NIfTI 0/1, or 8-bit PNG 0/255.
  Maps of values in [0, upper] (uncertainty maps in nats, upper = ln K): float32 NIfTI holding
  the values themselves, or 16-bit grey PNG with value ``round(v / upper * 65535)``; the
  reader is told ``upper`` (the prediction record holds it).
* Files are written atomically (temporary file in the same folder, then rename) and an
  existing file is never replaced unless ``overwrite=True``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from softseg.data._encode import encode_grey_png, nifti_bytes
from softseg.data._load import Geometry, _load_nifti, _load_png, _squeeze_trailing, grid_difference  # noqa: F401 (re-exported)
from softseg.errors import SoftsegError
from softseg.files import write_bytes_atomic, write_with

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
PNG_SUFFIXES = (".png",)
SUPPORTED = "NIfTI (.nii, .nii.gz) or PNG (.png)"

# The file stem of a multi-class prediction's label map (argmax class values), beside the class
# maps: written by inference, skipped as a task by evaluation, refused as a class name.
LABEL_MAP = "label-map"

# The record softseg predict writes beside its maps (softseg.inference.outputs writes it;
# evaluation reads where a folder's hypotheses came from).
PREDICTIONS_FILE = "predictions.json"

# The endings of a prediction's uncertainty maps' stems: <task>_entropy, <task>_mi,
# <task>_expected_entropy (softseg.inference.uncertainty): written by inference, skipped as
# tasks by evaluation, refused as the end of a class name.
UNCERTAINTY_MAPS = ("entropy", "mi", "expected_entropy")

# Largest last axis that can be channels rather than slices (4 = QUBIQ brain-tumor MRI).
MAX_CHANNELS_LAST = 4


def file_format(path: str | os.PathLike) -> str:
    """``"nifti"`` or ``"png"`` from the file name; raises SoftsegError for anything else."""
    name = Path(path).name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(PNG_SUFFIXES):
        return "png"
    raise SoftsegError(f"{path}: unsupported file type; expected {SUPPORTED}")


def is_supported(path: str | os.PathLike) -> bool:
    """True for a file name ending in a supported suffix."""
    name = Path(path).name.lower()
    return name.endswith(NIFTI_SUFFIXES + PNG_SUFFIXES)


def stem(path: str | os.PathLike) -> str:
    """File name without its format suffix (``case01.nii.gz`` -> ``case01``)."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES + PNG_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def sample_name(k: int, n: int) -> str:
    """Sample ``k`` of ``n`` in a file name: ``sample-03`` (at least two digits, all the same
    width); ``softseg predict --samples`` writes ``<task>_sample-03.<ext>``."""
    return f"sample-{k:0{max(2, len(str(n - 1)))}d}"


def map_suffix(geometry: Geometry) -> str:
    """The suffix an output in this geometry gets: ``.nii.gz`` or ``.png``."""
    return ".nii.gz" if geometry.format == "nifti" else ".png"


# ----------------------------------------------------------------------------- reading

def _png_channels_first(data: np.ndarray, path: Path, mode: str) -> np.ndarray:
    if data.ndim == 2:
        return data[None]
    if mode in ("LA", "RGBA", "PA"):
        log.warning("%s: PNG mode %s has an alpha channel; it is dropped", path, mode)
        data = data[..., :-1]
    return np.moveaxis(data, -1, 0)


def read_image(
    path: str | os.PathLike, spatial_shape: tuple[int, ...] | None = None
) -> tuple[np.ndarray, tuple[float, ...], Geometry]:
    """Read an image file.

    Returns ``(image, spacing, geometry)``: ``image`` is ``(C, *spatial)`` float32, channels
    first, values as stored (no normalisation); ``spacing`` has one entry per spatial axis
    (NIfTI zooms, 1.0 for PNG). ``spatial_shape`` (e.g. a mask's shape) picks between
    "volume" and "channels-last" for NIfTI arrays where both are possible.
    Raises SoftsegError for an unreadable or unsupported file.
    """
    path = Path(path)
    if file_format(path) == "png":
        data, geometry = _load_png(path)
        image = _png_channels_first(data, path, geometry.png_mode or "")
        return image.astype(np.float32), (1.0,) * (image.ndim - 1), geometry

    data, geometry, zooms = _load_nifti(path)
    data = _squeeze_trailing(data)
    if data.ndim < 2 or data.ndim > 4:
        raise SoftsegError(
            f"{path}: expected a 2D or 3D image (optionally with a last channel axis), "
            f"found an array of shape {geometry.disk_shape}"
        )
    if data.ndim == 4 and data.shape[-1] > MAX_CHANNELS_LAST:
        raise SoftsegError(
            f"{path}: expected a 2D or 3D image, or a volume with at most {MAX_CHANNELS_LAST} "
            f"channels on a fourth axis, found a 4D array of shape {geometry.disk_shape} "
            f"({data.shape[-1]} frames: a time series?); save each frame as its own 3D volume"
        )
    channels_last = _is_channels_last(data.shape, spatial_shape)
    if channels_last:
        image = np.moveaxis(data, -1, 0)
    else:
        image = data[None]
    n_spatial = image.ndim - 1
    spacing = tuple(zooms[:n_spatial]) + (1.0,) * max(0, n_spatial - len(zooms))
    if not all(np.isfinite(z) and z > 0 for z in spacing):
        if n_spatial == 3:
            raise SoftsegError(
                f"{path}: expected positive voxel sizes (NIfTI pixdim), found {spacing}; a volume "
                "needs its spacing for resampling and distances in mm: fix the header (e.g. "
                "nibabel's header.set_zooms)"
            )
        spacing = tuple(z if np.isfinite(z) and z > 0 else 1.0 for z in spacing)  # 2D: pixels
    return np.asarray(image, dtype=np.float32), spacing, geometry


def _is_channels_last(shape: tuple[int, ...], spatial_shape: tuple[int, ...] | None) -> bool:
    if len(shape) == 4:
        return True  # (x, y, z, c): 3D volumes with several channels
    if len(shape) != 3:
        return False
    if spatial_shape is not None:
        if tuple(spatial_shape) == tuple(shape[:-1]):
            return True
        if tuple(spatial_shape) == tuple(shape):
            return False
    # No masks to tell: a short last axis is channels (a 3D volume has many slices).
    return 2 <= shape[-1] <= MAX_CHANNELS_LAST


def _binary_values(values: np.ndarray) -> bool:
    allowed = ({0, 1}, {0, 255}, {0, 65535})
    found = set(values.tolist())
    return any(found <= a for a in allowed)


def read_mask(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read one rater's binary mask.

    Returns ``(mask, geometry)``: ``mask`` is ``(*spatial)`` bool, trailing singleton axes
    dropped. Accepted stored values: {0, 1}, {0, 255} or {0, 65535} (any dtype, incl. bool
    and 1-bit PNG); an RGB(A) mask must have equal colour channels. Raises SoftsegError
    naming the file and the values found when the mask is not binary or cannot be read.
    """
    path = Path(path)
    data, geometry = _mask_array(path, "binary mask")
    if data.dtype == bool:
        return data.copy(), geometry
    values = np.unique(data)
    if values.size > 3 or not _binary_values(values):
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if values.size > 6 else "")
        raise SoftsegError(
            f"{path}: expected a binary mask with values {{0, 1}} or {{0, 255}}, found "
            f"{values.size} distinct values ({shown}); binarise it (e.g. value > 0), or, if the "
            f"masks are class maps, declare their classes in dataset.json (\"labels\")"
        )
    return data > 0, geometry


def _mask_array(path: Path, what: str) -> tuple[np.ndarray, Geometry]:
    """A mask file's stored values as ``(*spatial)``: a PNG's grey values or palette indices
    (an RGB(A) one only with equal colour channels), a NIfTI's array without trailing
    singleton axes."""
    if file_format(path) == "png":
        # A palette mask stores labels as indices (0 background, 1 object): read those.
        data, geometry = _load_png(path, palette_indices=True)
        if data.ndim == 3:
            colour = data[..., :3] if data.shape[-1] >= 3 else data[..., :1]
            if not (colour == colour[..., :1]).all():
                raise SoftsegError(
                    f"{path}: expected a grey {what}, found a colour PNG ({geometry.png_mode}) "
                    f"whose channels differ; save it as 8-bit grey"
                    + (" with 0 and 255" if what == "binary mask" else " with the class values")
                )
            data = colour[..., 0]
        return data, geometry
    data, geometry, _ = _load_nifti(path)
    return _squeeze_trailing(data), geometry


def read_class_map(path: str | os.PathLike, n_classes: int) -> tuple[np.ndarray, Geometry]:
    """Read one rater's class map (multi-class data): integer values ``0 .. n_classes - 1``.

    Returns ``(map, geometry)``: ``map`` is ``(*spatial)`` uint8 with the class values.
    Raises SoftsegError naming the file, each value found outside the labels and its pixel
    count; a {0, 255} file gets the hint that it looks like a binary mask.
    """
    path = Path(path)
    data, geometry = _mask_array(path, "class map")
    values, counts = np.unique(data, return_counts=True)
    bad = [(v, int(n)) for v, n in zip(values.tolist(), counts.tolist())
           if not (float(v).is_integer() and 0 <= v < n_classes)]
    if bad:
        shown = ", ".join(f"{v:g} ({n} pixels)" for v, n in bad[:6]) + (", ..." if len(bad) > 6 else "")
        hint = ""
        if set(values.tolist()) <= {0, 255}:
            hint = "; it looks like a binary 0/255 mask: store class values, or drop the labels entry for binary data"
        raise SoftsegError(
            f"{path}: expected a class map with the values 0..{n_classes - 1} of the labels in "
            f"dataset.json, found {shown}{hint}"
        )
    return data.astype(np.uint8), geometry


def read_probability(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read a probability (or agreement) map written by :func:`write_map` or a user.

    Returns ``(array, geometry)``: ``array`` is ``(*spatial)`` float32 in [0, 1]. NIfTI
    values are taken as stored and must lie in [0, 1]; PNG values are divided by the
    largest value of their bit depth (255 for 8-bit, 65535 for 16-bit). Raises
    SoftsegError for NaN/inf, values outside [0, 1], colour PNGs or unreadable files.
    """
    return read_map(path)


def read_map(path: str | os.PathLike, *, upper: float = 1.0) -> tuple[np.ndarray, Geometry]:
    """Read a map of values in [0, ``upper``] written by :func:`write_map` with that ``upper``
    (default 1: a probability map, as :func:`read_probability`).

    NIfTI values are taken as stored and must lie in [0, upper] (compared in float32, the
    precision of the map); PNG values are divided by the largest value of their bit depth and
    multiplied by ``upper``. Raises SoftsegError like :func:`read_probability`.
    """
    path = Path(path)
    what = "probabilities" if upper == 1.0 else "values"
    if file_format(path) == "png":
        data, geometry = _load_png(path)
        if data.ndim != 2:
            raise SoftsegError(
                f"{path}: expected a grey probability map, found PNG mode {geometry.png_mode} "
                f"with shape {geometry.disk_shape}; save it as 8- or 16-bit grey"
            )
        if data.dtype == bool:
            array = data.astype(np.float32)
        elif geometry.bit_depth == 32:
            array = data.astype(np.float32)
        else:
            scale = 65535.0 if geometry.bit_depth == 16 else 255.0
            array = (data.astype(np.float64) / scale * upper).astype(np.float32)
    else:
        data, geometry, _ = _load_nifti(path)
        array = _squeeze_trailing(np.asarray(data, dtype=np.float32))
    if not np.isfinite(array).all():
        raise SoftsegError(f"{path}: expected finite {what} in [0, {upper:g}], found NaN or inf")
    low, high = _value_range(array)
    if low < 0.0 or high > _upper32(upper):
        raise SoftsegError(
            f"{path}: expected {what} in [0, {upper:g}], found values in [{low:g}, {high:g}]"
        )
    return array, geometry


def _upper32(upper: float) -> float:
    """The largest value a float32 map of values in [0, ``upper``] holds: float32(upper),
    which may lie above ``upper`` (float32(ln 2) > ln 2)."""
    return float(np.float32(upper))


def _value_range(array: np.ndarray) -> tuple[float, float]:
    """(min, max) of an array, (0, 0) when it is empty; for messages about [0, 1] ranges."""
    if array.size == 0:
        return 0.0, 0.0
    return float(array.min()), float(array.max())


# ----------------------------------------------------------------------------- writing


def _disk_array(array: np.ndarray, geometry: Geometry, path: Path) -> np.ndarray:
    """Give a ``(*spatial)`` map the on-disk shape of its source (channel axis dropped)."""
    disk = tuple(geometry.disk_shape)
    if array.shape == disk:
        return array
    trimmed = disk
    while len(trimmed) > array.ndim and trimmed[-1] == 1:
        trimmed = trimmed[:-1]
    if array.shape == trimmed:
        return array.reshape(disk)  # restore trailing singleton axes: (960, 640) -> (960, 640, 1)
    if disk[: array.ndim] == array.shape and len(disk) == array.ndim + 1:
        return array  # source was channels-last (240, 240, 4): one map per image is (240, 240)
    raise SoftsegError(
        f"{path}: map of shape {array.shape} does not fit its source geometry "
        f"(stored shape {disk}); write maps on the source image's spatial grid"
    )


def write_map(
    path: str | os.PathLike, array: np.ndarray, geometry: Geometry, *, overwrite: bool = False,
    upper: float = 1.0,
) -> Path:
    """Write a ``(*spatial)`` map in the layout of its source file.

    A bool array is a binary mask: uint8 0/1 NIfTI or 8-bit 0/255 PNG. A uint8 array is a
    label map of class values, stored as they are (uint8 NIfTI, 8-bit PNG). Any other array is a
    map of values in [0, ``upper``] (default 1: a probability map): float32 NIfTI holding the
    values, or 16-bit grey PNG with value ``round(v / upper * 65535)`` (``round(p * 65535)``
    for probabilities; read it back with :func:`read_map` and the same ``upper``). NIfTI
    outputs carry the source affine and header (data type and shape updated; display window
    [0, upper]). The format follows ``path``'s suffix, which must match
    ``geometry.format``. Raises SoftsegError if the file exists and ``overwrite`` is False,
    for values outside [0, upper] (compared in float32) or NaN, or a shape that does not fit
    the geometry.
    """
    path = Path(path)
    fmt = file_format(path)
    if fmt != geometry.format:
        raise SoftsegError(
            f"{path}: suffix means {fmt} but the source geometry is {geometry.format}; "
            f"use the suffix {map_suffix(geometry)}"
        )
    array = np.asarray(array)
    is_mask = array.dtype == bool
    is_labels = array.dtype == np.uint8  # a label map of class values: stored as they are
    if not (is_mask or is_labels):
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise SoftsegError(f"{path}: map has NaN or inf values; expected values in [0, {upper:g}]")
        low, high = _value_range(array)
        if low < 0.0 or high > _upper32(upper):
            raise SoftsegError(
                f"{path}: expected map values in [0, {upper:g}], found [{low:g}, {high:g}]"
            )
    data = _disk_array(array, geometry, path)

    if fmt == "nifti":
        out = data.astype(np.uint8) if is_mask or is_labels else data.astype(np.float32)
        header = geometry.header.copy() if geometry.header is not None else None
        affine = geometry.affine if geometry.affine is not None else np.eye(4)
        image = nib.Nifti1Image(out, affine, header)
        image.set_data_dtype(out.dtype)
        # The source may carry intensity scaling and a display window for its intensities;
        # a map is stored as-is and displayed over [0, upper] (a label map over its class values).
        image.header.set_slope_inter(None, None)
        image.header["cal_min"], image.header["cal_max"] = 0.0, float(out.max(initial=0)) if is_labels else float(upper)
        write_bytes_atomic(path, nifti_bytes(image, path.name.lower().endswith(".gz")), overwrite=overwrite)
    else:
        if data.ndim != 2:
            raise SoftsegError(f"{path}: PNG maps must be 2D, got shape {data.shape}")
        if is_labels:  # 0, 1, 2, ...: dark in a viewer, exact for a program
            grey = data
        elif is_mask:
            grey = np.where(data, 255, 0).astype(np.uint8)
        else:
            # float32(upper) may lie a rounding step above upper: that is the top value too
            grey = np.round(np.minimum(data.astype(np.float64) / upper, 1.0) * 65535).astype(np.uint16)
        encoded = encode_grey_png(grey)
        write_bytes_atomic(path, encoded, overwrite=overwrite)
    return path


def write_array(
    path: str | os.PathLike,
    array: np.ndarray,
    affine: np.ndarray | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write an array as stored, for making datasets (images and masks), atomically.

    NIfTI keeps the array's dtype and shape, with ``affine`` (identity when None). PNG takes
    a 2D uint8/uint16/bool array (grey) or an ``(H, W, 3)`` uint8 array (RGB). Raises
    SoftsegError if the file exists and ``overwrite`` is False, or for an array PNG cannot hold.
    """
    path = Path(path)
    array = np.asarray(array)
    if file_format(path) == "nifti":
        image = nib.Nifti1Image(array, np.eye(4) if affine is None else np.asarray(affine, float))
        image.set_data_dtype(array.dtype)
        write_bytes_atomic(path, nifti_bytes(image, path.name.lower().endswith(".gz")), overwrite=overwrite)
        return path
    grey = array.ndim == 2 and array.dtype in (np.uint8, np.uint16, np.bool_)
    rgb = array.ndim == 3 and array.shape[-1] == 3 and array.dtype == np.uint8
    if not (grey or rgb):
        raise SoftsegError(
            f"{path}: PNG holds 2D uint8/uint16/bool or (H, W, 3) uint8 arrays, "
            f"got {array.dtype} {array.shape}; convert it or write NIfTI"
        )
    pil = Image.fromarray(array)
    write_with(path, lambda tmp: pil.save(tmp, format="PNG"), overwrite=overwrite)
    return path
