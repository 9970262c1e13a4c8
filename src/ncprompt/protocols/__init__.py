"""Experiment protocols: single runs, base-to-new, few-shot sweeps and reports."""

from ncprompt.pocket import suite as _pocket_suite  # noqa: F401  (registers the pocket suite's datasets)
from ncprompt.pocket import suite3 as _pocket_suite3  # noqa: F401  (registers the bench-3 datasets)
