"""Cost of the NPT regularisers per CoOp training step (ViT-B-16, K = 100, cached image features, CPU).

The regulariser is built as ncprompt.protocols.experiment does it: ``NPTRegularizer(NPTConfig(enabled=True, ...),
K, embed_dim)``, ``.setup(zero_shot_text=<zero-shot classifier>, image_class_means=<NCAccumulator class means of the
cached features>)``, and called through the trainer's hook ``reg(text_features, image_features, labels)``.

Measured per variant (primary: pairwise LC + self-duality MI; anchored LC; cross-similarity MI; primary with EMA image
means instead of fixed ones):
  * the CoOp cached step (the body of trainer.train's loop, see bench_coop_step.py) with and without the hook,
    in interleaved rounds so that drift affects all variants alike;
  * the regulariser's forward + backward alone (text features (K, E) as a leaf, batch of 32 image features).

    .venv/bin/python benchmarks/bench_npt_cost.py                 # K = 100
    .venv/bin/python benchmarks/bench_npt_cost.py --k 10 --reps 3 # quick
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS_DIR,
    CpuMonitor,
    classnames,
    finish_info,
    fmt_s,
    machine_info,
    markdown_table,
    measure,
    summary,
    wait_until_idle,
    write_json,
)
from bench_coop_step import BATCH, build, cached_step_fn, train_epochs  # noqa: E402

from ncprompt.backbones.openclip import load_backbone  # noqa: E402
from ncprompt.collapse.regularizers import NPTConfig, NPTRegularizer  # noqa: E402
from ncprompt.methods.zeroshot import zero_shot_classifier  # noqa: E402
from ncprompt.metrics.neural_collapse import NCAccumulator  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "pairwise LC + self-duality MI (primary)": {"lc_form": "pairwise", "mi_form": "self_duality"},
    "anchored LC + self-duality MI": {"lc_form": "anchored", "mi_form": "self_duality"},
    "pairwise LC + cross-similarity MI": {"lc_form": "pairwise", "mi_form": "cross_similarity"},
    "pairwise LC + self-duality MI, EMA image means": {"lc_form": "pairwise", "mi_form": "self_duality",
                                                       "_ema": True},
}


def make_regularizer(options: dict[str, Any], k: int, dim: int, zero_shot: torch.Tensor,
                     class_means: torch.Tensor) -> NPTRegularizer:
    opts = {key: v for key, v in options.items() if not key.startswith("_")}
    reg = NPTRegularizer(NPTConfig(enabled=True, **opts), k, dim)
    reg.setup(zero_shot_text=zero_shot, image_class_means=None if options.get("_ema") else class_means)
    reg.train()
    return reg


def reg_alone_fn(reg: NPTRegularizer, k: int, dim: int, gen: torch.Generator):
    text = torch.randn(k, dim, generator=gen).requires_grad_(True)
    feats = torch.randn(BATCH, dim, generator=gen)

    def call() -> None:
        y = torch.randint(k, (BATCH,), generator=gen)
        text.grad = None
        reg(text, feats, y)["loss"].backward()

    return call


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    logging.getLogger().setLevel(logging.ERROR)
    waited = wait_until_idle(args.wait_idle) if args.wait_idle > 0 else None
    if waited is not None and waited["pretrain_running"]:
        raise SystemExit("the pretraining job is still running and would distort the timings; "
                         "rerun later (or with --wait-idle 0 to measure anyway)")
    info = machine_info(args.threads)
    info["wait_for_idle"] = waited
    monitor = CpuMonitor()
    print(f"# machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, torch {info['torch']}, "
          f"{args.threads} threads; pretrain running: {info['pretrain_running_at_start']}", flush=True)
    backbone = load_backbone(args.model, device="cpu")
    k, dim = args.k, backbone.embed_dim
    b = build(backbone, k)
    zero_shot = zero_shot_classifier(backbone, classnames(k), ["a photo of a {}."])
    acc = NCAccumulator(k, dim, normalize=True)
    acc.update(b["source"].features[:, 0], b["labels"])
    class_means = acc.class_means().float()
    regs = {name: make_regularizer(o, k, dim, zero_shot, class_means) for name, o in VARIANTS.items()}

    result: dict[str, Any] = {"model": args.model, "k": k, "batch": BATCH, "machine": info, "variants": {}}
    gen = torch.Generator().manual_seed(1)
    print("regulariser forward + backward alone ...", flush=True)
    for name, reg in regs.items():
        result["variants"][name] = {"reg_alone": measure(reg_alone_fn(reg, k, dim, gen), args.reg_reps, 5)}
        print(f"  {name}: {fmt_s(result['variants'][name]['reg_alone']['median_s'])}", flush=True)

    print(f"steps with / without the hook, {args.reps} interleaved rounds ...", flush=True)
    fns = {"none": cached_step_fn(b)} | {name: cached_step_fn(b, reg) for name, reg in regs.items()}
    for fn in fns.values():  # warm-up
        for _ in range(args.warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    mon = CpuMonitor()
    for _ in range(args.reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    others = mon.read()["others_share"]
    base = summary(times["none"])
    base["others_cpu_share"] = others
    result["step_without_npt"] = base
    for name in regs:
        v = result["variants"][name]
        v["step_with_npt"] = summary(times[name])
        v["step_with_npt"]["others_cpu_share"] = others
        # paired differences (same round) are less noisy than the difference of medians
        diffs = [w - o for w, o in zip(times[name], times["none"], strict=True)]
        v["step_overhead_paired_median_s"] = statistics.median(diffs)
        v["step_overhead_share"] = v["step_overhead_paired_median_s"] / base["median_s"]
        v["reg_alone_share"] = v["reg_alone"]["median_s"] / base["median_s"]
    if args.train_epochs > 0:
        print("trainer.train epochs without / with the primary hook ...", flush=True)
        primary = next(iter(regs))
        result["train_without_npt"] = train_epochs(b, args.train_epochs)
        result["train_with_primary_npt"] = train_epochs(b, args.train_epochs, regs[primary])
    finish_info(info, monitor)
    return result


def tables(result: dict[str, Any]) -> str:
    base = result["step_without_npt"]["median_s"]
    rows = []
    for name, v in result["variants"].items():
        rows.append([
            name, fmt_s(v["reg_alone"]["median_s"]), f"{100 * v['reg_alone_share']:.2f}%",
            fmt_s(v["step_with_npt"]["median_s"]), fmt_s(base),
            f"{1000 * v['step_overhead_paired_median_s']:+.1f} ms ({100 * v['step_overhead_share']:+.1f}%)",
        ])
    t = markdown_table(["NPT variant", "regulariser fwd+bwd alone", "alone / step", "step with NPT",
                        "step without NPT", "paired step overhead"], rows)
    notes = [f"ViT-B-16, K={result['k']}, batch {result['batch']}, cached CoOp step; step medians over "
             f"{result['step_without_npt']['reps']} interleaved rounds, regulariser alone over "
             f"{next(iter(result['variants'].values()))['reg_alone']['reps']} calls. Other processes took "
             f"{100 * result['machine']['cpu_during_run']['others_share']:.1f}% of the CPUs during the run."]
    if "train_without_npt" in result:
        a = result["train_without_npt"]["step_s"]["median_s"]
        w = result["train_with_primary_npt"]["step_s"]["median_s"]
        notes.append(f"trainer.train per step: {fmt_s(a)} without, {fmt_s(w)} with the primary NPT hook "
                     f"({100 * (w - a) / a:+.1f}%).")
    return t + "\n\n" + "\n".join(notes)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ViT-B-16")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--reps", type=int, default=7, help="interleaved rounds of steps (each variant once per round)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--reg-reps", type=int, default=50, help="timed calls of the regulariser alone")
    p.add_argument("--train-epochs", type=int, default=0, help="also time trainer.train epochs with/without NPT")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="first wait up to SECONDS for an idle machine (no pretraining job, others < 10%% CPU)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "npt_cost.json")
    args = p.parse_args(argv)
    result = run(args)
    text = tables(result)
    print()
    print(text)
    result["markdown"] = text
    write_json(args.out, result)
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
