"""The evidence grid of issue 22 (docs/evidence.md) in parts of about two hours on 2 cores, one command each.

    python scripts/evidence_grid.py list [OPTIONS]          # the parts: cells, estimated seconds, command
    python scripts/evidence_grid.py run PART [OPTIONS]      # run one part, then write its compact results
    scripts/evidence_grid.sh PART                           # the same, with the defaults

Grid: base-to-new, 16 shots, the pocket presets (configs/pocket_b2n.yaml for CoOp and KgCoOp,
configs/pocket_<method>_b2n.yaml for the others), each method without and with NPT at the spec's defaults
(``NPTConfig``: lambda_lc = lambda_mi = 0.1, pairwise LC, self-duality MI: chosen by the spec, never on these
test splits), tau in {1, 0.25, 0.06}, seeds 1-5, on ``--datasets`` (default: the bench's suite; ``--bench 3``,
the default, is the b3_ suite on held-out artworks with the pocket-b3 model, each seed drawing its own renders;
``--bench 1`` the earlier emoji_ suite). Domain generalisation (parts ``dg-*``): prompts learned on the ImageNet
role (b3_generic; bench 1 emoji_generic; protocol all) evaluated on its shifted variants (targets).

Parts: the cells of one (dataset, seed) stay together (their images' features are built once: the feature
cache is keyed by image content and weights, data/cache_key.py, so every cell of a dataset and seed reuses
one build) and so does each NPT run with its control; groups are packed first-fit, longest first, into parts
of at most ``--budget-s`` estimated seconds on ``--workers`` cores. The partition depends on the options only,
never on what has run, so a part names the same cells whenever it runs. A part's cells run longest first in
``--workers`` single-threaded processes (finished cells are reused, a rerun resumes) and every finished cell's row
goes to ``benchmarks/results/evidence/PART.json`` at once (``ncprompt evidence`` reads those files, so parts add
up). An interrupted part's file holds what finished (``meta.complete`` false) and can be committed: a rerun on
another machine or checkout, without the run folders, takes each saved row whose setting, weights digest and
data digests equal the cell's now instead of running the cell again (a changed cell runs again).

Cost per cell, an *estimate* (seconds on one core of the 2-core machine): ``ncprompt.protocols.cell_cost``, a
model ``a + (b K + c K^2) s(tau)`` per method fitted to the cells measured so far (``benchmarks/cell_costs.py``
refits it from the committed parts); a DG cell adds ``DG_TARGET_SHARE`` of its source cell per target (a guess).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {m: "configs/pocket_b2n.yaml" for m in ("coop", "kgcoop", "zeroshot")}
#: methods run as references only (one cell per dataset, seed and tau, no NPT twin): rows of the report's tables,
#: never of its claims (``ncprompt evidence`` pairs NPT runs only)
REFERENCES = frozenset({"zeroshot"})
DG_SOURCE = "emoji_generic"
DG_TARGETS = ["emoji_generic_v2", "emoji_generic_sketch", "emoji_generic_mono", "emoji_generic_r",
              "emoji_generic_xartist"]
#: ``--bench 3``: the b3_ suite on held-out artworks, its model, DG source and shifted variants
BENCH3 = {"model": "pocket-b3", "dg_source": "b3_generic",
          "dg_targets": ["b3_generic_v2", "b3_generic_sketch", "b3_generic_mono", "b3_generic_r", "b3_generic_hc"]}
#: an unmeasured guess: each DG target's evaluation costs this share of its source cell (replace when measured)
DG_TARGET_SHARE = 0.2
#: where each choice of the grid comes from (recorded in every part's JSON)
CHOICES = {"npt": "NPTConfig defaults (the spec's: lambda_lc 0.1, lambda_mi 0.1, lc_form pairwise, "
                  "mi_form self_duality); no choice made on the reported test splits",
           "methods": "the pocket presets (configs/pocket_b2n.yaml per_method, configs/pocket_<method>_b2n.yaml)",
           "shots": "16, as the papers' base-to-new"}


def options() -> argparse.ArgumentParser:

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["list", "run"])
    p.add_argument("part", nargs="?", help="the part to run (see `list`)")
    p.add_argument("--bench", type=int, choices=[1, 3], default=3, help="3: the b3_ suite (held-out artworks) and "
                   "the pocket-b3 model; 1: the earlier emoji_ suite and the pocket model [default 3]")
    p.add_argument("--datasets", nargs="+", default=None, help="[default: the bench's suite]")
    p.add_argument("--device", default=None, help="run.device of every cell (e.g. cuda) [default: the config's]")
    p.add_argument("--methods", nargs="+", default=["coop", "cocoop", "maple", "kgcoop", "promptsrc", "tcp"],
                   help="each without and with NPT; zeroshot: a reference row without NPT (the tables' CLIP row) "
                        "[default: coop cocoop maple kgcoop promptsrc tcp]")
    p.add_argument("--taus", nargs="+", type=float, default=[1.0, 0.25, 0.06])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--budget-s", type=float, default=7200.0, help="estimated wall seconds per part [default 7200]")
    p.add_argument("--workers", type=int, default=2, help="processes, one thread each [default 2]")
    p.add_argument("--out", default="runs/evidence", help="grid folder [default runs/evidence]")
    p.add_argument("--results", default="benchmarks/results/evidence", help="compact JSON parts folder")
    p.add_argument("--no-dg", action="store_true", help="leave out the domain-generalisation parts")
    p.add_argument("--npt-lambda", type=float, nargs="+", default=None, metavar="L",
                   help="one NPT cell per L (lambda_lc = lambda_mi = L), all paired with one control [default: "
                        "NPTConfig's, the spec's 0.1]; a choice: study it on --split val with seeds outside 1-5, "
                        "never on the reported test splits")
    p.add_argument("--split", choices=["test", "val"], default="test",
                   help="the split every cell is evaluated on (data.eval_split) [default test; val for choices]")
    p.add_argument("--reuse-rows", nargs="+", default=[], metavar="PART.json",
                   help="other parts' JSON whose rows a cell of this part may take (its run folder named the same, "
                        "its setting, weights and data digests checked as for the part's own saved rows): e.g. the "
                        "controls of a new NPT lambda, already run in an earlier part")
    p.add_argument("--name", help="the compact JSON's file name and recorded part name [default: the part's]; "
                   "for a part of a custom grid (--datasets ...), so it does not overwrite another grid's part")
    return p


#: lambdas chosen on validation data and seeds outside 1-5, with where each choice came from: only these may run
#: on the test split of seeds 1-5 (``--npt-lambda``)
CHOSEN_LAMBDAS = {
    1.0: "lambda_lc = lambda_mi = 1: the best of 0.1 / 1 / 10 by the mean paired validation HM gain over CoOp, "
         "KgCoOp and MaPLe at tau 1 and 0.06 (+0.09 / +1.24 / +0.79; one lambda for every method, chosen before "
         "any test split was run with it), in the lambda study on b3_animals, b3_symbols, b3_plants, seeds 6 7 "
         "(benchmarks/results/evidence-lambda/lambda-1.json, docs/evidence-lambda/)",
}

#: the seeds whose validation runs made the choices in :data:`CHOSEN_LAMBDAS`: a chosen lambda is not reported on
#: their test splits (the same trained prompts chose it)
CHOICE_SEEDS = frozenset({6, 7})


def choices_made(a: argparse.Namespace) -> dict[str, str]:
    """What this part's options change from :data:`CHOICES` (recorded in its JSON), and a one-line refusal of a
    non-default lambda evaluated on the test split of seeds 1-5 (a choice made on the reported numbers) or of a
    chosen lambda on the test split of the seeds that chose it (:data:`CHOICE_SEEDS`)."""
    out = {"split": f"data.eval_split {a.split}"}
    if a.npt_lambda is not None:
        lams = " / ".join(f"{x:g}" for x in a.npt_lambda)
        out["npt"] = (f"lambda_lc = lambda_mi = {lams} (--npt-lambda), other NPTConfig defaults; "
                      f"evaluated on {a.split}, seeds {' '.join(map(str, a.seeds))}")
        unchosen = [x for x in a.npt_lambda if x not in CHOSEN_LAMBDAS]
        choosers = sorted(set(a.seeds) & CHOICE_SEEDS)
        if a.split == "test" and not unchosen and choosers:
            sys.exit(f"evidence_grid: seed(s) {' '.join(map(str, choosers))} chose lambda on their validation split, "
                     "so their test numbers at that lambda are not independent of the choice; report seeds outside "
                     f"{' '.join(map(str, sorted(CHOICE_SEEDS)))} (e.g. --seeds 8 9 10 11 12)")
        if a.split == "test" and not unchosen:
            out["npt"] += "; chosen on validation data: " + " | ".join(CHOSEN_LAMBDAS[x] for x in a.npt_lambda)
        elif a.split == "test" and set(a.seeds) & {1, 2, 3, 4, 5}:
            sys.exit(f"evidence_grid: --npt-lambda {' '.join(f'{x:g}' for x in unchosen)} on the test split of seeds "
                     "1-5 would choose lambda on the reported numbers; study it with --split val and seeds outside "
                     "1-5 (e.g. --seeds 6 7), then record the choice in CHOSEN_LAMBDAS")
    return out


def resolve(a: argparse.Namespace) -> argparse.Namespace:
    """The bench's defaults filled in (in place, idempotent): datasets, DG source and targets, model override."""
    from ncprompt.pocket.suite import SUITE
    from ncprompt.pocket.suite3 import SUITE3

    b3 = a.bench == 3
    a.datasets = a.datasets or list(SUITE3 if b3 else SUITE)
    a.dg_source = BENCH3["dg_source"] if b3 else DG_SOURCE
    a.dg_targets = BENCH3["dg_targets"] if b3 else DG_TARGETS
    a.model = BENCH3["model"] if b3 else None
    return a


