"""The whole pocket base-to-new suite as one timed command (issue 20): every dataset of the bench's suite x the
ten methods (zero-shot, the linear probe, CoOp, KgCoOp, CoCoOp, MaPLe, IVLP, PromptSRC, ProGrad, TCP), one seed,
16 shots, each method's pocket preset (``configs/pocket_b2n.yaml`` with its ``per_method`` options for zero-shot,
CoOp and KgCoOp, ``configs/pocket_<method>_b2n.yaml`` for the others, ``configs/pocket_linear_probe.yaml``: the
probe on protocol all), with ``train.shared_prefix`` off (before issue 20) or on (after).

The cells run as a grid does (:func:`ncprompt.protocols.grid.run_one`: a run folder per cell, resumable) in
``--workers`` processes of one thread each, the longest cells first (an estimate from classes x method). The
timed figure is the wall time from the first cell to the last, feature builds included: the cache starts empty
(``OUT/cache``, removed first), so the figure is what a fresh machine pays. A cell reused from an earlier,
interrupted run is counted and named in the JSON (the figure is then not a whole run: rerun with a fresh ``--out``).

    .venv/bin/python benchmarks/bench_whole_suite.py --switch on             # bench 3: hours (b3_generic: below)
    .venv/bin/python benchmarks/bench_whole_suite.py --switch off            # the before figure
    .venv/bin/python benchmarks/bench_whole_suite.py --switch on --datasets b3_hands --epochs 1 --no-doc  # smoke
    .venv/bin/python benchmarks/bench_whole_suite.py --doc                   # rewrite the docs section only

Results: ``benchmarks/results/whole_suite_b<bench>_<switch>.json`` (per cell: seconds, base / new / HM; the
machine and its load) and the ``bench_whole_suite`` section of docs/benchmarks.md (both switches when both ran:
the totals, their ratio and the largest result difference between them).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, finish_info, fmt_s, machine_info, markdown_table, write_json  # noqa: E402
from doc_sections import write_sections  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "bench_whole_suite"
METHODS = ["zeroshot", "linear_probe", "coop", "kgcoop", "cocoop", "maple", "ivlp", "promptsrc", "prograd", "tcp"]
#: each bench's model (its suite: ncprompt.pocket.suite3.suite_sizes)
BENCHES = {3: "pocket-b3", 1: "pocket"}


def method_config(method: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(the method's pocket preset file as a grid's base config, its per-method options)."""
    import yaml

    from ncprompt.protocols.demo import per_method_options

    name = {"zeroshot": "pocket_b2n", "coop": "pocket_b2n", "kgcoop": "pocket_b2n",
            "linear_probe": "pocket_linear_probe"}.get(method, f"pocket_{method}_b2n")
    base = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    return base, per_method_options(base)


def jobs(a: argparse.Namespace, sizes: dict[str, int]) -> list[dict[str, Any]]:
    """One grid job per (dataset, method), longest first."""
    from ncprompt.config import merge_layers
    from ncprompt.protocols import cell_cost
    from ncprompt.protocols.grid import MethodSpec, grid_jobs

    out = []
    for m in a.methods:
        base, opts = method_config(m)
        train = {"shared_prefix": a.switch == "on", **({"epochs": a.epochs} if a.epochs else {})}
        base = merge_layers(base, {"run": {"model": BENCHES[a.bench], "cache_dir": str(a.out / "cache"),
                                           "diagnostics": False},
                                   "data": {"shots": 16, "protocol": "all" if m == "linear_probe" else "base2new"},
                                   "train": train})
        for d, k in sizes.items():
            (j,) = grid_jobs(base, [d], [MethodSpec.parse(m, opts)], [a.seed], a.out / f"runs-{a.switch}" / m)
            out.append({**j, "threads": 1, "method": m, "estimate_s": cell_cost.estimate(m, k)})
    return sorted(out, key=lambda j: -j["estimate_s"])


def _cell(job: dict[str, Any]) -> dict[str, Any]:
    """Run one cell in a worker; its seconds and results (``reused``: finished before this run started)."""
    from ncprompt.protocols.grid import run_one

    reused = (Path(job["run_dir"]) / "results.json").is_file()
    t0 = time.perf_counter()
    res = run_one(job)
    top = {s: (res.splits[s].top1 if s in res.splits else None) for s in ("base", "new", "all")}
    return {"dataset": job["dataset"], "method": job["method"], "seconds": time.perf_counter() - t0,
            "reused": reused, "base": top["base"] if top["base"] is not None else top["all"], "new": top["new"],
            "hm": res.hm, "epochs": res.epochs_run}


