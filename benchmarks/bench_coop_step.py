"""Time of one CoOp training step (and one epoch) on CPU: reference vs ncprompt's cached path vs the floor.

ViT-B-16 with random weights (timings do not depend on the weights), K classes with 16 shots each, batch 32,
16 learned context tokens (random init), SGD with momentum (CoOp's optimiser). Three ways per step:

  reference  as CoOp's code base does it: encode the batch's 32 images live through the frozen image tower
             (224x224 tensors, no grad; image decoding/augmentation is *not* counted, so this is a lower bound),
             run every prompt through all 77 text positions (PromptTextEncoder(truncate=False)), CE, backward, step.
  cached     ncprompt's path: image features looked up from a cache tensor (CachedFeatures), prompts cut after the
             last end token; timed as single steps (the body of ncprompt.engine.trainer.train's loop) and as whole
             epochs of ncprompt.engine.trainer.train itself (epoch_time_s / steps).
  floor      only the text encoder's forward + backward over the K prompts at their real (truncated) length.

Since issue 20 the cached path also encodes the prompts' shared start once (``train.shared_prefix``, on by
default), so it can run below this floor, which encodes every prompt in full; ``bench_shared_prefix.py`` times
the shared-prefix step against its own floor.

Per epoch = (16 K / 32) steps x step time. The cached path pays a one-off feature extraction instead: N images x
views / image-encoding throughput (also measured, batch 32 on the same threads).

    .venv/bin/python benchmarks/bench_coop_step.py                      # K = 10 and 100 (several minutes)
    .venv/bin/python benchmarks/bench_coop_step.py --ks 10 --reps 3 --ref-reps 2 --train-epochs 1   # quick
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

from ncprompt.backbones.openclip import Backbone, load_backbone  # noqa: E402
from ncprompt.data.cache import CachedFeatures  # noqa: E402
from ncprompt.engine.trainer import (  # noqa: E402
    TrainConfig,
    make_optimizer,
    train,
    train_step,  # noqa: E402
)
from ncprompt.methods import build_method  # noqa: E402
from ncprompt.methods.base import MethodOutput  # noqa: E402

SHOTS = 16
BATCH = 32
N_CTX = 16
VIEWS = 8  # cached training views per image (TrainConfig.views default)


def build(backbone: Backbone, k: int, seed: int = 0) -> dict[str, Any]:
    """A CoOp method for K classes, its optimiser, 16-shot labels and a cache of random image features."""
    method = build_method("coop", backbone, classnames(k), {"n_ctx": N_CTX, "ctx_init": ""})
    cfg = TrainConfig(epochs=1, warmup_epochs=0, batch_size=BATCH, views=VIEWS, seed=1)
    opt = make_optimizer([p for p in method.parameters() if p.requires_grad], cfg)
    g = torch.Generator().manual_seed(seed)
    n = SHOTS * k
    labels = torch.arange(k).repeat_interleave(SHOTS)
    feats = torch.randn(n, VIEWS, backbone.embed_dim, generator=g)
    return {"method": method, "opt": opt, "cfg": cfg, "labels": labels, "source": CachedFeatures(feats), "n": n,
            "gen": g}


def cached_step_fn(b: dict[str, Any], regularizer: torch.nn.Module | None = None):
    """One step exactly as the body of ncprompt.engine.trainer.train's loop (optionally with the NPT hook)."""
    method, opt, source, labels, g = b["method"], b["opt"], b["source"], b["labels"], b["gen"]

    def step() -> None:
        idx = torch.randperm(b["n"], generator=g)[:BATCH]
        views = torch.randint(source.num_views, (BATCH,), generator=g)
        feats = source(idx, views)
        y = labels[idx]
        out, parts, loss = train_step(method, feats, y, opt, regularizer)
        for v in parts.values():
            float(v.detach())
        float(loss.detach())
        int((out.logits.argmax(-1) == y).sum())

    return step


