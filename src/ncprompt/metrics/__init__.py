"""Evaluation metrics; the package re-exports the neural-collapse names (the ``__all__`` of
:mod:`ncprompt.metrics.neural_collapse`, listed once there)."""

from ncprompt.metrics.neural_collapse import *  # noqa: F403
from ncprompt.metrics.neural_collapse import __all__ as __all__
