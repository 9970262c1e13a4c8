"""The cached CoOp step (bench_coop_step.py's, ViT-B-16 random weights) under a competing CPU load.

For each OpenMP wait policy (unset = libgomp's default short spin, PASSIVE, ACTIVE) and inter-op thread
setting (torch's default, 1) a child process (the policy is read when torch loads OpenMP) times the
step with 1 and 2 intra-op threads, first on the machine as it is, then with ``--busy`` competing
processes (a Python spin loop, killed afterwards) keeping the cores busy. Every number is
stored with the load average and `uptime` at its measurement and the CPU share other processes took.

    nice -n 15 .venv/bin/python benchmarks/bench_load.py                 # ~2 minutes on 2 cores
    nice -n 15 .venv/bin/python benchmarks/bench_load.py --k 10 --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, cpu_model, fmt_s, markdown_table, write_json  # noqa: E402

#: (OMP_WAIT_POLICY or None for unset, inter-op threads or None for torch's default)
CONFIGS: list[tuple[str | None, int | None]] = [(None, None), ("PASSIVE", None), ("ACTIVE", None), ("PASSIVE", 1)]


def busy_process(seconds: int) -> subprocess.Popen:
    """A competing process that spins for at most ``seconds``; its output does not go to our stdout (an
    inherited pipe kept open by a stray child is what hung the first version of this script)."""
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except FileNotFoundError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Runs in a fresh process whose OMP_WAIT_POLICY the parent set; times the step under each load."""
    import logging

    import torch

    if args.interop:
        torch.set_num_interop_threads(args.interop)
    logging.getLogger().setLevel(logging.ERROR)
    from _common import measure
    from bench_coop_step import build, cached_step_fn

    from ncprompt.backbones.openclip import load_backbone

    b = build(load_backbone(args.model, device="cpu"), args.k)
    step = cached_step_fn(b)
    out: dict[str, Any] = {"policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
                           "interop": torch.get_num_interop_threads(), "rows": []}
    for busy in (0, args.busy):
        procs = [busy_process(args.busy_timeout) for _ in range(busy)]
        try:
            time.sleep(0.5 if busy else 0.0)
            for threads in (1, 2):
                torch.set_num_threads(threads)
                s = measure(step, args.reps, args.warmup)
                out["rows"].append({"busy": busy, "threads": threads, "median_s": s["median_s"], "all_s": s["all_s"],
                                    "others_cpu_share": s["others_cpu_share"], "uptime": uptime(),
                                    "loadavg": list(os.getloadavg())})
                print(f"# {out['policy']:7s} interop {out['interop']} busy {busy} threads {threads}: "
                      f"{fmt_s(s['median_s'])}  ({uptime()})", file=sys.stderr, flush=True)
        finally:
            for p in procs:  # only the processes started here, by their own handle
                p.kill()
                p.wait()
    return out


def table(runs: list[dict[str, Any]]) -> str:
    idle = {(r["policy"], r["interop"], row["threads"]): row["median_s"]
            for r in runs for row in r["rows"] if row["busy"] == 0}
    rows = []
    for r in runs:
        for row in r["rows"]:
            base = idle[(r["policy"], r["interop"], row["threads"])]
            rows.append([r["policy"], str(r["interop"]), str(row["threads"]), str(row["busy"]), fmt_s(row["median_s"]),
                         f"{row['median_s'] / base:.1f}x" if row["busy"] else "-",
                         f"{100 * row['others_cpu_share']:.0f}%", row["uptime"].split("load average:")[-1].strip()])
    return markdown_table(["OMP_WAIT_POLICY", "inter-op threads", "threads", "busy procs", "step (median)",
                           "vs no extra load", "others' CPU", "load average (1, 5, 15 min)"], rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ViT-B-16")
    p.add_argument("--k", type=int, default=10, help="number of classes")
    p.add_argument("--reps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--busy", type=int, default=2, help="competing busy processes")
    p.add_argument("--busy-timeout", type=int, default=120, help="seconds after which a busy process ends anyway")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "load.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--interop", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    result: dict[str, Any] = {"model": args.model, "k": args.k, "cpu": cpu_model(), "logical_cpus": os.cpu_count(),
                              "busy": args.busy, "uptime_at_start": uptime(), "runs": []}
    for policy, interop in CONFIGS:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
        if policy:
            env["OMP_WAIT_POLICY"] = policy
        cmd = [sys.executable, __file__, "--child", "--k", str(args.k), "--reps", str(args.reps), "--warmup",
               str(args.warmup), "--busy", str(args.busy), "--busy-timeout", str(args.busy_timeout), "--model",
               args.model, "--interop", str(interop or 0)]
        r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=False)  # progress on stderr
        if r.returncode != 0:
            raise SystemExit(f"child {policy}/{interop} failed (exit status {r.returncode})")
        result["runs"].append(json.loads(r.stdout.strip().splitlines()[-1]))
        write_json(args.out.with_suffix(".partial.json"), result)
    result["uptime_at_end"] = uptime()
    result["markdown"] = table(result["runs"])
    print(result["markdown"])
    write_json(args.out, result)
    args.out.with_suffix(".partial.json").unlink(missing_ok=True)
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
