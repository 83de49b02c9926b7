"""Training: one optimisation loop for EGMN and every baseline, and one checkpoint format."""
