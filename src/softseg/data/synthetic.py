"""A synthetic multi-rater release in the QUBIQ layout, deterministic from a seed.

Two datasets are written under ``OUT``:

* ``demo-shapes``: one-channel 2D NIfTI images, 2 tasks (task01: a large organ-like blob;
  task02: a smaller inner structure, clipped to each rater's organ), 5 raters. Quirks of the
  real data are reproduced: the third Training case lacks rater ``seg03`` for both tasks (as
  prostate case09), the first Validation case stores its masks as ``(X, Y, 1)``, Testing cases
  have no masks. Case numbers continue across Training, Validation and Testing.
* ``demo-multichannel``: four-channel channels-last NIfTI images ``(X, Y, 4)`` as in QUBIQ
  brain-tumor, 2 tasks (whole lesion, core), 3 raters; each channel shows the structures
  with a different contrast.

Raters disagree along boundaries: each draws the shared true shape with a smooth random
radial displacement (low-order harmonics), and the first rater is systematically a little
generous, the last a little tight. Images show the true shapes brighter than a smooth
textured background with noise and a bias field, so a small U-Net can learn them.
Every case draws from its own random stream (seed, dataset, case number), so a case does not
change when the number of cases does.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from softseg.data import io
from softseg.errors import SoftsegError
from softseg.files import prepare_out_dir

log = logging.getLogger(__name__)

DEMO_DATASETS = ("demo-shapes", "demo-multichannel")
DEFAULT_SIZE = 128
DEFAULT_CASES = (24, 6, 4)  # Training, Validation, Testing
MIN_SIZE = 16

_HARMONICS = np.arange(1, 7)


def write_demo_dataset(
    out: str | Path,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    n_train: int = DEFAULT_CASES[0],
    n_val: int = DEFAULT_CASES[1],
    n_test: int = DEFAULT_CASES[2],
    *,
    overwrite: bool = False,
) -> Path:
    """Write the demo release to ``out`` and return ``out``.

    ``out/demo-shapes`` and ``out/demo-multichannel`` are QUBIQ dataset folders
    (``load_dataset(out / "demo-shapes")``). Images are ``size`` x ``size`` pixels; each
    dataset gets ``n_train`` / ``n_val`` / ``n_test`` cases. Same arguments -> identical
    files. Refuses a non-empty ``out`` unless ``overwrite`` (files of the same names are
    then replaced; nothing is deleted).
    """
    out = Path(out)
    if size < MIN_SIZE:
        raise SoftsegError(f"demo data size must be at least {MIN_SIZE} pixels, got {size}")
    splits, width = case_splits(n_train, n_val, n_test, "demo data")
    prepare_out_dir(out, overwrite=overwrite, resume=None, what="demo-data", option="OUT")
    for index, name in enumerate(DEMO_DATASETS):
        root = out / name
        channels, n_raters = (1, 5) if name == "demo-shapes" else (4, 3)
        spacing = (0.8, 0.8) if channels == 1 else (1.0, 1.0)
        affine = np.diag([*spacing, 1.0, 1.0])
        for number, split in enumerate(tqdm(splits, desc=name, unit="case", disable=None), start=1):
            rng = np.random.default_rng([seed, index, number])
            image, masks = make_case(rng, size, channels, n_raters)
            folder = root / split / f"case{number:0{width}d}"
            io.write_array(folder / "image.nii.gz", image, affine, overwrite=overwrite)
            if split == "Testing":
                continue
            raters = list(range(n_raters))
            if name == "demo-shapes" and n_train >= 2 and number == min(3, n_train):
                raters.remove(2)  # like QUBIQ prostate case09: rater 03 missing for both tasks
            singleton = name == "demo-shapes" and number == n_train + 1
            for t, task_masks in enumerate(masks, start=1):
                for r in raters:
                    mask = task_masks[r].astype(np.uint8)
                    if singleton:
                        mask = mask[..., None]  # like some QUBIQ prostate masks: (X, Y, 1)
                    path = folder / f"task{t:02d}_seg{r + 1:02d}.nii.gz"
                    io.write_array(path, mask, affine, overwrite=overwrite)
    log.info("demo data written to %s", out)
    return out


def case_splits(n_train: int, n_val: int, n_test: int, what: str) -> tuple[list[str], int]:
    """The split of each case in number order (Training, then Validation, then Testing) and the
    digits of its number (``case01``); SoftsegError, naming ``what``, for too few cases."""
    for name, n, least in (("training", n_train, 1), ("validation", n_val, 0), ("testing", n_test, 0)):
        if n < least:
            raise SoftsegError(f"{what} needs at least {least} {name} case(s), got {n}")
    splits = ["Training"] * n_train + ["Validation"] * n_val + ["Testing"] * n_test
    return splits, max(2, len(str(len(splits))))


def make_case(
    rng: np.random.Generator, size: int, channels: int, n_raters: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """One synthetic case.

    Returns ``(image, masks)``: ``image`` is ``(size, size)`` float32 for one channel, else
    ``(size, size, channels)`` (channels last, as stored); ``masks`` has one
    ``(n_raters, size, size)`` bool array per task (organ, inner structure).
    """
    grid = np.indices((size, size), dtype=np.float64)
    organ_centre = size / 2 + rng.uniform(-0.08, 0.08, 2) * size
    organ_radius = rng.uniform(0.2, 0.3) * size
    organ_shape = rng.normal(0, 0.09, 4) / np.arange(2, 6)  # harmonics 2..5: smooth lobes
    organ_phase = rng.uniform(0, 2 * np.pi, 4)
    inner_centre = organ_centre + rng.uniform(-0.3, 0.3, 2) * organ_radius
    inner_radius = rng.uniform(0.35, 0.5) * organ_radius
    inner_shape = rng.normal(0, 0.12, 4) / np.arange(2, 6)
    inner_phase = rng.uniform(0, 2 * np.pi, 4)

    def blob(centre, radius, shape, phase, extra=0.0):
        dy, dx = grid[0] - centre[0], grid[1] - centre[1]
        theta = np.arctan2(dy, dx)
        boundary = radius * (1 + sum(a * np.cos(k * theta + p) for k, a, p in zip(range(2, 6), shape, phase)))
        return np.hypot(dy, dx), theta, boundary + extra

    # Systematic rater tendencies: the first is generous, the last tight, the rest near 0.
    bias = rng.normal(0, 0.02, n_raters)
    bias[0], bias[-1] = 0.06, -0.05
    organs, inners = [], []
    for r in range(n_raters):
        for centre, radius, shape, phase, spread, out_list in (
            (organ_centre, organ_radius, organ_shape, organ_phase, 0.035, organs),
            (inner_centre, inner_radius, inner_shape, inner_phase, 0.09, inners),
        ):
            distance, theta, boundary = blob(centre, radius, shape, phase)
            # Smooth per-rater displacement of the boundary, larger for the small structure.
            amplitude = rng.normal(0, spread, _HARMONICS.size) / _HARMONICS
            phases = rng.uniform(0, 2 * np.pi, _HARMONICS.size)
            wobble = sum(a * np.cos(k * theta + p) for k, a, p in zip(_HARMONICS, amplitude, phases))
            out_list.append(distance <= boundary * (1 + bias[r] + wobble))
    organs_arr = np.stack(organs)
    inners_arr = np.stack(inners) & organs_arr

    distance, _, boundary = blob(organ_centre, organ_radius, organ_shape, organ_phase)
    organ_true = ndimage.gaussian_filter((distance <= boundary).astype(np.float64), 1.2)
    distance, _, boundary = blob(inner_centre, inner_radius, inner_shape, inner_phase)
    inner_true = ndimage.gaussian_filter((distance <= boundary).astype(np.float64), 1.2) * organ_true
    # (organ contrast, inner contrast) per channel: each channel shows the structures differently.
    contrasts = [(1.0, 0.7)] if channels == 1 else [(1.0, 0.5), (0.4, 1.2), (-0.5, 0.6), (0.8, 0.0)]
    bias_field = 1 + 0.15 * ((grid[1] / size - 0.5) * rng.normal() + (grid[0] / size - 0.5) * rng.normal())
    planes = []
    for organ_contrast, inner_contrast in contrasts:
        texture = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 3) * 0.6
        plane = 0.5 + texture + organ_contrast * organ_true + inner_contrast * inner_true
        plane = plane * bias_field + rng.normal(0, 0.2, (size, size))
        planes.append(np.round(plane * 200, 1))  # MRI-like intensity range
    image = planes[0] if channels == 1 else np.stack(planes, -1)
    return image.astype(np.float32), [organs_arr, inners_arr]
