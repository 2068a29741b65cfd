"""Peak memory (RSS) of the 3D mode: training at a patch, predicting a large volume.

Each measurement runs in its own child process, which reports its own peak RSS
(``resource.getrusage``), so one measurement cannot inflate the next:

* train: ``--steps`` steps of softseg's 3D training step (the growing batch 2 -> 8 patches of
  ``--patch``, DynUNet with ``--filters`` base filters, fp32, Adam) on two volumes of
  ``--train-volume``; run it at two volume sizes to see that the step's memory follows the
  patch and only the data in memory follow the volume;
* baseline: the imports alone, which both of the others include;
* predict: ``softseg predict`` on one NIfTI volume of ``--predict-volume`` (int16 on disk)
  with sliding windows of ``--patch`` (overlap 0.5, Gaussian), writing its probability map,
  with a run folder that ``softseg train`` wrote beforehand in another child process
  (``benchmarks/_runs.py``), so that writing it does not count.

    python benchmarks/memory3d.py                                  # defaults below
    python benchmarks/memory3d.py --train-volume 256 256 96        # a larger training volume
    python benchmarks/memory3d.py --quick                          # smoke run: tiny sizes, seconds
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, {bench!r})
import bench3d
args = type("A", (), json.loads({args!r}))()
start = time.perf_counter()
if args.what == "baseline":  # the imports both measurements pay
    import monai.inferers, softseg.inference.predict, softseg.training.loop
elif args.what == "train":
    step = bench3d.softseg_step(args)
    for _ in range(args.steps):
        step()
elif args.what == "run":  # not measured: the run folder the predict child loads
    bench3d._write_run(Path(args.root), args)
else:
    from _runs import predict
    from softseg import io
    root = Path(args.root)
    (root / "in").mkdir()
    rng = np.random.default_rng(0)
    io.write_array(root / "in" / "v.nii.gz", rng.integers(-100, 200, args.volume, dtype=np.int16))
    predict(root / "run" / "seed0", root / "in", root / "out")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"peak_mib": peak, "seconds": time.perf_counter() - start}}))
"""


def measure(what: str, volume, args, root: Path | None = None) -> dict:
    settings = {"what": what, "volume": list(volume), "patch": list(args.patch), "filters": args.filters,
                "batch": 2, "copies": 3, "steps": args.steps, "root": str(root)}
    code = _CHILD.format(bench=str(Path(__file__).parent), args=json.dumps(settings))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"memory3d: the {what} child failed (exit {done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patch", type=int, nargs=3, default=(96, 96, 32), help="patch and window (the CPU default budget)")
    parser.add_argument("--filters", type=int, default=32, help="DynUNet base filters (nnU-Net: 32)")
    parser.add_argument("--steps", type=int, default=2, help="training steps measured")
    parser.add_argument("--train-volume", type=int, nargs=3, default=(160, 160, 48))
    parser.add_argument("--predict-volume", type=int, nargs=3, default=(512, 512, 100))
    parser.add_argument("--only", choices=("train", "predict"), help="measure one of the two")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run in seconds: patch 32x32x8, 8 filters, 1 step, 48x48x16 and 64x64x16 "
                             "volumes; figures not meaningful")
    args = parser.parse_args(argv)
    if args.quick:
        args.patch, args.filters, args.steps = (32, 32, 8), 8, 1
        args.train_volume, args.predict_volume = (48, 48, 16), (64, 64, 16)
    print(f"# patch/window {tuple(args.patch)}, DynUNet base {args.filters} filters, fp32, CPU")
    print(f"peak RSS baseline (python, torch, MONAI, softseg imported): {measure('baseline', (1, 1, 1), args)['peak_mib']:.0f} MiB")
    if args.only != "predict":
        r = measure("train", args.train_volume, args)
        data_mib = 2 * 2 * 4 * __import__("math").prod(args.train_volume) / 2**20  # image + label, float32
        print(f"peak RSS train: {r['peak_mib']:.0f} MiB ({args.steps} steps, 2 volumes {tuple(args.train_volume)}: "
              f"{data_mib:.0f} MiB of data in memory; {r['seconds']:.0f} s)")
    if args.only != "train":
        with tempfile.TemporaryDirectory(prefix="softseg-memory3d-") as tmp:
            measure("run", args.patch, args, Path(tmp))
            r = measure("predict", args.predict_volume, args, Path(tmp))
        print(f"peak RSS predict: {r['peak_mib']:.0f} MiB (one volume {tuple(args.predict_volume)}; "
              f"{r['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
