"""Run folder + images -> probability maps: loading runs, prediction, thresholds, ONNX export."""

# Images per forward pass by default (same-shaped images share one; a CPU pass is also capped
# by pixels, see softseg.inference.arrays). Here, not in predict.py, so that the command line
# can show it without importing torch.
BATCH_SIZE = 4