def reference_step_fn(backbone: Backbone, b: dict[str, Any]):
    """CoOp's reference step: live image encoding of the batch + full 77-position text encoder."""
    method, opt, labels, g = b["method"], b["opt"], b["labels"], b["gen"]
    pl = method.prompt_learner
    images = torch.randn(BATCH, 3, 224, 224, generator=g)

    def step() -> None:
        idx = torch.randperm(b["n"], generator=g)[:BATCH]
        y = labels[idx]
        f = backbone.encode_images(images)  # no grad, frozen tower
        t = pl.encoder(pl.sequences(full=True), pl.pool_idx, truncate=False).float()
        out = MethodOutput(method.logits(f, t), t)
        loss = method.base_loss(out, y)["ce"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def floor_fn(b: dict[str, Any]):
    """Text encoder forward + backward over the K prompts at their real (truncated) length, nothing else."""
    pl = b["method"].prompt_learner
    length = int(pl.pool_idx.max()) + 1
    seq = pl.sequences().detach()[:, :length].clone().requires_grad_(True)
    pool = pl.pool_idx

    def step() -> None:
        seq.grad = None
        out = pl.encoder(seq, pool, truncate=False)  # already cut to the real length
        out.sum().backward()

    return step, length


def stage_breakdown(b: dict[str, Any], reps: int) -> dict[str, Any]:
    """Median time of each stage of the cached step (same library calls, timed one by one) and of the floor's
    forward / backward, to locate any time the cached path spends beyond the floor."""
    method, opt, source, labels, g = b["method"], b["opt"], b["source"], b["labels"], b["gen"]
    pl = method.prompt_learner
    stages: dict[str, list[float]] = {}

    def tick(name: str, t0: float) -> float:
        t1 = time.perf_counter()
        stages.setdefault(name, []).append(t1 - t0)
        return t1

    fl_seq = pl.sequences().detach()[:, : int(pl.pool_idx.max()) + 1].clone().requires_grad_(True)
    for i in range(reps + 1):
        t = time.perf_counter()
        idx = torch.randperm(b["n"], generator=g)[:BATCH]
        feats = source(idx, torch.randint(source.num_views, (BATCH,), generator=g))
        y = labels[idx]
        t = tick("cached: feature lookup", t)
        seqs = pl.sequences()
        t = tick("cached: PromptLearner.sequences() (K x L x width, cut after the end token)", t)
        text = pl.encoder(seqs, pl.pool_idx).float()
        t = tick("cached: PromptTextEncoder forward (truncated)", t)
        loss = method.base_loss(MethodOutput(method.logits(feats, text), text), y)["ce"]
        t = tick("cached: logits + cross-entropy", t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t = tick("cached: backward", t)
        opt.step()
        t = tick("cached: SGD step", t)
        fl_seq.grad = None
        out = pl.encoder(fl_seq, pl.pool_idx, truncate=False)
        t = tick("floor: forward", t)
        out.sum().backward()
        t = tick("floor: backward", t)
        if i == 0:  # warm-up
            stages.clear()
    return {name: statistics.median(v) for name, v in stages.items()}


def profile_ops(fn, reps: int, rows: int = 15) -> str:
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(reps):
            fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def image_throughput(backbone: Backbone, reps: int) -> dict[str, Any]:
    images = torch.randn(BATCH, 3, 224, 224)
    s = measure(lambda: backbone.encode_images(images), reps=reps, warmup=1)
    s["batch"] = BATCH
    s["images_per_s"] = BATCH / s["median_s"]
    return s


def train_epochs(b: dict[str, Any], epochs: int, regularizer: torch.nn.Module | None = None) -> dict[str, Any]:
    """ncprompt.engine.trainer.train itself, one epoch per call (fresh optimiser each call)."""
    per_step, per_epoch, wall = [], [], []
    mon = CpuMonitor()
    for e in range(epochs):
        cfg = TrainConfig(epochs=1, warmup_epochs=0, batch_size=BATCH, views=VIEWS, seed=1 + e)
        t0 = time.perf_counter()
        log = train(b["method"], b["source"], b["labels"], cfg, run_dir=None, regularizer=regularizer)
        wall.append(time.perf_counter() - t0)
        rec = log[-1]
        per_epoch.append(rec["epoch_time_s"])
        per_step.append(rec["epoch_time_s"] / rec["steps"])
    return {"epoch_s": summary(per_epoch), "step_s": summary(per_step), "train_call_wall_s": wall,
            "steps_per_epoch": log[-1]["steps"], "others_cpu_share": mon.read()["others_share"]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    logging.getLogger().setLevel(logging.ERROR)  # open_clip's "no pretrained weights" warning
    waited = wait_until_idle(args.wait_idle) if args.wait_idle > 0 else None
    if waited is not None and waited["pretrain_running"]:
        raise SystemExit("the pretraining job is still running and would distort the timings; "
                         "rerun later (or with --wait-idle 0 to measure anyway)")
    info = machine_info(args.threads)
    info["wait_for_idle"] = waited
    monitor = CpuMonitor()
    print(f"# machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, torch {info['torch']}, "
          f"{args.threads} threads; pretrain running: {info['pretrain_running_at_start']}, "
          f"load {info['loadavg_at_start'][0]:.2f}", flush=True)
    backbone = load_backbone(args.model, device="cpu")
    result: dict[str, Any] = {"model": args.model, "weights": "random", "shots": SHOTS, "batch": BATCH,
                              "n_ctx": N_CTX, "cached_views": VIEWS, "machine": info, "ks": {}}

    print("image encoding throughput ...", flush=True)
    enc = image_throughput(backbone, args.enc_reps)
    result["image_encoding"] = enc
    print(f"  {enc['images_per_s']:.1f} images/s (batch {BATCH}, median {fmt_s(enc['median_s'])})", flush=True)

    for k in args.ks:
        b = build(backbone, k)
        steps = SHOTS * k // BATCH
        r: dict[str, Any] = {"steps_per_epoch": steps, "n_images": b["n"]}
        fl, length = floor_fn(b)
        r["prompt_length_truncated"] = length
        print(f"K={k}: floor ...", flush=True)
        r["floor"] = measure(fl, args.reps, args.warmup)
        print(f"  {fmt_s(r['floor']['median_s'])}; cached single steps ...", flush=True)
        r["cached"] = measure(cached_step_fn(b), args.reps, args.warmup)
        print(f"  {fmt_s(r['cached']['median_s'])}; trainer.train epochs ...", flush=True)
        if args.train_epochs > 0:
            r["cached_train"] = train_epochs(b, args.train_epochs)
            print(f"  {fmt_s(r['cached_train']['step_s']['median_s'])} per step; reference ...", flush=True)
        ref_reps = args.ref_reps if args.ref_reps is not None else (3 if k >= 50 else args.reps)
        r["reference"] = measure(reference_step_fn(backbone, b), ref_reps, 1)
        print(f"  {fmt_s(r['reference']['median_s'])}", flush=True)
        cached_step = r["cached_train"]["step_s"]["median_s"] if args.train_epochs > 0 else r["cached"]["median_s"]
        r["cached_step_for_ratios_s"] = cached_step
        r["ratio_cached_over_floor"] = cached_step / r["floor"]["median_s"]
        r["ratio_single_step_over_floor"] = r["cached"]["median_s"] / r["floor"]["median_s"]
        r["speedup_reference_over_cached"] = r["reference"]["median_s"] / cached_step
        r["epoch_s"] = {name: steps * r[name]["median_s"] for name in ("reference", "floor")}
        r["epoch_s"]["cached"] = steps * cached_step
        if args.train_epochs > 0:
            r["epoch_s"]["cached_measured"] = r["cached_train"]["epoch_s"]["median_s"]
        if args.profile:
            print("  stage breakdown + profiler ...", flush=True)
            r["stages_s"] = stage_breakdown(b, args.reps)
            for name, v in r["stages_s"].items():
                print(f"    {name}: {fmt_s(v)}")
            r["profile_cached"] = profile_ops(cached_step_fn(b), 2)
            r["profile_floor"] = profile_ops(fl, 2)
            print("  cached step, top ops:\n" + r["profile_cached"] + "\n  floor, top ops:\n" + r["profile_floor"])
        r["feature_extraction_s_per_view"] = b["n"] / enc["images_per_s"]
        r["feature_extraction_s_all_views"] = b["n"] * VIEWS / enc["images_per_s"]
        result["ks"][str(k)] = r
        write_json(args.out.with_suffix(".partial.json"), result)  # survives an interrupted run

    finish_info(info, monitor)
    result["targets"] = targets(result)
    return result


def targets(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, r in result["ks"].items():
        need = 20.0 if int(k) <= 10 else 5.0 if int(k) >= 100 else None
        out[k] = {"cached_within_1.3x_floor": r["ratio_cached_over_floor"] <= 1.3}
        if need is not None:
            out[k][f"speedup_at_least_{need:g}x"] = r["speedup_reference_over_cached"] >= need
    return out


def tables(result: dict[str, Any]) -> str:
    rows = []
    for k, r in result["ks"].items():
        ct = r.get("cached_train")
        rows.append([
            k, str(r["steps_per_epoch"]), str(r["prompt_length_truncated"]),
            fmt_s(r["reference"]["median_s"]) + f" (n={r['reference']['reps']})",
            fmt_s(r["cached"]["median_s"]),
            fmt_s(ct["step_s"]["median_s"]) if ct else "-",
            fmt_s(r["floor"]["median_s"]),
            f"{r['ratio_cached_over_floor']:.2f}x",
            f"{r['speedup_reference_over_cached']:.1f}x",
            f"{100 * max(r[n]['others_cpu_share'] for n in ('reference', 'cached', 'floor')):.0f}%",
        ])
    t1 = markdown_table(["K", "steps/epoch", "prompt len", "reference step", "cached step (single)",
                         "cached step (trainer.train)", "floor", "cached / floor", "reference / cached",
                         "others' CPU (max)"], rows)
    rows = []
    enc = result["image_encoding"]
    for k, r in result["ks"].items():
        e = r["epoch_s"]
        rows.append([
            k, fmt_s(e["reference"]), fmt_s(e["cached"]),
            fmt_s(e["cached_measured"]) if "cached_measured" in e else "-", fmt_s(e["floor"]),
            f"{fmt_s(r['feature_extraction_s_per_view'])} / {fmt_s(r['feature_extraction_s_all_views'])}",
        ])
    t2 = markdown_table(["K", "reference epoch", "cached epoch (steps x step)", "cached epoch (measured)",
                         "floor epoch", f"one-off feature extraction (1 view / {VIEWS} views)"], rows)
    run = result["machine"].get("cpu_during_run", {})
    t3 = f"Image encoding ({result['model']}, batch {enc['batch']}): {enc['images_per_s']:.1f} images/s " \
         f"({fmt_s(enc['median_s'])} per batch). Other processes took {100 * run.get('others_share', 0):.1f}% " \
         f"of the CPUs during the whole run (steal {100 * run.get('steal_share', 0):.1f}%)."
    extra = []
    for k, r in result["ks"].items():
        if "stages_s" in r:
            extra.append(f"Stages of one step, K={k} (medians, timed one by one):\n\n"
                         + markdown_table(["stage", "time"], [[n, fmt_s(v)] for n, v in r["stages_s"].items()]))
    lines = []
    for k, t in result["targets"].items():
        lines.append(f"K={k}: " + ", ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in t.items()))
    return "\n\n".join([t1, t2, t3, *extra, "\n".join(lines)])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ViT-B-16")
    p.add_argument("--ks", type=int, nargs="+", default=[10, 100], help="numbers of classes")
    p.add_argument("--reps", type=int, default=7, help="timed repetitions of cached steps and floor")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up calls before each timing")
    p.add_argument("--ref-reps", type=int, default=None,
                   help="timed reference steps (default: 3 for K >= 50, else --reps)")
    p.add_argument("--train-epochs", type=int, default=2, help="epochs of trainer.train timed per K (0: skip)")
    p.add_argument("--enc-reps", type=int, default=3, help="timed image-encoding batches")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="also time the cached step's stages and run torch.profiler")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="first wait up to SECONDS for an idle machine (no pretraining job, others < 10%% CPU)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "coop_step.json")
    args = p.parse_args(argv)
    result = run(args)
    text = tables(result)
    print()
    print(text)
    result["markdown"] = text
    write_json(args.out, result)
    args.out.with_suffix(".partial.json").unlink(missing_ok=True)
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
