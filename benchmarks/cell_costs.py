"""Cost per grid cell by method and dataset, from the cells measured in committed result files, and the fit of
``ncprompt.protocols.cell_cost``'s model to them (issue 22: "measure the cost per cell by method and dataset").

Reads every row with ``seconds`` of the evidence parts (``benchmarks/results/evidence*/*.json``, one cell per row,
tau from the row's setting) and the whole-suite benchmark's cells (``whole_suite_*.json``, balanced), fits
(a, b, c) per method (``cell_cost.fit``), and prints: the coefficients (to paste into ``cell_cost.COEFFICIENTS``),
a table of measured mean seconds per (method, dataset) at tau 1 / 0.25 / 0.06 with the model's estimate, and the
fit's median and largest relative error. Reads files only: nothing is timed here; where each file's seconds were
measured (machine, load) is in the file and in docs/evidence.md.

    .venv/bin/python benchmarks/cell_costs.py               # table and fit, results/cell_costs.json
    .venv/bin/python benchmarks/cell_costs.py --files benchmarks/results/evidence-b3-pilot/b2n-1.json
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, markdown_table, write_json  # noqa: E402

from ncprompt.pocket.suite3 import class_count  # noqa: E402
from ncprompt.protocols import cell_cost  # noqa: E402

TAUS = (1.0, 0.25, 0.06)


def measured(files: list[str]) -> list[dict[str, Any]]:
    """One dict per measured cell: method (without ``+npt``), dataset, tau, protocol, seconds, file."""
    out = []
    for f in files:
        doc = json.loads(Path(f).read_text())
        for r in doc.get("rows", []):
            if r.get("seconds") and r.get("trained", True):
                s = r.get("setting") or {}
                out.append({"method": str(r["method"]).split("+")[0], "dataset": r["dataset"],
                            "tau": s.get("data.imbalance") or 1.0, "protocol": r.get("protocol") or "base2new",
                            "seconds": float(r["seconds"]), "file": f})
        for c in doc.get("cells", []):
            if c.get("seconds") and not c.get("reused"):
                out.append({"method": c["method"], "dataset": c["dataset"], "tau": 1.0, "protocol": "base2new",
                            "seconds": float(c["seconds"]), "file": f})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", nargs="*", help="result files (default: the evidence parts and whole-suite runs)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "cell_costs.json")
    a = ap.parse_args()
    files = a.files or sorted(glob.glob(str(RESULTS_DIR / "evidence*" / "*.json"))
                              + glob.glob(str(RESULTS_DIR / "whole_suite_*.json")))
    cells = measured(files)
    sizes = {d: class_count(d) for d in {c["dataset"] for c in cells}}
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in cells:
        by_method[c["method"]].append(c)
    coefs, errors, table = {}, {}, []
    for m, cs in sorted(by_method.items()):
        coefs[m] = cell_cost.fit((sizes[c["dataset"]], c["tau"], c["protocol"], c["seconds"]) for c in cs)
        rel = [abs(cell_cost.estimate(m, sizes[c["dataset"]], c["tau"], c["protocol"], coefs) - c["seconds"])
               / c["seconds"] for c in cs]
        errors[m] = {"cells": len(cs), "median_rel_error": statistics.median(rel), "max_rel_error": max(rel)}
        for d in sorted({c["dataset"] for c in cs}, key=lambda d: sizes[d]):
            row = [m, d, str(sizes[d])]
            for t in TAUS:
                secs = [c["seconds"] for c in cs if c["dataset"] == d and abs(c["tau"] - t) < 1e-9]
                est = cell_cost.estimate(m, sizes[d], t, "base2new", coefs)
                row.append(f"{statistics.mean(secs):.0f} ({len(secs)}) / {est:.0f}" if secs else f"– / {est:.0f}")
            table.append(row)
    print("COEFFICIENTS = {")
    for m, (x, y, z) in coefs.items():
        print(f'    "{m}": ({x:.4g}, {y:.4g}, {z:.4g}),  # {errors[m]["cells"]} cells, median relative error '
              f'{errors[m]["median_rel_error"]:.2f}, largest {errors[m]["max_rel_error"]:.2f}')
    print("}\n")
    print(markdown_table(["method", "dataset", "classes", *(f"tau {t:g}: measured (cells) / model" for t in TAUS)],
                         table))
    write_json(a.out, {"files": [str(Path(f).relative_to(RESULTS_DIR.parent.parent)) for f in files],
                       "coefficients": coefs, "errors": errors, "classes": sizes,
                       "table": table})
    return 0


if __name__ == "__main__":
    sys.exit(main())