def base_config(a: argparse.Namespace, method: str, tau: float, dg: bool, lam: float | None = None
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the cell's base config, per-method options) from the method's pocket preset file (with the bench's
    model and ``--device``; ``lam``: both NPT lambdas, else NPTConfig's)."""
    import yaml

    from ncprompt.config import merge_layers
    from ncprompt.protocols.demo import per_method_options

    base = yaml.safe_load((ROOT / CONFIGS.get(method, f"configs/pocket_{method}_b2n.yaml")).read_text())
    opts = per_method_options(base)
    data = {"protocol": "all", "targets": a.dg_targets} if dg else {"protocol": "base2new"}
    run = {k: v for k, v in (("model", a.model), ("device", a.device)) if v}
    npt = {} if lam is None else {"lambda_lc": lam, "lambda_mi": lam}
    return merge_layers(base, {"data": {**data, "shots": 16, "imbalance": None if tau == 1.0 else tau,
                                        "eval_split": a.split},
                               "run": run, "npt": npt}), opts


def cells(a: argparse.Namespace) -> list[dict[str, Any]]:
    """Every cell: (group, part kind, dataset, method, npt, lambda, tau, seed, estimated seconds): per
    (dataset, seed, method, tau) one control and one NPT cell per ``--npt-lambda`` (one at the default)."""
    from ncprompt.pocket.suite3 import class_count
    from ncprompt.protocols import cell_cost

    a, out = resolve(a), []
    grids = [("b2n", d, a.taus) for d in a.datasets] + ([] if a.no_dg else [("dg", a.dg_source, [1.0])])
    for kind, ds, taus in grids:
        for seed in a.seeds:
            for m in a.methods:
                for tau in taus:
                    twins = [] if m in REFERENCES else [(True, x) for x in (a.npt_lambda or [None])]
                    for npt, lam in [(False, None), *twins]:
                        share = DG_TARGET_SHARE * len(a.dg_targets) if kind == "dg" else 0.0
                        protocol = "all" if kind == "dg" else "base2new"
                        cost = cell_cost.estimate(m, class_count(ds), tau, protocol) * (1 + share)
                        out.append({"kind": kind, "group": (kind, ds, seed), "dataset": ds, "method": m, "npt": npt,
                                    "lam": lam, "tau": tau, "seed": seed, "cost": cost})
    return out


def parts(a: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """{part name: cells}: (dataset, seed) groups packed first-fit decreasing into ``budget_s x workers``
    core-seconds; a group larger than a part is split by tau (a cell and its NPT twin stay together)."""
    cap = a.budget_s * a.workers
    groups: dict[Any, list[dict[str, Any]]] = {}
    for c in cells(a):
        groups.setdefault(c["group"], []).append(c)
    units = []
    for g, cs in groups.items():
        total = sum(c["cost"] for c in cs)
        by_tau = [[c for c in cs if c["tau"] == t] for t in sorted({c["tau"] for c in cs}, reverse=True)]
        units += [(g[0], cs)] if total <= cap else [(g[0], u) for u in by_tau]
    units.sort(key=lambda u: (u[0], -sum(c["cost"] for c in u[1]), u[1][0]["dataset"], u[1][0]["seed"]))
    bins: dict[str, list[list[dict[str, Any]]]] = {}
    for kind, u in units:
        mine = bins.setdefault(kind, [])
        cost = sum(c["cost"] for c in u)
        free = [b for b in mine if sum(c["cost"] for c in b) + cost <= cap]
        (free[0].extend(u) if free else mine.append(list(u)))
    return {f"{kind}-{i + 1}": sorted(b, key=lambda c: -c["cost"]) for kind, bs in bins.items()
            for i, b in enumerate(bs)}


def jobs(a: argparse.Namespace, part: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """grid_jobs' job for each cell (run folders as scripts/pocket_methods.sh lays them out), longest first."""
    from ncprompt.protocols.grid import MethodSpec, grid_jobs

    out = []
    for c in part:
        base, opts = base_config(a, c["method"], c["tau"], c["kind"] == "dg", c.get("lam"))
        spec = MethodSpec.parse(c["method"] + ("+npt" if c["npt"] else ""), opts)
        where = Path(a.out) / ("dg" if c["kind"] == "dg" else f"tau{c['tau']}") / c["method"]
        if c.get("lam") is not None:
            where = where / f"lambda{c['lam']:g}"  # one run folder per lambda; the control stays where it is
        (j,) = grid_jobs(base, [c["dataset"]], [spec], [c["seed"]], where)
        out.append({**j, "threads": 1, "cost": c["cost"]})
    return out


def cell_row(job: dict[str, Any], row: dict[str, Any] | None) -> dict[str, Any] | None:
    """Worker: a cell's compact row. ``row``, the cell's row from an earlier write of this part, is returned as
    it is when its whole setting (config, weights digest, data digests) equals the one this cell would run now;
    otherwise (or without a row) the cell runs through :func:`ncprompt.protocols.grid.run_one` (its run folder
    reused when finished) and its row is read back. None: the cell did not finish."""
    from ncprompt.analysis.evidence import collect
    from ncprompt.config.setting import setting_items, setting_key
    from ncprompt.engine.progress import quiet
    from ncprompt.protocols.grid import cell_experiment, run_one

    if row is not None:
        import torch

        torch.set_num_threads(job["threads"])
        with quiet():
            cfg, exp = cell_experiment(job)
            now = setting_items(cfg, exp.inputs(), {"dataset": job["dataset"],
                                                    "info": {"model": {"name": exp.backbone.name}}})
        if json.loads(setting_key(now)) == json.loads(setting_key(row.get("setting") or {})):
            return row
        print(f"[evidence-grid] {job['run_dir']}: its saved row is of another setting, weights or data; running "
              "it again", flush=True)
    run_one(job)
    got = collect([job["run_dir"]]) if (Path(job["run_dir"]) / "results.json").is_file() else []
    return {**got[0], "run": _key(job)} if got else None


def _key(job: dict[str, Any]) -> str:
    """A cell's run folder as its rows name it."""
    return str(Path(job["run_dir"]))


def prior_rows(path: Path) -> dict[str, dict[str, Any]]:
    """{run folder: row} of an earlier (possibly interrupted) write of the part's compact JSON."""
    from ncprompt.analysis.evidence import read_compact

    if not path.is_file():
        return {}
    return {str(Path(r["run"])): {k: v for k, v in r.items() if k != "part"}
            for r in read_compact(path) if r.get("run")}


def run_part(a: argparse.Namespace, name: str, part: list[dict[str, Any]]) -> int:
    """Run a part's cells and write its compact JSON after every finished cell (so an interrupted part keeps
    what finished, in a file that can be committed); a cell whose row an earlier write holds is not run again
    when its setting, weights and data digests are unchanged (checked in the worker), else it runs."""
    from ncprompt.analysis.evidence import write_compact
    from ncprompt.protocols.grid import _die_with_parent

    todo, t0, failed = jobs(a, part), time.time(), []
    path = Path(a.results) / f"{name}.json"
    prior, rows = {}, {}
    for other in [*a.reuse_rows, path]:  # the part's own rows last: they win
        prior.update(prior_rows(Path(other)))
    # an earlier row stays in the file until its cell has been checked (or rerun): a part interrupted while it
    # re-checks its saved rows loses none of them
    pending = {k: r for k, r in prior.items() if k in {_key(j) for j in todo}}

    def current() -> list[dict[str, Any]]:
        return [rows.get(_key(j)) or pending[_key(j)] for j in todo if _key(j) in rows or _key(j) in pending]

    estimated = {_key(j) for j in todo if _key(j) not in pending}  # the cells in the estimate
    to_run = sum(j["cost"] for j in todo if _key(j) in estimated) / a.workers  # estimated seconds, by the model
    print(f"[{name}] {len(todo)} cells ({len(pending)} with a saved row: {path}"
          f"{' and --reuse-rows' if a.reuse_rows else ''}), {a.workers} workers,"
          f" estimate {to_run:.0f} s for the {len(todo) - len(pending)} without", flush=True)
    import torch

    def meta() -> dict[str, Any]:
        return {"part": name, "command": a.command,
                "choices": {**CHOICES, **choices_made(a),
                            "dg": f"{a.dg_source} (protocol all) -> {', '.join(a.dg_targets)}"},
                "bench": a.bench, "model": a.model or "pocket (the configs')",
                "wall_s": round(time.time() - t0 + float(old_meta.get("wall_s") or 0), 1),
                "cells": len(todo), "finished": len(current()), "complete": len(rows) == len(todo),
                "failed": failed,
                "estimate_s": round(sum(c["cost"] for c in part) / a.workers),
                "machine": {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                            "torch": torch.__version__, "workers": a.workers}}

    old_meta = read_meta(path) if prior else {}
    with cf.ProcessPoolExecutor(a.workers, initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
        futs = {pool.submit(cell_row, j, prior.get(_key(j))): j for j in todo}
        for f in cf.as_completed(futs):
            job = futs[f]
            pending.pop(_key(job), None)  # checked now: kept below as its cell's row, or dropped with its cell
            try:
                r = f.result()
            except Exception as e:  # noqa: BLE001  (a failed cell is named; the others still run)
                failed.append(f"{job['run_dir']}: {type(e).__name__}: {e}")
                print(f"[{name}] FAILED {failed[-1]}", flush=True)
                continue
            if r is not None:
                rows[_key(job)] = r
                write_compact(current(), path, meta())
                if r != prior.get(_key(job)):  # ran now: a progress line (a reused row is silent)
                    # a stale saved row's cell was never in the estimate, so it leaves the minutes left alone
                    fresh = _key(job) in estimated
                    to_run -= job["cost"] / a.workers if fresh else 0.0
                    stale = "" if fresh else " (its saved row was stale: rerun)"
                    print(f"[{name}] {len(rows)}/{len(todo)} {job['run_dir']}: HM {r.get('hm', float('nan')):.2f},"
                          f" {float(r.get('seconds') or 0):.0f} s{stale}; about {max(to_run, 0) / 60:.0f} min left",
                          flush=True)
    write_compact(current(), path, meta())
    print(f"[{name}] {len(rows)} of {len(todo)} cells finished in {time.time() - t0:.0f} s; {path}", flush=True)
    return 1 if failed else 0


def read_meta(path: Path) -> dict[str, Any]:
    """The meta of a compact JSON part ({} when unreadable)."""
    try:
        return dict(json.loads(path.read_text()).get("meta") or {})
    except (OSError, ValueError, AttributeError):
        return {}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = resolve(options().parse_args(argv))
    a.command = "python scripts/evidence_grid.py " + " ".join(argv)  # recorded in the part's JSON
    choices_made(a)  # refuses a lambda chosen on the reported test splits before anything runs
    os.chdir(ROOT)
    ps = parts(a)
    if a.action == "list":
        for name, cs in ps.items():
            groups = sorted({f"{c['dataset']}/seed{c['seed']}" for c in cs})
            print(f"{name}: {len(cs)} cells, estimate {sum(c['cost'] for c in cs) / a.workers / 60:.0f} min on "
                  f"{a.workers} cores; {', '.join(groups)}\n  python scripts/evidence_grid.py run {name}")
        return 0
    if a.part not in ps:
        print(f"evidence_grid: unknown part {a.part!r}; the parts are {', '.join(ps)} (`list` shows them)",
              file=sys.stderr)
        return 2
    return run_part(a, a.name or a.part, ps[a.part])


if __name__ == "__main__":
    raise SystemExit(main())
