"""softseg: segmentation from multi-rater soft labels, one calibrated probability map per image.

The public API: everything a Python user needs is importable from here, and ``__all__`` lists
it. The data flow reads in this order::

    data = softseg.load_dataset("data/bubil")                     # files -> cases
    soft = softseg.soft_label(data.cases[0], "task01")             # cases -> soft labels
    run = softseg.train(softseg.TrainConfig(epochs=40), data, "runs/m/seed0", train_ids, val_ids)
    runs = [softseg.load_run(r) for r in softseg.find_runs("runs/m")]
    probs = softseg.predict_images(runs, [c.image for c in data.cases])   # arrays in, arrays out
    softseg.predict_folder(["runs/m"], "new_images", "preds")              # files in, files out
    result = softseg.evaluate("preds", "data/bubil", "eval")               # a typed result
    softseg.write_report("eval", "report.html")

Names are loaded on first use, so ``import softseg`` (and the command line's ``--help``) does
not pay for importing torch. Library calls change nothing process-wide; the command line
additionally calls :func:`keep_freed_memory` (glibc malloc tuning, 20-40 % faster CPU training
and prediction), which Python users may call themselves.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (one definition each; nothing is re-implemented here)
_EXPORTS = {
    # errors
    "SoftsegError": "softseg.errors",
    "DatasetError": "softseg.errors",
    # data: files -> cases -> soft labels
    "Case": "softseg.data.cases",
    "Dataset": "softseg.data.cases",
    "CaseQuery": "softseg.data.cases",
    "load_dataset": "softseg.data.datasets",
    "scan_dataset": "softseg.data.datasets",
    "find_qubiq_datasets": "softseg.data.datasets",
    "check_dataset": "softseg.data.check",
    "soft_label": "softseg.data.labels",
    "soft_variance": "softseg.data.labels",
    "majority_label": "softseg.data.labels",
    "random_rater_label": "softseg.data.labels",
    "write_soft_labels": "softseg.data.labels",
    "write_demo_dataset": "softseg.data.synthetic",
    # the model core: configuration, the run's mode and output head
    "TrainConfig": "softseg.model.config",
    "preset": "softseg.model.config",
    "resolve_config": "softseg.model.config",
    "mode_of": "softseg.model.modes",
    "head_of": "softseg.model.heads",
    # training: configuration -> run folder
    "split_ids": "softseg.training.batches",
    "train": "softseg.training.train",
    "keep_freed_memory": "softseg.model.runtime",
    # inference: run folder + images -> probability maps
    "find_runs": "softseg.inference.runs",
    "load_run": "softseg.inference.runs",
    "LoadedRun": "softseg.inference.runs",
    "predict_images": "softseg.inference.arrays",
    "predict_folder": "softseg.inference.predict",
    "RunOptions": "softseg.inference",
    "PredictOutputs": "softseg.inference.outputs",
    "calibrate": "softseg.inference.calibration",
    "choose_threshold": "softseg.inference.thresholds",
    "export_onnx": "softseg.inference.export",
    # evaluation: maps + dataset -> a typed result
    "evaluate": "softseg.evaluation.evaluate",
    "read_result": "softseg.evaluation.result",
    "EvaluationResult": "softseg.evaluation.result",
    # report: result -> HTML
    "write_report": "softseg.report.build",
    # experiments: compositions
    "demo": "softseg.experiments.demo",
    "DemoSettings": "softseg.experiments.demo",
    "compare": "softseg.experiments.compare.composition",
    "CompareOptions": "softseg.experiments.compare.composition",
    "reproduce": "softseg.experiments.reproduce",
    "ReproduceOptions": "softseg.experiments.reproduce",
    "patient_map": "softseg.experiments.folds",
    "make_folds": "softseg.experiments.folds",
    "prepare_folds": "softseg.experiments.folds",
    "read_manifest": "softseg.experiments.folds",
}

# public name -> module exported whole (the metric functions, each with its conventions)
# (and the file formats: reading images, masks and maps, writing maps in a source geometry)
_MODULES = {"metrics": "softseg.evaluation.metrics", "io": "softseg.data.io"}

__all__ = ["__version__", *_EXPORTS, *_MODULES]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'softseg' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
