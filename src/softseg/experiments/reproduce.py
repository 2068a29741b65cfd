"""``softseg reproduce``: the paper's protocol on a QUBIQ 2021 release, Tables 2 and 3 beside
the paper's values.

A composition of the library's steps (:mod:`softseg.experiments.pipeline`: train -> predict
-> evaluate -> read the result); nothing here trains, predicts or measures by itself. Every
finished step leaves a file that a rerun with ``resume=True`` skips over, and an interrupted
training resumes from its last checkpoint.

Conventions stated in the outputs:

* Evaluation uses each run's **last** checkpoint (the paper's fixed cosine schedule), never
  one chosen on the evaluated cases.
* Over seeds, a table cell is the mean ± population std of the per-seed values; the paper's
  ``±`` is the spread over thresholds (Table 2) or cases (Table 3) of one run, which is kept
  as ``ours_spread`` in the CSV/JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

from tqdm import tqdm

from softseg.data import io
from softseg.data.cases import Dataset
from softseg.errors import SoftsegError
from softseg.experiments import pipeline as steps
from softseg.experiments.paper import QUBIQ_TASKS, QubiqTask, select_tasks
from softseg.experiments.qubiq_release import locate_all
from softseg.experiments.cells import Cell, cells
from softseg.experiments.paper_tables import write_paper_tables
from softseg.files import prepare_out_dir, write_json_atomic
from softseg.model.config import TrainConfig, resolve_config

__all__ = ["reproduce", "ReproduceOptions"]

RESULT_FILE = "result.json"


@dataclass(frozen=True)
class ReproduceOptions:
    """How far to scale the paper's protocol down. ``None`` keeps each preset's value."""

    tasks: tuple[str, ...] = ()  # task keys or dataset names; empty = all seven
    seeds: tuple[int, ...] = steps.SEEDS
    epochs: int | None = None
    crop_size: int | None = None
    encoder_weights: str | None = None  # "imagenet" (the preset's), "none" or a file
    device: str | None = None
    config_file: Path | None = None  # YAML of TrainConfig settings applied over every preset


def _reproduce_config(task: QubiqTask, seed: int, options: ReproduceOptions) -> TrainConfig:
    given = {
        "epochs": options.epochs,
        "crop_size": options.crop_size,
        "encoder_weights": options.encoder_weights,
        "device": options.device,
    }
    config = resolve_config(task.key, options.config_file, given)
    return config.replace(seed=seed, label_mode="soft", loss="ce", tasks=(task.task,))


def _qubiq_dataset(found: Mapping[str, Path], task: QubiqTask) -> Dataset:
    """The Training and Validation cases of one QUBIQ dataset, with only ``task`` loaded."""
    from softseg.data.datasets import load_dataset

    parts = [
        load_dataset(found[split], layout="qubiq", tasks=(task.task,), splits=(split,)).select(split=split)
        for split in ("Training", "Validation")
    ]
    train, val = parts
    clash = sorted({c.case_id for c in train.cases} & {c.case_id for c in val.cases})
    if clash:
        raise SoftsegError(
            f"{found['Validation']}: Validation case ids {clash[:5]} repeat Training ones in "
            f"{found['Training']}; the official release numbers Validation cases after Training"
        )
    for name, part in (("Training", train), ("Validation", val)):
        if not part.cases:
            raise SoftsegError(f"{found[name]}/{name}: no cases found for {task.key}")
    return Dataset(train.root, train.name, train.layout, (task.task,), train.cases + val.cases)


def reproduce(
    root: Path, out: Path, options: ReproduceOptions = ReproduceOptions(), *, resume: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """The paper's protocol on a QUBIQ 2021 release under ``root``, written to ``out``.

    For each task: one soft-label model per seed (the task's preset), trained on the official
    Training split, predicting and evaluated on the official Validation split; then Tables 2
    and 3 beside the paper's values (``tables.md``/``.csv``/``.json``). Folder layout::

        OUT/<task>/seed<S>/               the run (model.find_runs(OUT/<task>) lists the seeds)
        OUT/<task>/predictions/seed<S>/   Validation probability maps
        OUT/<task>/eval/seed<S>/          evaluation folder
        OUT/<task>/result.json            per-seed values; present = task finished

    With ``resume`` a finished task is skipped and a half-finished one continues; without it
    a non-empty ``out`` is refused. The tables also keep tasks finished in ``out`` by earlier
    invocations (e.g. one ``--tasks`` at a time). Returns the paths of the three table files.
    """
    tasks = select_tasks(list(options.tasks))
    seeds = steps.check_seeds(options.seeds)
    found = locate_all(Path(root), list(dict.fromkeys(t.dataset for t in tasks)))
    out = prepare_out_dir(Path(out), overwrite=None, resume=resume, what="reproduce")
    write_json_atomic(out / "reproduce.json", {
        "root": str(Path(root).resolve()), **asdict(options), "seeds": seeds,
        "config_file": None if options.config_file is None else str(Path(options.config_file).resolve()),
    })
    results: dict[str, dict[str, Cell]] = {}
    for task in tqdm(tasks, desc="reproduce", unit="task"):
        task_dir = out / task.key
        result = steps.load_result(task_dir / RESULT_FILE)
        if result is None or result.get("seeds") != list(seeds):
            result = _reproduce_task(found[task.dataset], task, task_dir, seeds, options, progress)
        results[task.label] = cells(list(result["per_seed"].values()))
    # tasks finished by earlier invocations into the same folder stay in the tables
    for task in QUBIQ_TASKS:
        earlier = steps.load_result(out / task.key / RESULT_FILE) if task.label not in results else None
        if earlier is not None:
            results[task.label] = cells(list(earlier["per_seed"].values()))
    note = (
        f"Ours: mean ± population std over seeds of each seed's value (seeds {list(seeds)} in this "
        "invocation; n_seeds per row in tables.csv) "
        "(trained on the official Training split, evaluated on the official Validation split, last "
        "checkpoint). Paper: mean ± std over thresholds (Table 2) or cases (Table 3). "
        "Δ = ours − paper, in the table's units. HD95: maximum of the two directed 95th percentiles."
    )
    if options.epochs is not None or options.crop_size is not None or options.config_file is not None:
        note += (
            f" Changed from the paper's settings: epochs={options.epochs or 'preset'}, "
            f"crop={options.crop_size or 'preset'}, settings file {options.config_file}."
        )
    paths = write_paper_tables(out, results, note)
    return {p.suffix.lstrip("."): p for p in paths}


def _reproduce_task(
    found: Mapping[str, Path], task: QubiqTask, task_dir: Path, seeds: Sequence[int], options: ReproduceOptions,
    progress: bool = True,
) -> dict:
    dataset = _qubiq_dataset(found, task)
    train_ids = [c.case_id for c in dataset.cases if c.split == "Training"]
    val_ids = [c.case_id for c in dataset.cases if c.split == "Validation"]
    per_seed = {}
    for seed in seeds:
        run_dir = task_dir / f"seed{seed}"
        pred_dir, eval_dir = task_dir / "predictions" / f"seed{seed}", task_dir / "eval" / f"seed{seed}"
        if not (eval_dir / "summary.json").is_file():
            if not (pred_dir / io.PREDICTIONS_FILE).is_file():
                steps.train_or_resume(_reproduce_config(task, seed, options), dataset, run_dir, train_ids,
                                      val_ids, progress=progress)
                steps.predict_cases([run_dir], dataset.select(case_ids=val_ids).cases, pred_dir,
                                    progress=progress)
            steps.evaluate_predictions(pred_dir, dataset, val_ids, eval_dir, progress=progress)
        per_seed[str(seed)] = steps.task_values(steps.read_summary(eval_dir), task.task)
    result = {"task": task.key, "label": task.label, "seeds": list(seeds), "per_seed": per_seed}
    write_json_atomic(task_dir / RESULT_FILE, result)
    return result
