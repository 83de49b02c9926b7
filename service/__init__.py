"""Watch-time distribution service: ONNX models in, predictive distributions out."""
