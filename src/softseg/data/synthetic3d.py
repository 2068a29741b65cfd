"""A synthetic multi-rater volume release in the QUBIQ 2021 pancreas layout, deterministic
from a seed.

``OUT/demo-pancreas/{Training,Validation,Testing}/caseNN/image.nii.gz`` (int16, CT-like
Hounsfield units) with ``task01_seg01.nii.gz`` and ``task01_seg02.nii.gz`` (uint8), 2 raters
as in QUBIQ's pancreas and pancreatic-lesion tasks; Testing cases have no masks. What real CT
has and a 2D-only tool gets wrong is reproduced on purpose:

* **anisotropic voxels**: :data:`SPACING` (0.8 x 0.8 mm in-plane, 2.5 mm slices), so the
  through-plane axis (the third) is the one of largest spacing;
* **an oblique affine with a non-zero origin**: the voxel axes are rotated against the
  scanner axes (:data:`ROTATION_DEG` about z, then x) and the origin is far from 0, so an
  output written with an identity affine or a dropped rotation lands elsewhere in space.

The organ is an ellipsoid defined in millimetres (so it is round in space, not in voxels),
its surface lobed by low-order spherical harmonics; each rater draws it with a smooth random
boundary displacement, the first a little generous and the second a little tight. Every case
draws from its own random stream (seed, case number).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from softseg.data import io
from softseg.data.synthetic import case_splits
from softseg.errors import SoftsegError
from softseg.files import prepare_out_dir

log = logging.getLogger(__name__)

DATASET = "demo-pancreas"
SPACING = (0.8, 0.8, 2.5)  # mm: in-plane, in-plane, through-plane
ROTATION_DEG = (12.0, 6.0)  # about the scanner z axis, then about x
ORIGIN = (-152.4, 118.7, -412.5)  # mm
DEFAULT_SHAPE = (64, 64, 20)  # voxels
DEFAULT_CASES = (12, 4, 2)  # Training, Validation, Testing
N_RATERS = 2
MIN_SHAPE = (16, 16, 8)


def demo_affine() -> np.ndarray:
    """The voxel-to-scanner affine of every demo volume: rotation (:data:`ROTATION_DEG`) times
    the voxel size (:data:`SPACING`), then :data:`ORIGIN`. Its column norms are the spacing."""
    a, b = np.radians(ROTATION_DEG)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rx @ rz @ np.diag(SPACING)
    affine[:3, 3] = ORIGIN
    return affine


def write_demo_volumes(
    out: str | Path,
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    n_train: int = DEFAULT_CASES[0],
    n_val: int = DEFAULT_CASES[1],
    n_test: int = DEFAULT_CASES[2],
    *,
    overwrite: bool = False,
) -> Path:
    """Write the 3D demo release to ``out`` (``out/demo-pancreas``) and return ``out``.

    ``shape`` is the volume size in voxels (x, y, z; z the through-plane axis). Same
    arguments -> identical files. Refuses a non-empty ``out`` unless ``overwrite`` (files of
    the same names are then replaced; nothing is deleted).
    """
    out = Path(out)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or any(s < m for s, m in zip(shape, MIN_SHAPE)):
        raise SoftsegError(
            f"3D demo data: expected a volume shape (X, Y, Z) of at least {MIN_SHAPE} voxels, got {shape}"
        )
    splits, width = case_splits(n_train, n_val, n_test, "3D demo data")
    prepare_out_dir(out, overwrite=overwrite, resume=None, what="demo-data", option="OUT")
    affine = demo_affine()
    for number, split in enumerate(tqdm(splits, desc=DATASET, unit="case", disable=None), start=1):
        image, masks = make_volume(np.random.default_rng([seed, 3, number]), shape)
        folder = out / DATASET / split / f"case{number:0{width}d}"
        io.write_array(folder / "image.nii.gz", image, affine, overwrite=overwrite)
        if split == "Testing":
            continue
        for r, mask in enumerate(masks, start=1):
            io.write_array(folder / f"task01_seg{r:02d}.nii.gz", mask.astype(np.uint8), affine,
                           overwrite=overwrite)
    log.info("3D demo data written to %s", out)
    return out


def make_volume(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic case: ``(image, masks)``, ``image`` ``shape`` int16 (HU-like), ``masks``
    ``(N_RATERS, *shape)`` bool (never empty on the default shape)."""
    mm = [np.arange(n) * s for n, s in zip(shape, SPACING)]
    x, y, z = np.meshgrid(*mm, indexing="ij")
    extent = np.array([n * s for n, s in zip(shape, SPACING)])
    centre = extent / 2 + rng.uniform(-0.08, 0.08, 3) * extent
    radii = np.array([0.26, 0.18, 0.3]) * extent * rng.uniform(0.85, 1.15, 3)
    dx, dy, dz = (x - centre[0]) / radii[0], (y - centre[1]) / radii[1], (z - centre[2]) / radii[2]
    distance = np.sqrt(dx**2 + dy**2 + dz**2)  # 1 on the ellipsoid's surface
    azimuth, polar = np.arctan2(dy, dx), np.arccos(np.clip(dz / np.maximum(distance, 1e-9), -1, 1))

    def lobes(amplitudes: np.ndarray, phases: np.ndarray) -> np.ndarray:
        # low-order harmonics in both angles: a smooth bumpy surface
        return sum(a * np.cos(k * azimuth + p) * np.sin(polar) ** k + b * np.cos(k * polar + q)
                   for k, (a, b), (p, q) in zip(range(1, 4), amplitudes, phases))

    surface = 1 + lobes(rng.normal(0, 0.06, (3, 2)), rng.uniform(0, 2 * np.pi, (3, 2)))
    tendency = (0.05, -0.04)  # the first rater generous, the second tight
    masks = np.stack([
        distance <= surface * (1 + tendency[r] + lobes(rng.normal(0, 0.04, (3, 2)),
                                                        rng.uniform(0, 2 * np.pi, (3, 2))))
        for r in range(N_RATERS)
    ])
    organ = ndimage.gaussian_filter((distance <= surface).astype(np.float64), (1.2, 1.2, 0.4))
    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape), (3, 3, 1)) * 25
    hu = -80 + texture + 120 * organ + rng.normal(0, 12, shape)
    return np.round(hu).astype(np.int16), masks
