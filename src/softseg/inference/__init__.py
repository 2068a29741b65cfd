"""Run folder + images -> probability maps: loading runs, prediction, thresholds, ONNX export."""
