"""``softseg demo``: synthetic data -> train -> predict -> evaluate -> HTML report, in minutes.

Composes demo data, train, predict, evaluate and report (the steps of
:mod:`softseg.experiments.pipeline`) and computes nothing itself.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

from tqdm import tqdm

from softseg.experiments import pipeline as steps
from softseg.files import prepare_out_dir, write_json_atomic
from softseg.model.config import resolve_config


@dataclass(frozen=True)
class DemoSettings:
    """The demo's scaled-down protocol: smaller images, crops and fewer epochs than the paper
    (150 epochs, 256-pixel crops, ImageNet encoder), everything else as in the paper; or,
    with ``dims`` "3d", the 3D mode on synthetic volumes (:data:`DEMO_3D`)."""

    seed: int = 0
    epochs: int = 40
    image_size: int = 96
    crop_size: int = 64
    batch_size: int = 8
    aug_copies: int = 3
    n_train: int = 24
    n_val: int = 6
    dataset: str = "demo-shapes"  # of demo_data.DEMO_DATASETS: 1 channel, 2 tasks, 5 raters
    encoder_weights: str = "none"  # the demo runs offline and from scratch
    device: str = "auto"
    # the 3D demo (dims "3d", :data:`DEMO_3D`): volumes image_size^2 x slices, the 3D U-Net
    # on patch_size patches with base_filters channels at full resolution
    dims: str = "2d"
    slices: int = 20
    patch_size: tuple[int, int, int] = (32, 32, 16)
    base_filters: int = 8


# The 3D demo: the QUBIQ-pancreas-like volumes of demo-data --dims 3d (64 x 64 x 20 voxels of
# 0.8 x 0.8 x 2.5 mm, 2 raters), nnU-Net's batch of 2 (8 patches with the growing batch) and a
# network 4 times narrower than nnU-Net's, so that it trains on 2 CPU cores in minutes.
DEMO_3D = DemoSettings(dims="3d", epochs=100, image_size=64, slices=20, batch_size=2, n_train=12, n_val=4,
                       dataset="demo-pancreas", patch_size=(32, 32, 16), base_filters=8)


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its outputs, its headline numbers per task and timings (seconds)."""

    out: Path
    report: Path
    run: Path
    eval_dir: Path
    headline: Mapping[str, Mapping[str, float]]  # task -> qubiq, dice_0.5, ece, ged2
    seconds: Mapping[str, float]

    def text(self) -> str:
        """The command's printed result."""
        lines = [f"report: {self.report}", "task     QUBIQ   Dice@0.5  ECE      GED²"]
        for task, h in self.headline.items():
            lines.append(
                f"{task:8s} {h['qubiq']:.3f}   {h['dice_0.5']:.3f}     {h['ece']:.4f}   {h['ged2']:.4f}"
            )
        lines.append("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items()))
        return "\n".join(lines)


DEMO_OUTPUTS = ("data", "run", "predictions", "eval", "report.html", "report_files", "demo.json")


def demo(out: Path, settings: DemoSettings = DemoSettings(), *, overwrite: bool = False, progress: bool = True) -> DemoResult:
    """Synthetic data -> train -> predict -> evaluate -> HTML report, into ``out``::

        OUT/data/                 the synthetic release (demo_data), QUBIQ layout
        OUT/run/seed<S>/          the trained run
        OUT/predictions/          Validation probability maps
        OUT/eval/                 evaluation folder
        OUT/report.html           the report (figures in OUT/report_files/)
        OUT/demo.json             settings, headline numbers and timings

    A non-empty ``out`` is refused unless ``overwrite``, which removes only the entries above.
    """
    from softseg.data import synthetic as demo_data
    from softseg.report import build as report
    from softseg.data.datasets import load_dataset

    out = Path(out)
    if overwrite and out.is_dir():
        for name in DEMO_OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out = prepare_out_dir(out, overwrite=overwrite, resume=None, what="demo")
    seconds: dict[str, float] = {}
    bar = tqdm(total=5, desc="demo", unit="step", disable=not progress)

    def step(name: str) -> None:
        bar.set_postfix_str(name)
        seconds[name] = time.perf_counter()

    def done(name: str) -> None:
        seconds[name] = time.perf_counter() - seconds[name]
        bar.update(1)

    step("data")
    if settings.dims == "3d":
        from softseg.data.synthetic3d import write_demo_volumes

        write_demo_volumes(out / "data", seed=settings.seed, n_train=settings.n_train, n_val=settings.n_val,
                           n_test=0, shape=(settings.image_size, settings.image_size, settings.slices))
    else:
        demo_data.write_demo_dataset(
            out / "data", seed=settings.seed, size=settings.image_size, n_train=settings.n_train,
            n_val=settings.n_val, n_test=0,
        )
    dataset = load_dataset(out / "data" / settings.dataset, layout="qubiq", splits=("Training", "Validation"))
    train_ids = [c.case_id for c in dataset.cases if c.split == "Training"]
    val_ids = [c.case_id for c in dataset.cases if c.split == "Validation"]
    done("data")

    step("train")
    config = resolve_config(None, None, {
        "epochs": settings.epochs, "crop_size": settings.crop_size, "encoder_weights": settings.encoder_weights,
        "device": settings.device, "batch_size": settings.batch_size, "aug_copies": settings.aug_copies,
        **({"dims": "3d", "patch_size": settings.patch_size, "base_filters": settings.base_filters}
           if settings.dims == "3d" else {}),
    }).replace(seed=settings.seed)
    run_dir = steps.train_or_resume(config, dataset, out / "run" / f"seed{settings.seed}", train_ids, val_ids,
                                    progress=progress)
    done("train")

    step("predict")
    steps.predict_cases([run_dir], dataset.select(case_ids=val_ids).cases, out / "predictions", progress=progress)
    done("predict")

    step("evaluate")
    eval_dir = steps.evaluate_predictions(out / "predictions", dataset, val_ids, out / "eval",
                                          progress=progress)
    done("evaluate")

    step("report")
    html = report.write_report(eval_dir, out / "report.html", run=run_dir)
    done("report")
    bar.close()

    evaluation = steps.read_summary(eval_dir)
    headline = {}
    for task in dataset.tasks:
        values = steps.task_values(evaluation, task)
        headline[task] = {
            "qubiq": values["qubiq"][0],
            "dice_0.5": values.get("dice_at_0.5", (float("nan"),))[0],
            "ece": values["ece"][0],
            "ged2": values.get("ged2", (float("nan"),))[0],
        }
    result = DemoResult(out, html, run_dir, eval_dir, headline, seconds)
    write_json_atomic(out / "demo.json", {
        "settings": asdict(settings), "headline": headline, "seconds": seconds,
        "report": str(html), "run": str(run_dir), "eval": str(eval_dir),
    })
    return result
