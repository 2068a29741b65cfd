"""Inference speed: `softseg predict` (files in, files out) against a bare ``model(x)`` loop.

For each image size, the same N grey images (PNG, or NIfTI with ``--format nifti``) are
predicted with the same U-Net (EfficientNet-B0, the paper's model) from a run folder that
``softseg train`` wrote after one step (``benchmarks/_runs.py``: weights do not change the
model's speed, and the run holds what a real run holds; prediction loads ``last.pt``):

* bare: the images already in memory, normalised, padded and in the model's memory format;
  only ``model(x)`` is timed, one image per call, under the precision softseg picks on this
  machine (bf16 + channels_last on a CPU with bf16, AMP on a GPU, else fp32). Two models:
  the checkpoint's model as a user would load it (the reference of the target), and
  softseg's inference model (BatchNorm folded into the convolutions, the same function);
* softseg: :func:`softseg.predict_folder` on the folder, timed as a whole: loading the
  model, reading the files, normalising, padding, the model, sigmoid, cropping, and writing
  probability maps (16-bit PNG or float32 NIfTI) plus a 0.5 mask.

The four are measured in interleaved rounds, so that a machine whose speed drifts affects
them alike; medians over the rounds are printed, and one line per ratio that starts with
``ratio`` (the median of the per-round ratios). The target is softseg predict at least 0.9x
the bare loop over the checkpoint's model. The last ratio, against the bare loop over the
same folded model, is what files and the pipeline around the model cost. Both sides run
with malloc keeping freed memory (:func:`softseg.model.runtime.keep_freed_memory`, which
softseg sets when it loads a run). Writing runs on a background thread, so the ratios
depend on a core being free for it. softseg is measured at batch 1, as the bare loop, and
at its default batch size. Run it on an idle machine::

    python benchmarks/predict_speed.py                 # 256x256 and 480x480, 64 images each
    python benchmarks/predict_speed.py --format nifti  # the same with .nii.gz in and out
    python benchmarks/predict_speed.py --quick         # smoke run: 64x64, 4 images, 1 round
    python benchmarks/predict_speed.py --dims 3d --images 2 --rounds 3   # volumes: see bench3d.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_run(root: Path, precision: str) -> Path:
    """A run folder as ``softseg train`` writes it (``benchmarks/_runs.py``), of the paper's
    model with one task and one grey channel at ``precision``."""
    from _runs import disc_cases, trained_run
    from softseg import TrainConfig

    config = TrainConfig(tasks=("task01",), in_channels=1, encoder_weights="none", precision=precision)
    return trained_run(root / "run" / "seed0", config, disc_cases(1, 64)[0])


def make_images(folder: Path, size: int, count: int, fmt: str) -> None:
    from softseg import io

    rng = np.random.default_rng(size)
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    suffix = ".png" if fmt == "png" else ".nii.gz"
    for i in range(count):
        centre = rng.uniform(0.3, 0.7, 2) * size
        blob = np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (0.05 * size**2))
        pixels = np.clip(200 * blob + rng.normal(30, 10, blob.shape), 0, 255).astype(np.uint8)
        io.write_array(folder / f"img{i:03d}{suffix}", pixels)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def checkpoint_model(run: Path, device: str):
    """The trained model as a user would load it from the checkpoint: the network with the
    saved weights, eval mode, in the memory format softseg uses. Returns (model, precision)."""
    import torch

    from softseg.model.checkpoints import load_checkpoint
    from softseg.model.config import load_config
    from softseg.model.modes import model_from_config
    from softseg.model.runtime import memory_format, resolve_precision

    config = load_config(run / "config.json")
    model = model_from_config(config)
    # the checkpoint softseg predicts with by default (softseg.inference.DEFAULT_CHECKPOINT)
    model.load_state_dict(load_checkpoint(run / "checkpoints" / "last.pt")["model"])
    precision = resolve_precision(config.precision, torch.device(device))
    fmt = memory_format(precision, torch.device(device))
    return model.to(device).to(memory_format=fmt).eval(), precision


def inference_model(run: Path, device: str):
    """softseg's own inference model (:func:`softseg.inference.runs.load_run`: BatchNorm folded)."""
    from softseg import load_run
    from softseg.model.runtime import resolve_precision

    loaded = load_run(run, device=device)
    return loaded.model, resolve_precision(loaded.config.precision, loaded.device)


def prepared_inputs(folder: Path, precision: str, device: str) -> list:
    """Every image of ``folder`` read, normalised (z-score), zero-padded to multiples of 32
    (the U-Net downsamples 5 times) and in the model's memory format: a user's own loop."""
    import torch
    import torch.nn.functional as F

    from softseg import io
    from softseg.model.runtime import memory_format

    fmt = memory_format(precision, torch.device(device))
    inputs = []
    for path in image_files(folder):
        x = torch.as_tensor(io.read_image(path)[0], dtype=torch.float32)
        x = (x - x.mean()) / x.std().clamp_min(1e-8)
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % 32, 0, -h % 32))
        inputs.append(x.to(device)[None].contiguous(memory_format=fmt))
    return inputs


