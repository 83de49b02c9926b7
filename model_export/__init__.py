"""Offline side: data, features, PyTorch models, training, evaluation and ONNX export."""
