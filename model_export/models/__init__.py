"""The PyTorch models: EGMN and one module per baseline head, on one shared backbone."""
