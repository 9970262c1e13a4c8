"""Neural-collapse anchors (simplex ETF) and the NPT regularisers (LC, MI)."""

from ncprompt.collapse.etf import (
    ETFApproximationWarning,
    aligned_anchors,
    approximate_equiangular_frame,
    procrustes_rotation,
    simplex_etf,
)
from ncprompt.collapse.regularizers import NPTConfig, NPTRegularizer

__all__ = [
    "ETFApproximationWarning",
    "NPTConfig",
    "NPTRegularizer",
    "aligned_anchors",
    "approximate_equiangular_frame",
    "procrustes_rotation",
    "simplex_etf",
]
