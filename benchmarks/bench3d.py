"""The 3D mode's benchmarks, run by ``train_throughput.py --dims 3d`` and ``predict_speed.py --dims 3d``,
or both at once by this script::

    python benchmarks/bench3d.py           # both, with the settings of docs/training.md's 3D table
    python benchmarks/bench3d.py --quick   # both as a smoke run (tiny volumes, 1 round): seconds

Training: softseg's 3D step (``softseg.training.loop.train_step``: drawing the batch,
random patches of pre-loaded normalised volumes with foreground oversampling, the growing
batch with 3D augmentation, forward, soft cross-entropy, backward, Adam) against a bare loop
over the same DynUNet on one fixed batch of patches of the same size (forward,
BCE-with-logits, backward, Adam).

Prediction: :func:`softseg.predict_folder` on NIfTI volumes (reading,
normalising, sliding windows, sigmoid, writing float32 NIfTI and a mask) against MONAI's
``sliding_window_inference`` alone over the same network, window, overlap and blending, on
the volumes already in memory and normalised.

Interleaved rounds, medians, one ``ratio`` line per comparison.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SPACING = (0.8, 0.8, 2.5)


def _volumes(n: int, shape: tuple[int, int, int]):
    from softseg import Case, io

    rng = np.random.default_rng(0)
    grids = np.meshgrid(*(np.arange(s) * sp for s, sp in zip(shape, SPACING)), indexing="ij")
    cases = []
    for i in range(n):
        centre = [rng.uniform(0.3, 0.7) * s * sp for s, sp in zip(shape, SPACING)]
        distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre)))
        masks = np.stack([distance < 12 * f for f in (0.9, 1.1)])
        image = (masks[0] + rng.normal(0, 0.3, shape)).astype(np.float32)[None]
        cases.append(Case(f"v{i}", image, SPACING, io.Geometry("nifti", shape), Path("x.nii.gz"),
                          masks={"task01": masks}, raters={"task01": ("a", "b")}, n_raters={"task01": 2}))
    return cases


def _config(args, precision: str = "fp32"):
    from softseg import TrainConfig

    return TrainConfig(dims="3d", tasks=("task01",), in_channels=1, epochs=1000, batch_size=args.batch,
                       aug_copies=args.copies, patch_size=tuple(args.patch), voxel_spacing=SPACING,
                       slice_axis=2, base_filters=args.filters, encoder_weights="none", precision=precision,
                       device="cpu", lr=1e-3, lr_min=1e-5)


def softseg_step(args):
    from softseg.training import train as train_module
    from softseg.training.batches import prepare
    from softseg.training.distributed import Dist
    from softseg.training.loop import train_step

    config = _config(args)
    data = prepare(_volumes(args.batch * 2, tuple(args.volume)), config)
    state = train_module._build_state(config, torch.device("cpu"), Dist(), len(data.images), False)
    state.wrapped.train()

    def step():
        start = (state.step * args.batch) % len(data.images)
        train_step(state, data, list(range(len(data.images)))[start:start + args.batch])

    return step


def bare_step(args):
    from softseg.model.modes import model_from_config

    torch.manual_seed(0)
    model = model_from_config(_config(args))  # MONAI's DynUNet as softseg plans it
    n = args.batch * (1 + args.copies)
    x = torch.randn(n, 1, *args.patch)
    y = (torch.rand(n, 1, *args.patch) > 0.5).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy_with_logits(model(x).float(), y)
        loss.backward()
        optimizer.step()

    return step


def _interleaved(configs: dict, rounds: int, steps: int, warmup: int) -> dict[str, list[float]]:
    for step in configs.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(rounds):
        for name, step in configs.items():
            for _ in range(steps):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    return times


def train_3d(args) -> None:
    n = args.batch * (1 + args.copies)
    print(f"# 3D: patches {tuple(args.patch)} of volumes {tuple(args.volume)}, {n} patches per step "
          f"({args.batch} + {args.copies} copies each), DynUNet base {args.filters} filters, fp32, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    configs = {"bare": bare_step(args), "softseg": softseg_step(args)}
    times = _interleaved(configs, args.rounds, args.steps, args.warmup)
    speed = {name: n / statistics.median(t) for name, t in times.items()}
    for name, value in speed.items():
        print(f"{name:15s} {value:8.3f} patches/s  (median of {len(times[name])} steps)")
    print(f"ratio softseg/bare same network fp32: {speed['softseg'] / speed['bare']:.2f}")


def _write_run(root: Path, args) -> Path:
    """A run folder of the benchmark's DynUNet, as ``softseg train`` writes it (benchmarks/_runs.py),
    trained for one step on one volume of one patch."""
    from _runs import trained_run

    return trained_run(root / "run" / "seed0", _config(args), _volumes(1, tuple(args.patch))[0])


def _zscore(image: np.ndarray) -> torch.Tensor:
    """A one-channel ``(1, X, Y, Z)`` volume as a float32 tensor with mean 0 and std 1."""
    x = torch.as_tensor(image, dtype=torch.float32)
    return (x - x.mean()) / x.std().clamp_min(1e-8)


def predict_3d(args) -> None:
    from monai.inferers import sliding_window_inference

    from _runs import predict
    from softseg import io, load_run
    # the window settings softseg predicts with: the bare side uses the same
    from softseg.model.preprocess import SLIDING_BATCH, SLIDING_OVERLAP, SLIDING_SIGMA

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = _write_run(root, args)
        folder = root / "volumes"
        folder.mkdir()
        for case in _volumes(args.count, tuple(args.volume)):
            io.write_array(folder / f"{case.case_id}.nii.gz", (case.image[0] * 100).astype(np.int16))
        model = load_run(run, device="cpu").model
        inputs = [_zscore(io.read_image(p)[0])[None] for p in sorted(folder.iterdir())]

        def bare():
            with torch.no_grad():
                for x in inputs:
                    sliding_window_inference(x, tuple(args.patch), SLIDING_BATCH, model,
                                             overlap=SLIDING_OVERLAP, mode="gaussian", sigma_scale=SLIDING_SIGMA)

        calls = {"n": 0}

        def softseg():
            calls["n"] += 1
            predict(run, folder, root / f"out{calls['n']}")

        print(f"# 3D predict: {args.count} volumes {tuple(args.volume)}, window {tuple(args.patch)}, overlap "
              f"{SLIDING_OVERLAP}, Gaussian, DynUNet base {args.filters} filters, fp32, "
              f"{torch.get_num_threads()} threads")
        times = _interleaved({"bare": bare, "softseg": softseg}, args.rounds, 1, 1)
        speed = {name: args.count / statistics.median(t) for name, t in times.items()}
        for name, value in speed.items():
            print(f"{name:8s} {value:8.3f} volumes/s  (median of {len(times[name])} rounds)")
        print(f"ratio softseg predict (files in and out) / bare sliding_window_inference: "
              f"{speed['softseg'] / speed['bare']:.2f}")


def add_arguments(parser, *, predict: bool) -> None:
    """The 3D options both scripts take."""
    parser.add_argument("--patch", type=int, nargs=3, default=(64, 64, 24), help="3d: patch / window (voxels)")
    parser.add_argument("--volume", type=int, nargs=3, default=(160, 160, 48) if predict else (96, 96, 32),
                        help="3d: volume shape (voxels)")
    parser.add_argument("--filters", type=int, default=32, help="3d: DynUNet base filters (nnU-Net: 32)")


def main(argv: list[str] | None = None) -> None:
    """Both 3D comparisons through their scripts' own options (the import is deferred: both
    scripts import this module)."""
    import argparse

    import predict_speed
    import train_throughput

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run in seconds: both scripts' --quick with --dims 3d; figures not meaningful")
    args = parser.parse_args(argv)
    if args.quick:
        train_throughput.main(["--dims", "3d", "--quick"])
        predict_speed.main(["--dims", "3d", "--quick"])
    else:  # the commands of docs/training.md's "3D speed and memory" table
        train_throughput.main(["--dims", "3d", "--rounds", "2", "--steps", "1", "--warmup", "1"])
        predict_speed.main(["--dims", "3d", "--images", "1", "--rounds", "2", "--volume", "128", "128", "48"])


if __name__ == "__main__":
    main()
