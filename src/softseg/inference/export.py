"""ONNX export of a trained run (or a folder of seeds, averaged in one graph).

The exported graph maps a *prepared* image batch to probabilities:

* input ``image``: ``(N, C, H, W)`` float32, each image z-scored per channel (mean 0,
  population std 1; a constant channel becomes 0), resized to the run's ``resize`` if it was
  trained with one, then zero-padded at the bottom/right to multiples of 32. N, H and W are
  dynamic axes.
* output ``probability``: ``(N, T, H, W)`` float32 in [0, 1], one channel per task in the
  run's task order: the sigmoid of the logits (divided by each seed's fitted temperature
  per task where it has a ``temperature.json``, as ``softseg predict`` does), averaged over
  the seeds. Crop back with ``[..., :h, :w]`` (and undo the resize) to get the source grid.

Preprocessing stays outside the graph on purpose: the statistics of the z-score must be
taken over the image before padding, exactly as :mod:`softseg.inference.arrays` does. A sidecar JSON
(``<onnx name without .onnx>.json``) records tasks, channels, normalisation, padding, resize
the temperatures inside the graph and the run's operating threshold so a deployment can
reproduce every step.

The TorchScript-based exporter of ``torch.onnx`` is used (``dynamo=False``): the newer
exporter needs the ``onnxscript`` package, which softseg does not depend on.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from softseg import __version__
from softseg.files import atomic_path, write_json_atomic
from softseg.errors import SoftsegError
from softseg.inference import RunOptions
from softseg.model.heads import Head, SigmoidTasks, head_of
from softseg.model.modes import mode_of

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "probability"
DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 11, 20  # Resize as the U-Net needs it .. the TorchScript exporter's maximum
TOLERANCE = 1e-4


class ProbabilityEnsemble(nn.Module):
    """Mean over models of their head's probabilities of ``model(x) / T``: ``(N, C, H, W)`` ->
    ``(N, K, H, W)`` in [0, 1] (a sigmoid per task, or the softmax over the classes).
    ``temperatures[i]``: model i's T per task (multi-class: the one T of its softmax), or None
    for T = 1 (no division)."""

    def __init__(
        self, models: Sequence[nn.Module], temperatures: Sequence[Sequence[float] | None] | None = None,
        head: Head | None = None,
    ):
        super().__init__()
        self.models = nn.ModuleList(models)
        self.head = head if head is not None else SigmoidTasks()
        temperatures = list(temperatures) if temperatures is not None else [None] * len(models)
        self.scaled = [t is not None for t in temperatures]
        for index, t in enumerate(temperatures):
            if t is not None:  # a buffer: exported into the graph as a constant
                self.register_buffer(f"temperature{index}", self.head.temperature_divisor(t, 2, "cpu")[None])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        total = None
        for index, model in enumerate(self.models):
            logits = model(image)
            if self.scaled[index]:
                logits = logits / getattr(self, f"temperature{index}")
            prob = self.head.probabilities(logits)
            total = prob if total is None else total + prob
        return total / len(self.models)


def sidecar_path(onnx_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.json``: the preprocessing description beside the model."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.stem + ".json")


def _check_size(name: str, value: int) -> None:
    if value < 32 or value % 32:
        raise SoftsegError(
            f"--{name} must be a positive multiple of 32 (the U-Net downsamples 5 times), got "
            f"{value}; use e.g. {max(32, round(value / 32) * 32)}"
        )


def export_onnx(
    run: str | Path,
    onnx_path: str | Path,
    *,
    height: int | None = None,
    width: int | None = None,
    opset: int = DEFAULT_OPSET,
    options: RunOptions = RunOptions(),
    overwrite: bool = False,
    verify: bool = True,
) -> Path:
    """Export ``run`` (a run or a folder of seeds) to ``onnx_path`` plus its sidecar JSON.

    ``options.checkpoint`` and ``options.temperature`` mean what they mean for ``softseg
    predict`` (the other options are not used: the graph is one pass on the CPU): with
    "auto" each seed's fitted temperatures (``temperature.json``) divide its logits inside
    the graph, and the sidecar records them.

    ``height``/``width`` (multiples of 32) size the example input used for tracing and
    verification; they default to the run's ``resize`` or crop size. The axes stay dynamic.
    With ``verify`` and onnxruntime installed, the ONNX model is run on a random input and
    must match PyTorch to within 1e-4 (max absolute difference, recorded in the sidecar).
    Both files are written atomically; existing files are kept unless ``overwrite``.
    Returns the ONNX path.
    """
    from softseg.inference.runs import applied_temperatures, load_models, resolve_runs

    checkpoint, temperature = options.checkpoint, options.temperature
    onnx_path = Path(onnx_path)
    if onnx_path.suffix.lower() != ".onnx":
        raise SoftsegError(f"{onnx_path}: the model file must end in .onnx")
    sidecar = sidecar_path(onnx_path)
    for path in (onnx_path, sidecar):
        if path.exists() and not overwrite:
            raise SoftsegError(f"{path}: already exists; choose another name or pass --overwrite")
    if not (MIN_OPSET <= opset <= MAX_OPSET):
        raise SoftsegError(
            f"--opset must be between {MIN_OPSET} and {MAX_OPSET} (what the TorchScript exporter "
            f"supports for this model), got {opset}; {DEFAULT_OPSET} is a safe choice"
        )
    run_set = resolve_runs([run])
    loaded = load_models(run_set.run_dirs, device="cpu", checkpoint=checkpoint, temperature=temperature)
    first = loaded[0]
    mode_of(first.config).check_export(first.run_dir)
    head_of(first.config).check_export(first.run_dir)
    for other in loaded[1:]:
        if (other.config.resize, other.config.normalization) != (
            first.config.resize, first.config.normalization
        ):
            raise SoftsegError(
                f"{other.run_dir}: resize/normalisation differ from {first.run_dir}; seeds "
                "exported together must share their preprocessing"
            )
    size = first.config.resize or first.config.crop_size
    size = -(-size // 32) * 32  # the padded size the model sees
    height, width = height or size, width or size
    _check_size("height", height)
    _check_size("width", width)

    # fp32 on the CPU: the graph must not depend on autocast, which ONNX does not carry.
    ensemble = ProbabilityEnsemble([lr.model.float().to(memory_format=torch.contiguous_format)
                                    for lr in loaded], [lr.temperature for lr in loaded],
                                   head_of(first.config)).eval()
    example = torch.randn(1, first.config.in_channels, height, width,
                          generator=torch.Generator().manual_seed(0))
    # the graph is traced into a unique temporary file beside the target and renamed into
    # place only once verified: a failed export leaves no half model behind
    with atomic_path(onnx_path) as tmp:
        with torch.no_grad(), warnings.catch_warnings():
            # the TorchScript exporter is deprecated in favour of one needing onnxscript
            warnings.simplefilter("ignore")
            torch.onnx.export(
                ensemble,
                (example,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={
                    INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                    OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                },
                opset_version=opset,
                dynamo=False,
            )
        difference = verify_onnx(ensemble, tmp, example) if verify else None

    threshold = run_set.threshold
    write_json_atomic(sidecar, {
        "softseg_version": __version__,
        "onnx": onnx_path.name,
        "runs": [str(r) for r in run_set.run_dirs],
        "checkpoint": checkpoint,
        "opset": opset,
        "tasks": list(first.tasks),
        "classes": list(first.config.classes),
        "in_channels": first.config.in_channels,
        "input": {"name": INPUT_NAME, "shape": ["batch", first.config.in_channels, "height", "width"],
                  "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(head_of(first.config).outputs(first.config)),
                                                   "height", "width"],
                   "dtype": "float32", "values": f"{head_of(first.config).exported_values}, mean of "
                                                 f"{len(loaded)} seed(s))"},
        "temperatures": applied_temperatures(loaded),
        "preprocessing": [
            {"step": "normalize", "kind": first.config.normalization,
             "detail": "per image and channel: (x - mean) / std over the pixels, population std; "
                       "a channel with std <= 1e-8 is divided by 1 (becomes 0)"},
            {"step": "resize", "size": first.config.resize,
             "detail": "bilinear, antialiased when shrinking; none when size is null"},
            {"step": "pad", "multiple": 32,
             "detail": "zeros appended at the bottom and right; crop outputs back with [..., :h, :w]"},
        ],
        "postprocessing": "crop to the (resized) image size, undo the resize (bilinear), "
                          "threshold with p >= t",
        "operating_threshold": None if threshold is None else {
            task: entry["threshold"] for task, entry in threshold["tasks"].items()
        },
        "precision": "float32; softseg predict runs this run with precision "
                     f"{first.config.precision!r} (bf16/AMP differ from float32 by up to ~1e-2)",
        "example_size": [height, width],
        "verified_max_abs_difference": difference,
    })
    return onnx_path


def verify_onnx(model: nn.Module, onnx_file: str | Path, example: torch.Tensor) -> float | None:
    """Max absolute difference between onnxruntime and PyTorch on ``example`` and on a second,
    differently sized input (to exercise the dynamic axes); SoftsegError above 1e-4.

    Returns None (with a log line) when onnxruntime is not installed.
    """
    try:
        import onnxruntime
    except ImportError:
        log.warning("onnxruntime is not installed; the exported model was not verified")
        return None
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    n, c, h, w = example.shape
    other = torch.randn(2, c, h + 32, w, generator=torch.Generator().manual_seed(1))
    worst = 0.0
    for x in (example, other):
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        if got.shape != expected.shape:
            raise SoftsegError(
                f"exported model gives shape {got.shape} for input {tuple(x.shape)}, PyTorch "
                f"gives {expected.shape}; the export is broken (try another --opset)"
            )
        worst = max(worst, float(np.abs(got - expected).max()))
    if worst > TOLERANCE:
        raise SoftsegError(
            f"exported model differs from PyTorch by up to {worst:.2e} (> {TOLERANCE:g}); "
            "try another --opset"
        )
    return worst
