"""Evaluation metrics."""

from ncprompt.metrics.neural_collapse import (
    NCAccumulator,
    centre_rows,
    equiangularity,
    equinorm,
    etf_angle_deviation,
    pairwise_cosines,
    self_duality,
)

__all__ = [
    "NCAccumulator",
    "centre_rows",
    "equiangularity",
    "equinorm",
    "etf_angle_deviation",
    "pairwise_cosines",
    "self_duality",
]
