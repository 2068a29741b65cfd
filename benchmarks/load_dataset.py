"""How long does reading a 2-D dataset of thousands of small slices take, and how much of it
is softseg's own work?

A set like LIDC-IDRI's nodule crops (5,584 cases of 128², 4 raters: 27,920 PNG files) is read
file by file; each file is an open, a read, a zlib inflate and softseg's checks (binary masks,
shapes, grids). This script writes a synthetic rater-folder set of that shape (or reads a
given folder), then alternately loads it with ``softseg.load_dataset`` and decodes the same
files in a bare loop (PIL to numpy, nothing checked), ``--rounds`` times each on a warm file
cache. It prints the medians and one ``ratio`` line (softseg / bare loop: what the checks and
case objects cost over decoding alone).

    python benchmarks/load_dataset.py                        # 2,000 synthetic cases, 128 px, 4 raters
    python benchmarks/load_dataset.py --data ../shared/data/lidc
    python benchmarks/load_dataset.py --quick                # 60 cases, one round: a smoke run
    python benchmarks/load_dataset.py --data ../shared/data/lidc --phases

``--phases`` then also times what ``softseg train`` does before its first step on the whole
set (training data prepared from every case, the network built, one step of 8 slices) and
prints the resident memory after each phase.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def write_slices(root: Path, n: int, size: int, raters: int) -> Path:
    """``n`` grey ``size``² PNG slices with ``raters`` 0/255 masks each, rater-folder layout."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    (root / "images").mkdir(parents=True)
    for i in range(n):
        case = f"P{i // 8:04d}_n0_s{i % 8:02d}"
        centre, radius = rng.uniform(0.3, 0.7, 2) * size, rng.uniform(0.05, 0.2) * size
        distance = np.hypot(yy - centre[0], xx - centre[1])
        image = np.clip(100 + 80 * (distance < radius) + rng.normal(0, 20, (size, size)), 0, 255)
        Image.fromarray(image.astype(np.uint8)).save(root / "images" / f"{case}.png")
        folder = root / "raters" / case
        folder.mkdir(parents=True)
        for r in range(raters):
            mask = (distance < radius * rng.uniform(0.8, 1.2)) * (rng.uniform() > 0.2)
            Image.fromarray((mask * 255).astype(np.uint8)).save(folder / f"r{r + 1}.png")
    return root


def timed_bare(data: Path) -> float:
    """Decode every PNG under ``data`` to an array, nothing else (the reference)."""
    from PIL import Image

    start = time.perf_counter()
    arrays = [np.asarray(Image.open(path)) for path in sorted(data.rglob("*.png"))]
    elapsed = time.perf_counter() - start
    assert arrays, data
    return elapsed


def timed_load(data: Path) -> float:
    from softseg.data.datasets import load_dataset

    start = time.perf_counter()
    dataset = load_dataset(data)
    elapsed = time.perf_counter() - start
    assert dataset.cases, data
    return elapsed


def _rss() -> str:
    with open("/proc/self/status") as status:
        current = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
    return f"{current / 1024:.0f} MiB now, peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"


def phases(data: Path) -> None:
    """Time and memory of the steps before a first training step on every case of ``data``."""
    import torch

    from softseg.data.datasets import load_dataset
    from softseg.model.config import TrainConfig
    from softseg.model.modes import model_from_config
    from softseg.training.batches import prepare

    print(f"imports: {_rss()}")
    start = time.perf_counter()
    dataset = load_dataset(data)
    print(f"load {len(dataset.cases)} cases: {time.perf_counter() - start:.1f} s; {_rss()}")
    config = TrainConfig(tasks=dataset.tasks[:1], in_channels=dataset.cases[0].image.shape[0], crop_size=128,
                         encoder_weights="none", aug_copies=0, precision="fp32")
    start = time.perf_counter()
    train = prepare(dataset.cases, config)
    print(f"training data of every case: {time.perf_counter() - start:.1f} s; {_rss()}")
    start = time.perf_counter()
    model = model_from_config(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.stack([train.images[i][:, :128, :128] for i in range(8)])
    labels = torch.stack([train.labels[i][:, :128, :128] for i in range(8)])
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images), labels)
    loss.backward()
    optimizer.step()
    print(f"network built and one step of 8: {time.perf_counter() - start:.1f} s; {_rss()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="a dataset folder to read instead of synthetic slices")
    parser.add_argument("--cases", type=int, default=2000, help="synthetic cases (default 2000)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="60 synthetic cases, one round: a smoke run")
    parser.add_argument("--phases", action="store_true", help="then time the steps before a first training step")
    args = parser.parse_args()
    if args.quick:
        args.cases, args.rounds, args.data = 60, 1, None
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or write_slices(Path(tmp) / "slices", args.cases, args.size, raters=4)
        timed_bare(data)  # warm the file cache
        times: dict[str, list[float]] = {"softseg": [], "bare": []}
        for _ in range(args.rounds):
            times["softseg"].append(timed_load(data))
            times["bare"].append(timed_bare(data))
        print(f"# {data if args.data else f'{args.cases} synthetic cases of {args.size}² with 4 raters'}; "
              f"{len(os.sched_getaffinity(0))} CPU(s); median of {args.rounds} round(s)")
        for name, values in times.items():
            print(f"{name}: {statistics.median(values):.2f} s")
        print(f"ratio softseg/bare load time: {statistics.median(times['softseg']) / statistics.median(times['bare']):.2f}")
        if args.phases:
            phases(data)


if __name__ == "__main__":
    main()
