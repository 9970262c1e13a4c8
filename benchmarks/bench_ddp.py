"""Cached CoOp training (ViT-B-16 random weights, K classes x 16 shots, batch 32) on 1 process vs 2 ranks.

Three ways, each ``trainer.train`` for ``--epochs`` epochs on the same cached features:

  single  one process, ``--threads`` torch threads;
  ddp     torchrun, 2 ranks x (threads / 2) threads, every global batch split over the ranks (DDP);
  main    torchrun, 2 ranks, rank 0 trains alone with all threads, rank 1 waits for the result (the
          default for cached features under torchrun).

Reports the median epoch time (rank 0's ``epoch_time_s``) and the wall time of the train call, with
`uptime` at each measurement.

    nice -n 15 .venv/bin/python benchmarks/bench_ddp.py --k 10 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, cpu_model, fmt_s, markdown_table, write_json  # noqa: E402
from bench_load import uptime  # noqa: E402


def child(args: argparse.Namespace) -> None:
    import logging

    import torch

    logging.getLogger().setLevel(logging.ERROR)
    from bench_coop_step import BATCH, VIEWS, build

    from ncprompt.backbones.openclip import load_backbone
    from ncprompt.engine import distributed
    from ncprompt.engine.progress import quiet
    from ncprompt.engine.trainer import TrainConfig, train

    distributed.init_from_env("cpu")
    torch.set_num_threads(args.threads)
    b = build(load_backbone(args.model, device="cpu"), args.k)
    cfg = TrainConfig(epochs=args.epochs, warmup_epochs=0, batch_size=BATCH, views=VIEWS, seed=1)
    distributed.barrier()
    t0 = time.perf_counter()
    with quiet():
        log = train(b["method"], b["source"], b["labels"], cfg, ddp=args.mode if args.mode != "single" else None)
    wall = time.perf_counter() - t0
    if distributed.is_main():
        print(json.dumps({"mode": args.mode, "epoch_s": [r["epoch_time_s"] for r in log], "wall_s": wall,
                          "steps_per_epoch": log[-1]["steps"], "threads_per_rank": args.threads,
                          "world": max(distributed.world_size(), 1), "uptime": uptime()}))
    distributed.teardown()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ViT-B-16")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="threads of the single process (split over 2 ranks)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "ddp.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="single", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return
    from ncprompt.engine.distributed import free_port

    result: dict[str, Any] = {"model": args.model, "k": args.k, "cpu": cpu_model(), "logical_cpus": os.cpu_count(),
                              "runs": []}
    common = ["--child", "--k", str(args.k), "--epochs", str(args.epochs), "--model", args.model]
    per_rank = max(1, args.threads // 2)
    for mode in ("single", "ddp", "main"):
        if mode == "single":
            cmd = [sys.executable, __file__, *common, "--mode", mode, "--threads", str(args.threads)]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                   "127.0.0.1", "--master_port", str(free_port()), __file__, *common, "--mode", mode,
                   "--threads", str(per_rank)]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False,
                           env={**os.environ, "OMP_NUM_THREADS": str(per_rank)})
        if r.returncode != 0:
            raise SystemExit(f"{mode} failed: {r.stderr[-3000:]}")
        run = json.loads([x for x in r.stdout.splitlines() if x.startswith("{")][-1])
        print(f"# {mode}: epochs {[fmt_s(x) for x in run['epoch_s']]}  ({run['uptime']})", flush=True)
        result["runs"].append(run)
    rows = []
    base = statistics.median(result["runs"][0]["epoch_s"])
    for run in result["runs"]:
        med = statistics.median(run["epoch_s"])
        rows.append([run["mode"], f"{run['world']} x {run['threads_per_rank']}", str(run["steps_per_epoch"]),
                     fmt_s(med), f"{med / base:.2f}x", fmt_s(run["wall_s"]),
                     run["uptime"].split("load average:")[-1].strip()])
    result["markdown"] = markdown_table(["mode", "ranks x threads", "steps/epoch", "epoch (median)", "vs single",
                                         "train() wall", "load average (1, 5, 15 min)"], rows)
    print(result["markdown"])
    write_json(args.out, result)


if __name__ == "__main__":
    main()
