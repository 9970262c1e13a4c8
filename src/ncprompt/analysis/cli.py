"""``ncprompt analyze`` and ``ncprompt report`` sub-commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
    out = write_report(rows, a.output, pool=a.pool)
    print((Path(a.output) / "correlations.md").read_text())
    for w in out["repeated_seeds"]:
        print(f"ncprompt report: {w}", file=sys.stderr)
    print(f"{out['runs']} runs; tables and {len(out['plots'])} figures (one per family and accuracy with n >= "
          f"{out['min_n']}) in {a.output}")
    return 0

