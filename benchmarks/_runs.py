"""Helpers of the benchmarks (not a benchmark: ``.ci/run`` and tests/test_layout.py skip
``benchmarks/_*.py``): synthetic 2D cases, the run folder the prediction benchmarks predict
with, written by softseg's own ``train``, and their one call of ``softseg predict``.

The run is what a real run holds (``config.json``, ``split.json``, ``env.json``,
``history.csv``, ``checkpoints/last.pt`` with the optimiser state, ``best.pt``), so loading
it costs what loading a user's run costs and it follows the run folder's format wherever
that goes. It is trained for one step on one case: a model's speed depends neither on its
weights nor on the batch size and crop it was trained with, which the step sets small.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np


def disc_cases(n: int, size: int) -> list:
    """``n`` grey ``size`` x ``size`` images of a noisy disc, three raters' masks each (task01)."""
    from softseg import Case, io

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    cases = []
    for i in range(n):
        c, r = rng.uniform(0.3, 0.7, 2) * size, rng.uniform(0.1, 0.25) * size
        masks = np.stack([np.hypot(yy - c[0], xx - c[1]) < r * s for s in (0.9, 1.0, 1.1)])
        image = (masks[1] + rng.normal(0, 0.3, (size, size))).astype(np.float32)[None]
        cases.append(Case(f"c{i:02d}", image, (1.0, 1.0), io.Geometry("png", (size, size)), Path("x.png"),
                          masks={"task01": masks}, raters={"task01": ("a", "b", "c")},
                          n_raters={"task01": 3}))
    return cases


def trained_run(run_dir: Path, config, case) -> Path:
    """``softseg.train`` for one step: one epoch of ``case`` alone, no copies, no validation.

    ``config``: the ``TrainConfig`` whose model (tasks, channels, encoder, dims, patch,
    filters) and precision the benchmark measures; ``case``: a ``softseg.Case`` with its
    tasks' masks (for 3D at least one patch large). Returns ``run_dir``.
    """
    from softseg import Dataset, train

    step = {"epochs": 1, "batch_size": 1, "aug_copies": 0}
    if config.dims == "2d":
        step["crop_size"] = min(config.crop_size, *case.spatial_shape)
    dataset = Dataset(Path(run_dir).parent, "benchmark", "raters", tuple(config.tasks), (case,))
    return train(replace(config, **step), dataset, run_dir, [case.case_id], [], progress=False)


def predict(run: Path, folder: Path, out: Path, *, device: str = "cpu", batch_size: int | None = None) -> Path:
    """``softseg predict RUN FOLDER --out OUT --masks 0.5`` (``softseg.predict_folder``): a
    probability map and a 0.5 mask per image, no progress bar; ``batch_size`` None is
    predict's own default. The benchmarks' one call of it."""
    from softseg import predict_folder
    from softseg.inference import RunOptions
    from softseg.inference.predict import PredictOutputs

    options = RunOptions(device=device, progress=False)
    if batch_size is not None:
        options = replace(options, batch_size=batch_size)
    return predict_folder([run], folder, out, outputs=PredictOutputs(masks=(0.5,)), options=options)
