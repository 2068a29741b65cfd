"""A synthetic multi-class, multi-rater dataset: optic disc and cup drawn by 4 raters.

``OUT/demo-disc-cup`` in the rater-folder layout with a ``dataset.json`` that declares the
classes (nnU-Net v2's convention), as fundus sets such as Chákṣu and RIGA are annotated:

    dataset.json                 {"name": "demo-disc-cup", "labels": {"background": 0, "rim": 1, "cup": 2}}
    images/caseNN.png            RGB, fundus-like: a red-orange retina, a yellow disc, a pale cup
    raters/caseNN/raterK.png     8-bit class map: 0 background, 1 rim (disc without cup), 2 cup

Each rater draws the disc and the cup with its own smooth boundary displacement (the shapes
of :func:`softseg.data.synthetic.make_case`: the cup is clipped to that rater's disc, so the
classes nest as in the anatomy); the first rater is a little generous, the last a little
tight. Every case draws from its own random stream (seed, case number).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from softseg.data import io
from softseg.data.synthetic import MIN_SIZE, make_case
from softseg.errors import SoftsegError
from softseg.files import prepare_out_dir, write_text_atomic

log = logging.getLogger(__name__)

DATASET = "demo-disc-cup"
LABELS = {"background": 0, "rim": 1, "cup": 2}
N_RATERS = 4
DEFAULT_SIZE = 96
DEFAULT_CASES = 24

# Retina, disc and cup colours (RGB, 0-255) the image blends between.
_RETINA = np.array([170.0, 70.0, 40.0])
_DISC = np.array([235.0, 190.0, 90.0])
_CUP = np.array([250.0, 235.0, 200.0])


def write_demo_classes(out: str | Path, seed: int = 0, size: int = DEFAULT_SIZE,
                       n_cases: int = DEFAULT_CASES, *, overwrite: bool = False) -> Path:
    """Write ``out/demo-disc-cup`` (see the module docstring) and return it.

    Same arguments -> identical files. Refuses a non-empty ``out`` unless ``overwrite``.
    """
    out = Path(out)
    if size < MIN_SIZE:
        raise SoftsegError(f"demo data size must be at least {MIN_SIZE} pixels, got {size}")
    if n_cases < 2:
        raise SoftsegError(f"the multi-class demo data need at least 2 cases, got {n_cases}")
    prepare_out_dir(out, overwrite=overwrite, resume=None, what="demo-data", option="OUT")
    root = out / DATASET
    width = max(2, len(str(n_cases)))
    for number in tqdm(range(1, n_cases + 1), desc=DATASET, unit="case", disable=None):
        rng = np.random.default_rng([seed, 7, number])
        image, maps = make_disc_cup(rng, size)
        case_id = f"case{number:0{width}d}"
        io.write_array(root / "images" / f"{case_id}.png", image, overwrite=overwrite)
        for r, class_map in enumerate(maps, start=1):
            io.write_array(root / "raters" / case_id / f"rater{r}.png", class_map, overwrite=overwrite)
    write_text_atomic(root / "dataset.json", json.dumps({"name": DATASET, "labels": LABELS}, indent=2) + "\n",
                      overwrite=overwrite)
    log.info("multi-class demo data written to %s", root)
    return root


def make_disc_cup(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One case: ``(image (size, size, 3) uint8, class maps (N_RATERS, size, size) uint8)``."""
    grey, (discs, cups) = make_case(rng, size, 1, N_RATERS)
    maps = np.where(cups, 2, np.where(discs, 1, 0)).astype(np.uint8)
    # make_case's grey image is textured background + disc + brighter cup, around 100-560:
    # map it onto retina -> disc -> cup colours, each channel with its own noise.
    level = np.clip((grey / 200.0 - 0.5) / 1.7, 0.0, 1.0)[..., None]
    low, high = np.clip(level * 2, 0, 1), np.clip(level * 2 - 1, 0, 1)
    colour = _RETINA + (_DISC - _RETINA) * low + (_CUP - _DISC) * high
    colour = colour + rng.normal(0, 6.0, colour.shape)
    return np.clip(np.round(colour), 0, 255).astype(np.uint8), maps
