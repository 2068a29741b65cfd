"""Run folder + images -> probability maps: loading runs, prediction, calibration, thresholds,
ONNX export."""

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
