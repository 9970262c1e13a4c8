"""The cached CoOp step under bf16 autocast vs fp32 on this CPU (issue 12.4).

Same set-up as bench_coop_step.py (ViT-B-16 random weights, K classes x 16 shots, batch 32, 16 context
tokens, SGD): per K and precision, the cached step (``ncprompt.engine.trainer.train_step`` through the
method's autocast) and the text-encoder floor (forward + backward of the K truncated prompts, under
the same autocast). The machine is shared: each number carries the 1-minute load average (``uptime``)
and the CPU share other processes took while it was measured. Target: bf16 cached step <= 0.5x the
fp32 floor. bf16 is only fast where the CPU computes it natively (AMX-BF16 / AVX512_BF16); the
result records what torch sees.

    .venv/bin/python benchmarks/bench_precision.py                 # K = 10 and 100
    .venv/bin/python benchmarks/bench_precision.py --ks 10 --reps 3
    .venv/bin/python benchmarks/bench_precision.py --accuracy emoji_animals --seeds 1 2 3   # pocket bench accuracy

``--accuracy DATASET`` instead trains CoOp with the ``pocket_b2n`` preset (base-to-new, 16 shots) on a pocket
dataset under fp32 and under bf16 autocast for each seed, and records base / new / HM and the seconds of each
run, so the two precisions' difference can be set against the seed-to-seed spread.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, CpuMonitor, finish_info, fmt_s, machine_info, markdown_table, measure, write_json  # noqa: E402
from bench_coop_step import build, cached_step_fn, floor_fn  # noqa: E402

from ncprompt.backbones.openclip import load_backbone  # noqa: E402
from ncprompt.backbones.precision import cpu_native_bf16  # noqa: E402


def timed(fn, reps: int, warmup: int) -> dict[str, Any]:
    """:func:`_common.measure` plus the load average right after."""
    s = measure(fn, reps, warmup)
    s["loadavg_1m"] = os.getloadavg()[0]
    return s


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    info = machine_info(args.threads)
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    info.update(cpu_capability=torch.backends.cpu.get_cpu_capability(), cpu_native_bf16=cpu_native_bf16(),
                amx_bf16=caps.get("amx_bf16"), avx512_bf16=caps.get("avx512_bf16"))
    monitor = CpuMonitor()
    print(f"# {info['cpu']}, capability {info['cpu_capability']}, native bf16: {info['cpu_native_bf16']}, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    torch.manual_seed(0)
    backbone = load_backbone(args.model, device="cpu")
    result: dict[str, Any] = {"model": args.model, "machine": info, "ks": {}}
    for k in args.ks:
        r: dict[str, Any] = {}
        for precision in ("fp32", "bf16"):
            backbone.set_precision(precision)
            b = build(backbone, k)
            fl, _ = floor_fn(b)

            def floor(fl=fl) -> None:
                with backbone.autocast():
                    fl()

            r[precision] = {"cached": timed(cached_step_fn(b), args.reps, args.warmup),
                            "floor": timed(floor, args.reps, args.warmup)}
            print(f"K={k} {precision}: cached {fmt_s(r[precision]['cached']['median_s'])}, floor "
                  f"{fmt_s(r[precision]['floor']['median_s'])} (load {r[precision]['cached']['loadavg_1m']:.2f})",
                  flush=True)
        r["bf16_cached_over_fp32_cached"] = r["bf16"]["cached"]["median_s"] / r["fp32"]["cached"]["median_s"]
        r["bf16_cached_over_fp32_floor"] = r["bf16"]["cached"]["median_s"] / r["fp32"]["floor"]["median_s"]
        r["target_bf16_at_most_0.5x_fp32_floor"] = r["bf16_cached_over_fp32_floor"] <= 0.5
        result["ks"][str(k)] = r
        write_json(args.out.with_suffix(".partial.json"), result)
    backbone.set_precision("fp32")
    finish_info(info, monitor)
    return result


def accuracy(args: argparse.Namespace) -> dict[str, Any]:
    """CoOp (``pocket_b2n``) on a pocket dataset, fp32 vs bf16, per seed (see the module docstring)."""
    import time

    import ncprompt.pocket.suite  # noqa: F401  (registers the emoji datasets)
    from ncprompt.config import RunConfig, preset
    from ncprompt.protocols.experiment import run_experiment

    torch.set_num_threads(args.threads)
    info = machine_info(args.threads)
    info.update(cpu_native_bf16=cpu_native_bf16())
    out: dict[str, Any] = {"dataset": args.accuracy, "recipe": "pocket_b2n (CoOp)", "machine": info, "runs": []}
    for seed in args.seeds:
        for precision in ("fp32", "bf16"):
            cfg = preset("pocket_b2n")
            cfg["run"] = {**cfg.get("run", {}), "precision": precision, "diagnostics": False,
                          "cache_dir": str(args.cache)}
            cfg["data"] = {**cfg["data"], "dataset": args.accuracy}
            cfg["train"] = {**cfg["train"], "seed": seed}
            t0 = time.time()
            res = run_experiment(RunConfig.from_dict(cfg), out_dir=None)
            row = {"seed": seed, "precision": precision, "base": res.splits["base"].top1,
                   "new": res.splits["new"].top1, "hm": res.hm, "seconds": round(time.time() - t0, 1),
                   "loadavg_1m": os.getloadavg()[0]}
            out["runs"].append(row)
            print(f"seed {seed} {precision}: base {row['base']:.2f} new {row['new']:.2f} hm {row['hm']:.2f} "
                  f"({row['seconds']} s, load {row['loadavg_1m']:.2f})", flush=True)
            write_json(args.out.with_suffix(".partial.json"), out)
    return out


def accuracy_table(result: dict[str, Any]) -> str:
    import numpy as np

    rows = []
    for precision in ("fp32", "bf16"):
        rs = [r for r in result["runs"] if r["precision"] == precision]
        cells = [f"{np.mean([r[k] for r in rs]):.2f} ± {np.std([r[k] for r in rs]):.2f}" for k in ("base", "new", "hm")]
        rows.append([precision, str(len(rs)), *cells, f"{np.mean([r['seconds'] for r in rs]):.0f} s"])
    return markdown_table(["precision", "seeds", "base", "new", "HM", "s / run"], rows)


def table(result: dict[str, Any]) -> str:
    rows = []
    for k, r in result["ks"].items():
        others = max(r[p][w]["others_cpu_share"] for p in ("fp32", "bf16") for w in ("cached", "floor"))
        rows.append([k, *(fmt_s(r[p][w]["median_s"]) for p in ("fp32", "bf16") for w in ("cached", "floor")),
                     f"{r['bf16_cached_over_fp32_cached']:.2f}x", f"{r['bf16_cached_over_fp32_floor']:.2f}x",
                     "met" if r["target_bf16_at_most_0.5x_fp32_floor"] else "MISSED",
                     "/".join(f"{r[p]['cached']['loadavg_1m']:.1f}" for p in ("fp32", "bf16")),
                     f"{100 * others:.0f}%"])
    m = result["machine"]
    return (markdown_table(["K", "fp32 cached", "fp32 floor", "bf16 cached", "bf16 floor", "bf16/fp32 cached",
                            "bf16 cached / fp32 floor", "target <= 0.5x", "load 1m (fp32/bf16)", "others' CPU (max)"],
                           rows)
            + f"\n\n{m['cpu']}, torch {m['torch']}, {m['torch_threads']} threads, capability {m['cpu_capability']}, "
              f"native bf16 (AMX-BF16/AVX512_BF16): {m['cpu_native_bf16']}.")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ViT-B-16")
    p.add_argument("--ks", type=int, nargs="+", default=[10, 100])
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--accuracy", metavar="DATASET", help="pocket dataset: CoOp accuracy under fp32 vs bf16")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--cache", type=Path, default=Path("cache/precision"))
    args = p.parse_args(argv)
    if args.out is None:
        args.out = RESULTS_DIR / ("precision_accuracy.json" if args.accuracy else "precision.json")
    if args.accuracy:
        result = accuracy(args)
        result["markdown"] = accuracy_table(result)
    else:
        result = run(args)
        result["markdown"] = table(result)
    print("\n" + result["markdown"])
    write_json(args.out, result)
    args.out.with_suffix(".partial.json").unlink(missing_ok=True)
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
