"""``ncprompt analyze`` and ``ncprompt report`` sub-commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def cmd_analyze(a: argparse.Namespace) -> int:
    from ncprompt.analysis.run_report import analyze_run

    for d in a.run_dirs:
        rep = analyze_run(d)
        print(f"{d}: " + ", ".join(f"{k} {v:.2f}" for k, v in rep["accuracy"].items())
              + f"; report {Path(d) / 'analysis.md'}")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from ncprompt.analysis.correlation import collect_runs, write_report

    rows = collect_runs(a.dirs)
    if not rows:
        raise FileNotFoundError(f"no results.json found under {a.dirs}; pass run folders of `ncprompt train`")
    out = write_report(rows, a.output)
    print((Path(a.output) / "correlations.md").read_text())
    print(f"{out['runs']} runs; tables and {len(out['plots'])} figures (one per model and accuracy) in {a.output}")
    return 0


def add_commands(sub: Any) -> None:
    s = sub.add_parser("analyze", help="NC report (JSON + markdown) and plots of run folders")
    s.add_argument("run_dirs", nargs="+")
    s.set_defaults(func=cmd_analyze)
    s = sub.add_parser("report", help="correlation of NC metrics with base/new/HM accuracy across runs")
    s.add_argument("dirs", nargs="+", help="run folders or folders holding them")
    s.add_argument("--output", default="report",
                   help="folder for runs.csv, correlations.{csv,md}, correlations_MODEL_ACCURACY.png")
    s.set_defaults(func=cmd_report)
