"""The cells of scripts/pocket_methods.sh in one process pool: every (tau, method) grid's cells, longest
first, one torch thread each, so W workers stay busy until the last cell (the script runs one grid after
another, each of 18 cells). Same configs (``protocol --print-config``), same run folders and the same
``protocol.grid.run_one`` as the script: finished cells are reused, a rerun resumes; results_doc.py reads
the run folders. Stops starting cells after DEADLINE_S seconds.

    python scripts/pocket_methods_pool.py OUT WORKERS DEADLINE_S [DATASETS...]   # env: SEEDS TAUS METHODS
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

NC = [sys.executable, "-c", "from ncprompt.cli import main; main()"]
OUT, WORKERS, DEADLINE = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
DATASETS = sys.argv[4:] or ["emoji_animals", "emoji_symbols", "emoji_hands"]
SEEDS = [int(s) for s in os.environ.get("SEEDS", "1 2 3").split()]
TAUS = os.environ.get("TAUS", "1.0 0.25").split()
METHODS = os.environ.get("METHODS", "cocoop maple ivlp promptsrc prograd tcp linear_probe").split()
COST = {"ivlp": 10, "promptsrc": 10, "cocoop": 6, "prograd": 5, "maple": 3, "tcp": 1, "linear_probe": 0.5}
DCOST = {"emoji_symbols": 1.3, "emoji_animals": 1.0, "emoji_hands": 0.2}
T0 = time.time()


def combo_args(tau: str, m: str) -> list[str]:
    config, specs = (("configs/pocket_linear_probe.yaml", ["zeroshot", "linear_probe"]) if m == "linear_probe"
                     else (f"configs/pocket_{m}_b2n.yaml", [m, f"{m}+npt"]))
    return ["--no-progress", "protocol", "--config", config, "--datasets", *DATASETS, "--methods", *specs,
            "--seeds", *map(str, SEEDS), "--shots", "16", "--imbalance", tau, "--output",
            str(OUT / f"tau{tau}-methods" / m)]


def main() -> None:
    from ncprompt.protocols.demo import per_method_options as opts
    from ncprompt.protocols.grid import MethodSpec, _die_with_parent, grid_jobs, run_one

    jobs = []
    for tau in TAUS:
        for m in METHODS:
            args = combo_args(tau, m)
            text = subprocess.run(NC + args + ["--print-config"], capture_output=True, text=True, check=True).stdout
            base = yaml.safe_load(text)
            specs = [MethodSpec.parse(s, opts(base)) for s in args[args.index("--methods") + 1: args.index("--seeds")]]
            for j in grid_jobs(base, DATASETS, specs, SEEDS, Path(args[-1]), [16]):
                j["threads"] = 1
                j["cost"] = COST[m] * DCOST.get(j["dataset"], 1.0)
                jobs.append(j)
    jobs.sort(key=lambda j: -j["cost"])
    print(f"[run11] {len(jobs)} cells, {WORKERS} workers ({time.time() - T0:.0f} s)", flush=True)
    done = failed = 0
    with cf.ProcessPoolExecutor(WORKERS, initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
        futs = {pool.submit(run_one, j): j for j in jobs}
        try:
            for f in cf.as_completed(futs, timeout=max(1.0, DEADLINE - (time.time() - T0))):
                j = futs[f]
                try:
                    f.result()
                    done += 1
                except Exception as e:  # noqa: BLE001
                    failed += 1
                    print(f"[run11] FAILED {j['run_dir']}: {type(e).__name__}: {e}", flush=True)
                if (done + failed) % 20 == 0:
                    print(f"[run11] {done} done, {failed} failed ({time.time() - T0:.0f} s)", flush=True)
        except cf.TimeoutError:
            print(f"[run11] deadline: {done} done, {failed} failed of {len(jobs)}", flush=True)
            for p in list(pool._processes.values()):
                p.kill()
            pool.shutdown(wait=False, cancel_futures=True)
    print(f"[run11] cells: {done} done, {failed} failed of {len(jobs)} ({time.time() - T0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