def bare_seconds(model, precision: str, inputs: list, device: str) -> float:
    """Seconds of one pass of ``model(x)`` over ``inputs``, one image per call."""
    import torch

    from softseg.model.runtime import autocast

    device = torch.device(device)
    with torch.no_grad():
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for x in inputs:
            with autocast(precision, device):
                y = model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        del y
    return time.perf_counter() - start


def predict_seconds(run: Path, folder: Path, out: Path, device: str, batch_size: int) -> float:
    """Seconds of the whole `softseg predict` call, files in and out."""
    from _runs import predict

    start = time.perf_counter()
    predict(run, folder, out, device=device, batch_size=batch_size)
    return time.perf_counter() - start


def load_seconds(run: Path, device: str) -> float:
    """Seconds :func:`softseg.inference.runs.load_run` takes: a one-off cost of every predict call."""
    from softseg import load_run

    start = time.perf_counter()
    load_run(run, device=device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 480])
    parser.add_argument("--images", type=int, default=64,
                        help="images per size (default 64; the model is loaded once per call)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds, medians reported (default 5)")
    parser.add_argument("--format", choices=("png", "nifti"), default="png",
                        help="image files in and maps out (default png)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="softseg's images per step (default: predict's own default); "
                             "softseg is also measured at 1, as the bare loop")
    parser.add_argument("--precision", default="auto", help="auto (default), fp32, bf16, amp")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run in seconds: 64x64, 4 images, 1 round (3d: tiny volumes); figures not meaningful")
    parser.add_argument("--dims", choices=("2d", "3d"), default="2d",
                        help="3d: softseg predict on NIfTI volumes against MONAI's sliding_window_inference "
                             "(benchmarks/bench3d.py; --images volumes, --rounds)")
    import bench3d

    bench3d.add_arguments(parser, predict=True)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.images, args.rounds = [64], 4, 1
    if args.dims == "3d":
        if args.quick:
            args.volume, args.patch, args.filters, args.images = (48, 48, 16), (32, 32, 8), 8, 2
        args.count, args.batch, args.copies = args.images, 2, 3
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        return bench3d.predict_3d(args)

    import torch

    from softseg.inference import BATCH_SIZE
    from softseg.model.runtime import resolve_precision

    batch_size = args.batch_size or BATCH_SIZE

    if args.threads:
        torch.set_num_threads(args.threads)
    from softseg.model.runtime import keep_freed_memory

    # softseg's load_run sets this for its process; set here it applies to both sides alike
    keep_freed_memory()
    precision = resolve_precision(args.precision, torch.device(args.device))
    print(f"device {args.device}, precision {precision}, torch threads {torch.get_num_threads()}, "
          f"{args.images} {args.format} images per size, medians of {args.rounds} interleaved rounds")
    with tempfile.TemporaryDirectory(prefix="softseg-bench-") as tmp:
        root = Path(tmp)
        run = make_run(root, precision)
        for size in args.sizes:
            folder = root / f"images{size}" / "images"
            make_images(folder, size, args.images, args.format)
            warm = root / f"warm{size}"
            warm.mkdir()
            for path in image_files(folder)[:2]:
                (warm / path.name).write_bytes(path.read_bytes())
            models = {"checkpoint": checkpoint_model(run, args.device),
                      "folded": inference_model(run, args.device)}
            inputs = prepared_inputs(folder, precision, args.device)
            for model, model_precision in models.values():  # warm-up: kernels, caches
                bare_seconds(model, model_precision, inputs[:2], args.device)
            predict_seconds(run, warm, root / f"warm-out{size}", args.device, batch_size)
            seconds: dict[str, list[float]] = {}
            for round_ in range(args.rounds):
                timings = {
                    name: bare_seconds(model, model_precision, inputs, args.device)
                    for name, (model, model_precision) in models.items()
                }
                for batch in (1, batch_size):
                    timings[f"predict{batch}"] = predict_seconds(
                        run, folder, root / f"out{size}-{batch}-{round_}", args.device, batch)
                for name, value in timings.items():
                    seconds.setdefault(name, []).append(value)

            def rate(name: str) -> float:
                return args.images / statistics.median(seconds[name])

            def ratio(name: str, reference: str) -> float:
                return statistics.median(
                    ref / s for s, ref in zip(seconds[name], seconds[reference]))

            print(f"{size}x{size}: bare model(x) one image per call {rate('checkpoint'):.2f} img/s "
                  f"(checkpoint's model), {rate('folded'):.2f} img/s (softseg's folded model); "
                  f"softseg predict {rate('predict1'):.2f} img/s at batch 1, "
                  f"{rate(f'predict{batch_size}'):.2f} img/s at batch {batch_size} "
                  f"({load_seconds(run, args.device):.2f} s of each call loads the model)")
            print(f"ratio {size}x{size} softseg predict (batch 1) / bare loop: "
                  f"{ratio('predict1', 'checkpoint'):.3f}")
            print(f"ratio {size}x{size} softseg predict (batch {batch_size}, its default) / bare "
                  f"loop: {ratio(f'predict{batch_size}', 'checkpoint'):.3f}")
            print(f"ratio {size}x{size} softseg predict (batch {batch_size}) / bare loop over the "
                  f"same folded model (files and pipeline only): "
                  f"{ratio(f'predict{batch_size}', 'folded'):.3f}")

if __name__ == "__main__":
    main()
