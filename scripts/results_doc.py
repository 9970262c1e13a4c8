"""Rewrite the generated sections of docs/results.md from the folders ``scripts/pocket_results.sh`` and
``scripts/pocket_methods.sh`` wrote.

    .venv/bin/python scripts/results_doc.py runs/results     # their OUT (default runs/results)

Run folders: ``OUT/tau<tau>/`` (zero-shot, CoOp, KgCoOp +- NPT) and ``OUT/tau<tau>-methods/<method>/`` (each other
method +- NPT with its own recipe; the linear probe and its zero-shot reference under protocol all), merged per tau.
Sections (between ``<!-- results:NAME:begin -->`` / ``end`` markers; the hand-written text around them is kept):
``tau1.0``, ``tau0.25``, ``tau0.06`` (the base-to-new paper table of each imbalance: mean +- std over n seeds, n
per cell, "Average (k/K datasets)" where a method lacks a dataset), ``averages`` (per method and tau: datasets and
seeds covered, HM of the averaged base and new, head / middle / tail under imbalance), ``probe`` (the linear probe
against zero-shot on all classes), ``nc`` (the NC metrics by method from ``ncprompt report``), ``variants`` (NPT
variants under tau = 0.25). The tau = 0.25 summary plot is copied to docs/results_tau0.25.png.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from doc_sections import write_sections  # noqa: E402

from ncprompt.analysis.tables import Cell, base_to_new_table, run_row  # noqa: E402

TAUS = ("1.0", "0.25", "0.06")
#: row order of the tables: pocket_results.sh's methods, then pocket_methods.sh's (each without, then with NPT)
METHOD_ORDER = ["zeroshot", "coop", "kgcoop", "cocoop", "maple", "ivlp", "promptsrc", "prograd", "tcp", "linear_probe"]


def _short(value: Any) -> Any:
    """A long list option (PromptSRC's 16 templates) as its length, so the Options column stays readable."""
    return f"{len(value)} templates" if isinstance(value, list) and len(value) > 3 else value


def _row(results: Path) -> dict[str, Any]:
    cfg_file = results.parent / "config.yaml"
    cfg = yaml.safe_load(cfg_file.read_text()) if cfg_file.is_file() else None
    if cfg and isinstance(cfg.get("method"), dict):
        cfg = {**cfg, "method": {k: _short(v) for k, v in cfg["method"].items()}}
    return run_row(json.loads(results.read_text()), cfg)


def _order(label: str) -> tuple[int, bool]:
    name, _, npt = label.partition("+")
    return (METHOD_ORDER.index(name) if name in METHOD_ORDER else len(METHOD_ORDER), bool(npt))


def tau_rows(out: Path, tau: str) -> list[dict[str, Any]]:
    """Every run of one tau (the tau folder and its method grids), datasets in the grid's order, then methods in
    METHOD_ORDER, then seeds."""
    folders = [out / f"tau{tau}", *sorted((out / f"tau{tau}-methods").glob("*"))]
    rows, datasets = [], []
    for folder in folders:
        runs_csv = folder / "runs.csv"
        if runs_csv.is_file():
            with runs_csv.open() as f:
                datasets += [r["dataset"] for r in csv.DictReader(f)]
        rows += [_row(p) for p in sorted(folder.rglob("results.json"))] if folder.is_dir() else []
    order = list(dict.fromkeys(datasets + [r["dataset"] for r in rows]))
    return sorted(rows, key=lambda r: (order.index(r["dataset"]), _order(r["method"]), r.get("seed") or 0))


def _fmt(c: Cell | None) -> str:
    return "" if c is None else f"{c.mean:.2f}"


def _span(values: list[int]) -> str:
    return "" if not values else str(min(values)) if min(values) == max(values) else f"{min(values)}-{max(values)}"


def averages(by_tau: dict[str, list[dict[str, Any]]]) -> str:
    """Per tau and method: mean over the datasets it has of the per-dataset means (HM of the averaged base and
    new), with how many datasets and seeds per dataset it covers."""
    lines = ["| tau | method | datasets | seeds | base | new | HM | head | middle | tail |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for tau, rows in by_tau.items():
        rows = [r for r in rows if r.get("base") is not None and r.get("new") is not None]
        datasets = list(dict.fromkeys(r["dataset"] for r in rows))
        for method in dict.fromkeys(r["method"] for r in rows):
            per = {d: [r for r in rows if r["method"] == method and r["dataset"] == d] for d in datasets}
            per = {d: sel for d, sel in per.items() if sel}
            avg = {k: _mean_of_means(per, k) for k in ("base", "new", "base_head", "base_middle", "base_tail")}
            hm = (Cell(2 * avg["base"].mean * avg["new"].mean / (avg["base"].mean + avg["new"].mean))
                  if avg["base"] and avg["new"] and avg["base"].mean + avg["new"].mean > 0 else None)
            cells = [_fmt(avg["base"]), _fmt(avg["new"]), _fmt(hm),
                     *(_fmt(avg[k]) for k in ("base_head", "base_middle", "base_tail"))]
            lines.append(f"| {tau} | {method} | {len(per)}/{len(datasets)} | {_span([len(s) for s in per.values()])} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_of_means(per: dict[str, list[dict[str, Any]]], key: str) -> Cell | None:
    means = [sum(v) / len(v) for v in ([float(r[key]) for r in sel if r.get(key) is not None] for sel in per.values())
             if v]
    return Cell(sum(means) / len(means)) if means else None


def probe(out: Path) -> str:
    """The linear probe and zero-shot on all classes (protocol all), per tau and dataset: mean +- std over n seeds."""
    lines = ["| tau | dataset | method | n | top-1, all classes |", "|---|---|---|---|---:|"]
    for tau in TAUS:
        folder = out / f"tau{tau}-methods" / "linear_probe"
        rows = [_row(p) for p in sorted(folder.rglob("results.json"))] if folder.is_dir() else []
        rows = [r for r in rows if r.get("all") is not None]
        for ds in dict.fromkeys(r["dataset"] for r in rows):
            for method in sorted(dict.fromkeys(r["method"] for r in rows), key=_order):
                sel = [float(r["all"]) for r in rows if r["dataset"] == ds and r["method"] == method]
                if sel:
                    c = Cell.of(sel)
                    std = f" ± {c.std:.2f}" if c.std is not None else ""
                    lines.append(f"| {tau} | {ds} | {method} | {c.n} | {c.mean:.2f}{std} |")
    return "\n".join(lines) if len(lines) > 2 else f"(not run: no {out}/tau*-methods/linear_probe runs)"


def variants(out: Path) -> str:
    lines = ["| variant | base | new | HM |", "|---|---|---|---|"]
    for d in sorted((out / "variants").glob("*/summary.csv")):
        with d.open() as f:
            for r in (r for r in csv.DictReader(f) if r.get("dataset") == "average"):
                cells = [f"{float(r[k]):.2f}" if r.get(k) else "" for k in ("base", "new", "hm")]
                lines.append(f"| {d.parent.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "runs/results")
    doc = Path(args[1]) if len(args) > 1 else ROOT / "docs" / "results.md"  # a second argument: another page (tests)
    bodies: dict[str, str] = {}
    by_tau = {tau: tau_rows(out, tau) for tau in TAUS}
    for tau, rows in by_tau.items():
        table = base_to_new_table(rows)
        bodies[f"results:tau{tau}"] = table.markdown() if table else f"(not run: no runs under {out}/tau{tau}*)"
    bodies["results:averages"] = averages(by_tau)
    bodies["results:probe"] = probe(out)
    nc = out / "report" / "nc_by_method.md"
    bodies["results:nc"] = nc.read_text() if nc.is_file() else f"(not run: {nc} is missing)"
    bodies["results:variants"] = variants(out)
    write_sections(doc, bodies)
    png = out / "tau0.25" / "summary.png"
    if png.is_file() and len(args) < 2:
        shutil.copyfile(png, ROOT / "docs" / "results_tau0.25.png")
    print(f"rewrote {len(bodies)} sections of {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
