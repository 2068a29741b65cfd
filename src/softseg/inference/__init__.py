"""Run folder + images -> probability maps: loading runs, prediction, calibration, thresholds,
ONNX export."""

from dataclasses import dataclass

# Here, not in the modules that use them, so that the command line can show them without
# importing torch.

# Images per forward pass by default (same-shaped images share one; a CPU pass is also capped
# by pixels, see softseg.inference.arrays).
BATCH_SIZE = 4

# The checkpoint predict, threshold, calibrate and export load by default: the end of the
# paper's fixed cosine schedule. "best" is chosen on the run's validation cases, so numbers
# measured on those cases with it are optimistic.
DEFAULT_CHECKPOINT = "last"

# --temperature: "auto" divides the logits by the run's fitted temperature.json when there
# is one; "off" never does.
TEMPERATURE_MODES = ("auto", "off")

# --tta: "flip" averages the probabilities over the flips the run was trained with.
TTA_MODES = ("none", "flip")


@dataclass(frozen=True)
class RunOptions:
    """How trained runs are loaded and run: the settings predict, threshold, calibrate and
    export share (each command's --checkpoint, --temperature, --tta, --batch-size, --device).

    ``checkpoint``: "last", "best" or a .pt path. ``temperature``: "auto" applies each run's
    ``temperature.json`` when present, "off" never (calibrate always fits the raw logits).
    ``tta``: "none" or "flip" (export and calibrate make one pass). ``batch_size``: images per
    step (a CPU pass is also capped by pixels). ``device``: "auto", "cpu", "cuda[:N]".
    ``progress``: a progress bar.
    """

    checkpoint: str = DEFAULT_CHECKPOINT
    temperature: str = "auto"
    tta: str = "none"
    batch_size: int = BATCH_SIZE
    device: str | None = "auto"
    progress: bool = True
