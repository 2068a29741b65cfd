"""Inference speed: `softseg predict` (files in, files out) against a bare ``model(x)`` loop.

For each image size, the same N grey PNG images are predicted twice with the same untrained
U-Net (EfficientNet-B0, the paper's model; weights do not change the speed):

* bare: the images already in memory, normalised, padded and in the model's memory format;
  only ``model(x)`` is timed, one image per call, under the precision softseg picks on this
  machine (bf16 + channels_last on a CPU with bf16, AMP on a GPU, else fp32);
* softseg: :func:`softseg.predict.predict` on the folder, timed as a whole: loading the
  model (reported on its own line too), reading the PNGs, normalising, padding, the model,
  sigmoid, cropping, and writing 16-bit PNG probability maps plus a 0.5 mask.

It prints images per second for both and one line per size that starts with ``ratio``
(softseg / bare; the target is at least 0.9). Writing runs on a background thread, so the
ratio depends on a core being free for it. The untrained model's maps are near 0.5 with
noise in the low bits, the worst case for writing (at 480x480 such a map takes about 5 ms
to write, its 0.5 mask 3 ms; a smooth trained-looking map under 1 ms), so the ratio measured
here is on the low side. softseg is measured at batch 1, as the bare loop, and at its default
batch size. Run it on an idle machine::

    python benchmarks/predict_speed.py                 # 256x256 and 480x480, 64 images each
    python benchmarks/predict_speed.py --quick         # smoke run: 64x64, 4 images
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_run(root: Path, precision: str) -> Path:
    import torch

    from softseg.config import TrainConfig, save_config, to_dict
    from softseg.model import model_from_config, save_checkpoint

    config = TrainConfig(tasks=("task01",), in_channels=1, encoder_weights="none",
                         precision=precision)
    torch.manual_seed(0)
    model = model_from_config(config)
    run = root / "run" / "seed0"
    (run / "checkpoints").mkdir(parents=True)
    save_config(config, run / "config.json")
    save_checkpoint({"model": model.state_dict(), "config": to_dict(config)},
                    run / "checkpoints" / "best.pt")
    return run


def make_images(folder: Path, size: int, count: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(size)
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(count):
        centre = rng.uniform(0.3, 0.7, 2) * size
        blob = np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (0.05 * size**2))
        pixels = np.clip(200 * blob + rng.normal(30, 10, blob.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:03d}.png")


def bare_loop(run: Path, folder: Path, device: str, repeats: int) -> float:
    """Images per second of ``model(x)`` alone, inputs prepared beforehand."""
    import torch

    from softseg import io
    from softseg._train_runtime import autocast, memory_format, resolve_precision
    from softseg.model import load_run
    from softseg.transforms import normalize, pad_to_multiple

    loaded = load_run(run, device=device)
    precision = resolve_precision(loaded.config.precision, loaded.device)
    fmt = memory_format(precision, loaded.device)
    inputs = [
        pad_to_multiple(normalize(io.read_image(path)[0]).to(loaded.device))[None].contiguous(
            memory_format=fmt)
        for path in sorted(folder.glob("*.png"))
    ]
    best = float("inf")
    with torch.no_grad():
        for x in inputs[:2]:  # warm-up: kernels picked, caches filled
            with autocast(precision, loaded.device):
                loaded.model(x)
        for _ in range(repeats):
            if loaded.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for x in inputs:
                with autocast(precision, loaded.device):
                    y = loaded.model(x)
            if loaded.device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
            del y
    return len(inputs) / best


def softseg_predict(run: Path, folder: Path, out_root: Path, device: str, repeats: int,
                    batch_size: int) -> float:
    """Images per second of the whole `softseg predict` call, files in and out."""
    from softseg.predict import predict

    count = len(list(folder.glob("*.png")))
    # warm-up on two images, as the bare loop gets
    warm = folder.parent / "warm"
    warm.mkdir(exist_ok=True)
    for path in sorted(folder.glob("*.png"))[:2]:
        (warm / path.name).write_bytes(path.read_bytes())
    predict([run], warm, out_root / "warm", device=device, progress=False)
    best = float("inf")
    for repeat in range(repeats):
        start = time.perf_counter()
        predict([run], folder, out_root / f"out{repeat}", masks=[0.5], device=device,
                batch_size=batch_size, progress=False)
        best = min(best, time.perf_counter() - start)
    return count / best


def load_seconds(run: Path, device: str) -> float:
    """Seconds :func:`softseg.predict.load_models` takes: a one-off cost of every predict call."""
    from softseg.predict import load_models

    start = time.perf_counter()
    load_models([run], device=device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 480])
    parser.add_argument("--images", type=int, default=64,
                        help="images per size (default 64; the model is loaded once per call)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, best kept")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="softseg's images per step (default: predict's own default); "
                             "softseg is also measured at 1, as the bare loop")
    parser.add_argument("--precision", default="auto", help="auto (default), fp32, bf16, amp")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64x64, 4 images, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.images, args.repeats = [64], 4, 1

    import inspect

    import torch

    from softseg._train_runtime import resolve_precision
    from softseg.predict import predict

    batch_size = args.batch_size or inspect.signature(predict).parameters["batch_size"].default

    if args.threads:
        torch.set_num_threads(args.threads)
    precision = resolve_precision(args.precision, torch.device(args.device))
    print(f"device {args.device}, precision {precision}, torch threads {torch.get_num_threads()}, "
          f"{args.images} images per size, best of {args.repeats}")
    with tempfile.TemporaryDirectory(prefix="softseg-bench-") as tmp:
        root = Path(tmp)
        run = make_run(root, precision)
        for size in args.sizes:
            folder = root / f"images{size}" / "images"
            make_images(folder, size, args.images)
            bare = bare_loop(run, folder, args.device, args.repeats)
            single = softseg_predict(run, folder, root / f"pred{size}-1", args.device,
                                     args.repeats, 1)
            full = softseg_predict(run, folder, root / f"pred{size}", args.device, args.repeats,
                                   batch_size)
            print(f"{size}x{size}: bare model(x) one image per call {bare:.2f} img/s; softseg "
                  f"predict {single:.2f} img/s at batch 1, {full:.2f} img/s at batch {batch_size} "
                  f"({load_seconds(run, args.device):.2f} s of each call loads the model)")
            print(f"ratio {size}x{size} softseg predict (batch 1) / bare loop: {single / bare:.3f}")
            print(f"ratio {size}x{size} softseg predict (batch {batch_size}, its default) / bare loop: "
                  f"{full / bare:.3f}")


if __name__ == "__main__":
    main()
