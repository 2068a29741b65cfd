"""Training throughput: softseg's step against a bare PyTorch loop, in one process, side by side.

softseg's step (``softseg.training.loop.train_step``) includes everything a real step does:
drawing the batch, random crops from pre-loaded normalised images, the growing batch with
augmentation on the model's device, forward, soft cross-entropy, backward, Adam with the
per-step cosine learning rate. The bare loop is the textbook loop over the same smp U-Net
(EfficientNet-B0, decoder 256..16) on one fixed pre-made batch of the same size: forward,
BCE-with-logits, backward, Adam step; no augmentation, no data.

Both see ``batch * (1 + copies)`` samples of ``size x size`` per step (8 -> 32 by default).
Configurations are measured in interleaved rounds so machine load affects them alike. Both
loops run with malloc keeping freed memory (:func:`softseg.model.runtime.keep_freed_memory`,
which ``softseg train`` sets for its process): with glibc's defaults both were measured
1.4-2x slower, from page faults that come and go with where allocations land.

Targets on a 2-core AVX-512 CPU at 256 x 256: softseg >= 0.9x the bare loop at the same
precision; softseg's CPU default (bf16 autocast + channels_last) >= 2x the bare fp32 loop.

    python benchmarks/train_throughput.py            # full: 256 px, a few minutes on 2 cores
    python benchmarks/train_throughput.py --quick    # smoke run: 64 px, 1 step, seconds
    python benchmarks/train_throughput.py --dims 3d --rounds 2 --steps 2 --warmup 1   # see bench3d.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def softseg_step(precision: str, args):
    """A closure running one softseg training step (batch of ``args.batch`` originals)."""
    from _runs import disc_cases
    from softseg import TrainConfig
    from softseg.training import train as train_module
    from softseg.training.batches import prepare
    from softseg.training.distributed import Dist
    from softseg.training.loop import train_step

    config = TrainConfig(
        tasks=("task01",), in_channels=1, epochs=1000, batch_size=args.batch, aug_copies=args.copies,
        crop_size=args.size, encoder_weights="none", precision=precision, device="cpu",
    )
    data = prepare(disc_cases(args.batch * 2, args.size), config)
    state = train_module._build_state(config, torch.device("cpu"), Dist(), len(data.images), False)
    state.wrapped.train()
    order = list(range(len(data.images)))

    def step():
        start = (state.step * args.batch) % len(order)
        train_step(state, data, order[start : start + args.batch])

    return step


def bare_step(precision: str, args):
    """The textbook loop on the same smp model, one fixed batch, no augmentation."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = smp.Unet("efficientnet-b0", encoder_weights=None, in_channels=1, classes=1,
                     decoder_channels=(256, 128, 64, 32, 16))
    n = args.batch * (1 + args.copies)
    x = torch.randn(n, 1, args.size, args.size)
    y = (torch.rand(n, 1, args.size, args.size) > 0.5).float()
    if precision == "bf16":  # the usual recipe for fast bf16 on a CPU
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        if precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(x)
        else:
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        loss.backward()
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="originals per step (grows by copies)")
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measuring rounds")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration and round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run in seconds: 64 px, batch 2, 1 round of 1 step (3d: tiny patches); "
                             "figures not meaningful")
    parser.add_argument("--dims", choices=("2d", "3d"), default="2d",
                        help="3d: softseg's 3D step against a bare loop over the same DynUNet "
                             "(benchmarks/bench3d.py; --batch defaults to 2 there)")
    import bench3d

    bench3d.add_arguments(parser, predict=False)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.batch, args.rounds, args.steps, args.warmup = 64, 2, 1, 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dims == "3d":
        if args.batch == parser.get_default("batch"):
            args.batch = 2
        if args.quick:
            args.volume, args.patch, args.filters = (48, 48, 16), (32, 32, 8), 8
        return bench3d.train_3d(args)

    from softseg.model.runtime import cpu_supports_bf16, keep_freed_memory, resolve_precision

    # softseg's train sets this for its process; set here it applies to both loops alike
    keep_freed_memory()
    default = resolve_precision("auto", torch.device("cpu"))
    n = args.batch * (1 + args.copies)
    print(f"# {args.size}x{args.size}, {n} samples per step ({args.batch} + {args.copies} copies each), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU bf16: {cpu_supports_bf16()}, "
          f"softseg CPU default precision: {default}")
    configs = {"bare fp32": bare_step("fp32", args), "softseg fp32": softseg_step("fp32", args)}
    if cpu_supports_bf16():
        configs["bare bf16"] = bare_step("bf16", args)
        configs["softseg bf16"] = softseg_step("bf16", args)
    for step in configs.values():
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, step in configs.items():
            for _ in range(args.steps):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    speed = {name: n / statistics.median(t) for name, t in times.items()}
    for name, value in speed.items():
        print(f"{name:14s} {value:8.2f} images/s  (median of {len(times[name])} steps)")
    print(f"ratio softseg/bare same precision fp32: {speed['softseg fp32'] / speed['bare fp32']:.2f}")
    if "softseg bf16" in speed:
        print(f"ratio softseg/bare same precision bf16: {speed['softseg bf16'] / speed['bare bf16']:.2f}")
    print(f"ratio softseg default ({default}) / bare fp32: "
          f"{speed[f'softseg {default}'] / speed['bare fp32']:.2f}")


if __name__ == "__main__":
    main()
