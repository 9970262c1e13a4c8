"""Rewrite the generated sections of docs/results.md from the folders ``scripts/pocket_results.sh`` wrote.

    python scripts/results_doc.py runs/results            # OUT of pocket_results.sh (default runs/results)

Sections (between ``<!-- results:NAME:begin -->`` / ``end`` markers; the hand-written text around them is kept):
``tau1.0``, ``tau0.25``, ``tau0.06`` (the base-to-new paper table of each imbalance, with n and std),
``averages`` (per method and tau, HM of the averaged base and new, and head / middle / tail under imbalance),
``nc`` (the NC metrics by method from ``ncprompt report``), ``variants`` (NPT variants under tau = 0.25).
The tau = 0.25 summary plot is copied to docs/results_tau0.25.png.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from doc_sections import write_sections  # noqa: E402

TAUS = ("1.0", "0.25", "0.06")


def _average_rows(summary_csv: Path) -> list[dict[str, str]]:
    with summary_csv.open() as f:
        return [r for r in csv.DictReader(f) if r.get("dataset") == "average"]


def _fmt(v: str | None) -> str:
    try:
        return f"{float(v):.2f}"
    except (TypeError, ValueError):
        return ""


def averages(out: Path) -> str:
    lines = ["| tau | method | base | new | HM | head | middle | tail |", "|---|---|---|---|---|---|---|---|"]
    for tau in TAUS:
        path = out / f"tau{tau}" / "summary.csv"
        if not path.is_file():
            continue
        for r in _average_rows(path):
            cells = [_fmt(r.get(k)) for k in ("base", "new", "hm", "base_head", "base_middle", "base_tail")]
            lines.append(f"| {tau} | {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def variants(out: Path) -> str:
    lines = ["| variant | base | new | HM |", "|---|---|---|---|"]
    for d in sorted((out / "variants").glob("*/summary.csv")):
        for r in _average_rows(d):
            lines.append(f"| {d.parent.name} | {_fmt(r.get('base'))} | {_fmt(r.get('new'))} | {_fmt(r.get('hm'))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "runs/results")
    doc = ROOT / "docs" / "results.md"
    bodies: dict[str, str] = {}
    for tau in TAUS:
        table = out / f"tau{tau}" / "tables" / "base_to_new.md"
        bodies[f"results:tau{tau}"] = table.read_text() if table.is_file() else f"(not run: {table} is missing)"
    bodies["results:averages"] = averages(out)
    nc = out / "report" / "nc_by_method.md"
    bodies["results:nc"] = nc.read_text() if nc.is_file() else f"(not run: {nc} is missing)"
    bodies["results:variants"] = variants(out)
    write_sections(doc, bodies)
    png = out / "tau0.25" / "summary.png"
    if png.is_file():
        shutil.copyfile(png, ROOT / "docs" / "results_tau0.25.png")
    print(f"rewrote {len(bodies)} sections of {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
