"""Experiment protocols: single runs, base-to-new, few-shot sweeps and reports."""
