"""Training loop, evaluation, checkpoints."""
