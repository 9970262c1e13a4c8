"""Run analysis (per-run NC report and plots) and cross-run correlation reports.

The names are loaded on first use (PEP 562), so ``import ncprompt.analysis.cli`` stays light.
"""

from __future__ import annotations

from typing import Any

_NAMES = {"analyze_run": "ncprompt.analysis.run_report", "collect_runs": "ncprompt.analysis.correlation",
          "correlation_table": "ncprompt.analysis.correlation"}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'ncprompt.analysis' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_NAMES[name]), name)