def run(a: argparse.Namespace) -> dict[str, Any]:
    from ncprompt.pocket.suite3 import suite_sizes
    from ncprompt.protocols.grid import _die_with_parent

    sizes = suite_sizes(a.bench)
    if a.datasets:
        unknown = sorted(set(a.datasets) - set(sizes))
        if unknown:
            raise SystemExit(f"bench_whole_suite: {', '.join(unknown)} not in bench {a.bench}'s suite; pick from "
                             f"{', '.join(sizes)}")
        sizes = {d: sizes[d] for d in a.datasets}
    shutil.rmtree(a.out / "cache", ignore_errors=True)  # the figure includes the feature builds
    todo = jobs(a, sizes)
    info = machine_info(1)
    info["workers"] = a.workers
    if a.note:
        info["note"] = a.note
    out: dict[str, Any] = {"bench": a.bench, "switch": a.switch, "seed": a.seed, "epochs": a.epochs or "the presets",
                           "methods": a.methods, "datasets": sizes, "machine": info, "cells": [],
                           "command": "python benchmarks/bench_whole_suite.py " + " ".join(a.argv)}
    print(f"[whole-suite] bench {a.bench}, shared_prefix {a.switch}: {len(todo)} cells, {a.workers} workers "
          f"(1 thread each), estimate {sum(j['estimate_s'] for j in todo) / a.workers / 60:.0f} min", flush=True)
    t0 = time.perf_counter()
    with cf.ProcessPoolExecutor(a.workers, initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
        futs = {pool.submit(_cell, j): j for j in todo}
        for i, f in enumerate(cf.as_completed(futs), 1):
            j = futs[f]
            try:
                c = f.result()
            except Exception as e:  # noqa: BLE001  (a failed cell is named; the others still run)
                c = {"dataset": j["dataset"], "method": j["method"], "failed": f"{type(e).__name__}: {e}"}
            out["cells"].append(c)
            out["wall_s"] = time.perf_counter() - t0
            print(f"[whole-suite] {i}/{len(todo)} {c['method']} {c['dataset']}: "
                  f"{c.get('failed') or fmt_s(c['seconds'])}; {fmt_s(out['wall_s'])} so far", flush=True)
            write_json(a.json.with_suffix(".partial.json"), out)
    out["wall_s"] = time.perf_counter() - t0
    finish_info(info)
    return out


def _totals(data: dict[str, Any]) -> dict[str, float]:
    per: dict[str, float] = {}
    for c in data["cells"]:
        per[c["method"]] = per.get(c["method"], 0.0) + c.get("seconds", 0.0)
    return per


def _mean(cells: list[dict[str, Any]], key: str) -> float | None:
    v = [c[key] for c in cells if c.get(key) is not None]
    return sum(v) / len(v) if v else None


def section(runs: dict[str, dict[str, Any]]) -> str:
    """The docs section from the saved JSON of each switch."""
    lines = ["## The whole base-to-new suite as one command (`bench_whole_suite.py`)", ""]
    if not runs:
        return "\n".join(lines + ["Not measured yet (commands in the script's docstring).", ""])
    for switch, d in runs.items():
        m = d["machine"]
        bad = [c for c in d["cells"] if c.get("failed") or c.get("reused")]
        whole = len(d["datasets"]) * len(d["methods"])
        if len(d["cells"]) < whole:
            done = ", ".join(f"{c['method']} {c['dataset']} {fmt_s(c['seconds'])}"
                             for c in d["cells"] if "seconds" in c)
            lines.append(f"* shared prefix **{switch}**: **stopped after {len(d['cells'])} of {whole} cells** and "
                         f"{fmt_s(d['wall_s'])} wall ({m['cpu']}, {m['date']}, load average at start "
                         f"{m['loadavg_at_start'][0]:.2f}); the cells that finished, each on one core: {done}. "
                         f"{m.get('note', '')}")
            continue
        lines.append(f"* shared prefix **{switch}**: **{fmt_s(d['wall_s'])}** wall for {len(d['cells'])} cells "
                     f"(bench {d['bench']}: {len(d['datasets'])} datasets x {len(d['methods'])} methods, seed "
                     f"{d['seed']}, epochs {d['epochs']}), {m['workers']} workers of 1 thread, feature builds "
                     f"included; {m['cpu']}, {m['date']}, load average at start {m['loadavg_at_start'][0]:.2f}"
                     + (f", {len(bad)} cell(s) failed or reused" if bad else "") + f". {m.get('note', '')}")
    runs = {s: d for s, d in runs.items() if len(d["cells"]) == len(d["datasets"]) * len(d["methods"])}
    if not runs:  # only stopped runs: no per-method totals to compare
        return "\n".join(lines + [""])
    lines += ["", "Core-seconds per method (the sum of its cells; a dataset's feature build falls to whichever of its "
              "cells ran first, so compare the totals, not one method's row) and mean top-1 over the datasets (the "
              "linear probe: all classes, as base):", ""]
    switches = list(runs)
    totals = {s: _totals(runs[s]) for s in switches}
    seen = {c["method"] for s in switches for c in runs[s]["cells"]}
    methods = [m for m in METHODS if m in seen]
    rows = []
    for meth in methods:
        cells = {s: [c for c in runs[s]["cells"] if c["method"] == meth] for s in switches}
        row = [meth] + [fmt_s(totals[s].get(meth, 0.0)) for s in switches]
        if len(switches) == 2 and totals[switches[1]].get(meth):
            row.append(f"{totals[switches[0]].get(meth, 0.0) / totals[switches[1]][meth]:.2f}x")
        last = cells[switches[-1]]
        row.append(" / ".join("-" if (v := _mean(last, k)) is None else f"{v:.1f}" for k in ("base", "new", "hm")))
        if len(switches) == 2:
            pairs = [(x, y) for x in cells[switches[0]] for y in cells[switches[1]] if x["dataset"] == y["dataset"]]
            diff = max((abs(x[k] - y[k]) for x, y in pairs for k in ("base", "new", "hm")
                        if x.get(k) is not None and y.get(k) is not None), default=0.0)
            row.append(f"{diff:.2f}")
        rows.append(row)
    head = ["method"] + [f"cells, {s}" for s in switches] + (["off / on"] if len(switches) == 2 else [])
    head += [f"base / new / HM ({switches[-1]})"] + (["max abs diff (points)"] if len(switches) == 2 else [])
    lines += [markdown_table(head, rows), ""]
    return "\n".join(lines)


def _saved(bench: int) -> dict[str, dict[str, Any]]:
    import json

    out = {}
    for s in ("off", "on"):
        for p in (RESULTS_DIR / f"whole_suite_b{bench}_{s}.json",
                  RESULTS_DIR / f"whole_suite_b{bench}_{s}.partial.json"):
            if p.is_file():  # an interrupted run's partial file when no whole run is saved
                out[s] = json.loads(p.read_text())
                break
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--switch", choices=["on", "off"], default="on", help="train.shared_prefix [default on]")
    p.add_argument("--bench", type=int, choices=sorted(BENCHES), default=3)
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--datasets", nargs="+", default=None, help="[default: the bench's whole suite]")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epochs", type=int, default=None, help="override the presets' epochs (smoke checks only)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="grid folder [default runs/whole-suite-b<bench>-<switch>]")
    p.add_argument("--json", type=Path, default=None, help="[default benchmarks/results/whole_suite_b<bench>_<switch>"
                   ".json; with --datasets or --epochs: under --out]")
    p.add_argument("--note", help="what else ran on the machine (stored, shown in the docs)")
    p.add_argument("--no-doc", action="store_true", help="do not rewrite the docs section")
    p.add_argument("--doc", action="store_true", help="only rewrite the docs section from the saved JSON")
    a = p.parse_args(argv)
    a.argv = argv
    if not a.doc:
        a.out = a.out or ROOT / "runs" / f"whole-suite-b{a.bench}-{a.switch}"
        partial = bool(a.datasets or a.epochs or a.methods != METHODS)
        a.json = a.json or ((a.out if partial else RESULTS_DIR) / f"whole_suite_b{a.bench}_{a.switch}.json")
        data = run(a)
        write_json(a.json, data)
        a.json.with_suffix(".partial.json").unlink(missing_ok=True)
        print(f"[whole-suite] {len(data['cells'])} cells in {fmt_s(data['wall_s'])}; {a.json}", flush=True)
    if not a.no_doc:
        write_sections(DOC, {SECTION: section(_saved(a.bench))})


if __name__ == "__main__":
    main()
