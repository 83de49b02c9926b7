"""Export: a trained run made into a model directory (ONNX graph, manifest, attribution)."""
