"""Run analysis (per-run NC report and plots) and cross-run correlation reports."""

from ncprompt.analysis.correlation import collect_runs, correlation_table
from ncprompt.analysis.run_report import analyze_run

__all__ = ["analyze_run", "collect_runs", "correlation_table"]
