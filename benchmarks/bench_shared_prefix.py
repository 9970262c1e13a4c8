"""Prompt step of every prompt method: shared-prefix encoding against the full path and against its floor.

Prompt step = the method's text features over its K prompts (CoCoOp: the K prompts of each of B images' shifted
contexts) and the backward of a fixed random functional of the normalised features into every prompt parameter,
the text side of one training step. Three ways, same weights, same prompts:

  full     ``train.shared_prefix: false``: every prompt through the text tower, cut after the last end token
  shared   ``train.shared_prefix: true`` (the default): the prompts' common start once, the class positions per class
  floor    the shared prefix once (G rows of P positions) plus the class positions alone (G K rows of S positions,
           no attention to the prefix): the same tokens through the same blocks, the least the shared step can cost

Each repetition times full, shared and floor in turn (interleaved, so drift and other processes hit all three).
Each cell also records the largest difference between the full and the shared step's features and gradients
(relative to the largest entry), so a GPU run (fp32 / bf16) checks the equality as well.
Models: the pocket model (K = 42 and 100: the suite's 70-100-class sets' base halves and all classes) and a random
ViT-B-16 (K = 100; ``--k1000`` adds K = 1000). TCP's class tokens enter at a middle block, from which its rows run
in full (its floor is the shared part's floor). Results: ``benchmarks/results/shared_prefix_<device>_<precision>.json``
and the ``bench_shared_prefix`` section of docs/benchmarks.md (every such JSON file, one table each).

    .venv/bin/python benchmarks/bench_shared_prefix.py                                  # CPU fp32, both models
    .venv/bin/python benchmarks/bench_shared_prefix.py --device cuda --precision bf16 --k1000
    .venv/bin/python benchmarks/bench_shared_prefix.py --models pocket --ks-pocket 8 --methods coop --reps 1  # smoke
    .venv/bin/python benchmarks/bench_shared_prefix.py --models pocket --methods coop --seeds 5   # seeds batched
    .venv/bin/python benchmarks/bench_shared_prefix.py --doc                            # rewrite the docs section
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS_DIR,
    CpuMonitor,
    classnames,
    finish_info,
    fmt_s,
    machine_info,
    markdown_table,
    write_json,
)
from doc_sections import write_sections  # noqa: E402

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "bench_shared_prefix"

#: method -> (pocket options (4 text blocks; the pocket presets' contexts), ViT-B-16 options (published recipes))
METHODS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "coop": ({"n_ctx": 16, "ctx_init": ""}, {"n_ctx": 16, "ctx_init": ""}),
    "kgcoop": ({"n_ctx": 3, "ctx_init": "an emoji of"}, {"n_ctx": 4, "ctx_init": "a photo of a"}),
    "cocoop": ({}, {}),
    "maple": ({"n_ctx": 2, "depth": 3}, {"n_ctx": 2, "depth": 9}),
    "ivlp": ({"depth_text": 3, "depth_vision": 3}, {"depth_text": 9, "depth_vision": 9}),
    "promptsrc": ({"depth_text": 3, "depth_vision": 3, "templates": "dataset"},
                  {"depth_text": 9, "depth_vision": 9, "templates": "dataset"}),
    "prograd": ({}, {}),
    "tcp": ({"class_layer": 2}, {"class_layer": 8}),
}
WAYS = ("full", "shared", "floor")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _text(m, images: torch.Tensor | None) -> torch.Tensor:
    """(rows, E) text features of the method's prompt step (CoCoOp: per image)."""
    if images is not None:
        return m.conditional_text_features(images).flatten(0, 1)
    return m.text_features()


def _deep(m) -> list[torch.Tensor] | None:
    prompts = getattr(m, "prompts", None)
    return (list(prompts.deep_text) or None) if prompts is not None else None


def build(backbone, method: str, opts: dict[str, Any], k: int, cocoop_batch: int) -> dict[str, Any]:
    """The method built twice (switch off / on, same seeds), CoCoOp's image batch, the functional's weights."""
    from ncprompt.config.methods import parse_method
    from ncprompt.methods import build_method
    from ncprompt.methods.base import MethodContext

    cfg = parse_method({"name": method, **opts})
    names = classnames(k)
    ms = {}
    for shared in (False, True):
        torch.manual_seed(0)
        ctx = MethodContext(backbone, names, ["a photo of a {}."], shared_prefix=shared)
        ms[shared] = build_method(cfg, ctx).train()
    g = torch.Generator().manual_seed(1)
    images = None
    if method == "cocoop":
        images = torch.randn(cocoop_batch, backbone.embed_dim, generator=g).to(backbone.device)
    rows = k * (cocoop_batch if images is not None else 1)
    w = torch.randn(rows, backbone.embed_dim, generator=g).to(backbone.device)
    return {"full": ms[False], "shared": ms[True], "images": images, "w": w}


def step_fn(backbone, m, images, w):
    params = [p for p in m.parameters() if p.requires_grad]

    def step() -> None:
        for p in params:
            p.grad = None
        with backbone.autocast():
            t = _text(m, images)
        (F.normalize(t.float(), dim=-1) * w).sum().backward()
        _sync(backbone.device)

    return step


def floor_fn(backbone, m, images, w):
    """The prefix once + the class positions alone, forward and backward (the shared step's token count)."""
    pl = m.prompt_learner
    p = pl.prefix_len
    g = 1 if images is None else len(images)
    with torch.no_grad():
        ctx = pl.ctx.detach().unsqueeze(0).expand(g, -1, -1)
        sos = pl.token_prefix[:1].expand(g, -1, -1)
        prefix = torch.cat([sos, ctx.to(sos.dtype), pl.token_suffix[:1, : pl.n_frozen].expand(g, -1, -1)], dim=1)
        suffix = pl.suffix()[:, pl.n_frozen :].repeat(g, 1, 1)
    prefix = prefix.clone().requires_grad_(True)
    suffix = suffix.clone().requires_grad_(True)  # so the class positions' backward runs, as in the shared step
    pool_a = torch.full((g,), p - 1, device=prefix.device)
    pool_s = (pl.pool_idx - p).repeat(g)
    deep = _deep(m)

    def step() -> None:
        prefix.grad = suffix.grad = None
        with backbone.autocast():
            a = pl.encoder(prefix, pool_a, truncate=False, deep_prompts=deep)
            s = pl.encoder(suffix, pool_s, truncate=False)
        ((F.normalize(s.float(), dim=-1) * w).sum() + a.float().sum()).backward()
        _sync(backbone.device)

    return step


def agreement(backbone, b: dict[str, Any]) -> dict[str, float]:
    """Largest difference between the full and the shared step: features (of the largest |feature|) and
    prompt gradients (of each parameter's largest entry), so a GPU run checks equality too."""
    res = {}
    for way in ("full", "shared"):
        m = b[way]
        for p in m.parameters():
            p.grad = None
        with backbone.autocast():
            t = _text(m, b["images"])
        (F.normalize(t.float(), dim=-1) * b["w"]).sum().backward()
        res[way] = t.detach().float(), {n: p.grad.float() for n, p in m.named_parameters() if p.grad is not None}
    (t0, g0), (t1, g1) = res["full"], res["shared"]
    return {"features_rel": float((t1 - t0).abs().max() / t0.abs().max()),
            "grads_rel": max(float((g1[n] - g).abs().max() / g.abs().max().clamp_min(1e-30)) for n, g in g0.items())}


def measure_cell(backbone, method: str, opts: dict[str, Any], k: int, reps: int, warmup: int,
                 cocoop_batch: int) -> dict[str, Any]:
    b = build(backbone, method, opts, k, cocoop_batch)
    pl = b["shared"].prompt_learner
    if not pl.prefix_len:
        return {"method": method, "k": k, "error": "shared-prefix encoding does not apply (see the log)"}
    fns = {"full": step_fn(backbone, b["full"], b["images"], b["w"]),
           "shared": step_fn(backbone, b["shared"], b["images"], b["w"]),
           "floor": floor_fn(backbone, b["shared"], b["images"], b["w"])}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {n: [] for n in WAYS}
    mon = CpuMonitor()
    for _ in range(reps):
        for n in WAYS:
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
    med = {n: statistics.median(v) for n, v in times.items()}
    groups = 1 if b["images"] is None else len(b["images"])
    return {"method": method, "k": k, "options": opts, "groups": groups, "prefix_len": pl.prefix_len,
            "length": pl.length, "times_s": times, "median_s": med, "max_rel_diff": agreement(backbone, b),
            "speedup_full_over_shared": med["full"] / med["shared"],
            "shared_over_floor": med["shared"] / med["floor"], "others_cpu_share": mon.read()["others_share"]}


def seeds_cell(backbone, opts: dict[str, Any], k: int, seeds: int, reps: int, warmup: int) -> dict[str, Any]:
    """CoOp prompt steps of ``seeds`` runs (contexts from init seeds 0..S-1): one after another (S shared-prefix
    steps) against one step whose S contexts are the S prefixes of one encoding (G = S; the class positions'
    tokens then go through the blocks together). Whether batching several seeds of one dataset helps, and that
    it gives each seed its own features and gradients."""
    from ncprompt.config.methods import parse_method
    from ncprompt.methods import build_method
    from ncprompt.methods.base import MethodContext

    names = classnames(k)
    ctx = MethodContext(backbone, names, ["a photo of a {}."], shared_prefix=True)
    ms = [build_method(parse_method({"name": "coop", **opts, "init_seed": s}), ctx).train() for s in range(seeds)]
    w = torch.randn(seeds, k, backbone.embed_dim, generator=torch.Generator().manual_seed(1)).to(backbone.device)
    ctxs = [m.prompt_learner.ctx for m in ms]

    def zero() -> None:
        for c in ctxs:
            c.grad = None

    def separate() -> torch.Tensor:
        zero()
        out = []
        for i, m in enumerate(ms):
            with backbone.autocast():
                t = m.text_features()
            (F.normalize(t.float(), dim=-1) * w[i]).sum().backward()
            out.append(t.detach())
        _sync(backbone.device)
        return torch.stack(out)

    def batched() -> torch.Tensor:
        zero()
        with backbone.autocast():
            t = ms[0].prompt_learner.encode(torch.stack(ctxs)).float().view(seeds, k, -1)
        (F.normalize(t, dim=-1) * w).sum().backward()
        _sync(backbone.device)
        return t.detach()

    t_sep = separate()
    g_sep = [c.grad.clone() for c in ctxs]
    t_bat = batched()
    diff = {"features_rel": float((t_bat - t_sep).abs().max() / t_sep.abs().max()),
            "grads_rel": max(float((c.grad - g).abs().max() / g.abs().max()) for c, g in zip(ctxs, g_sep))}
    for _ in range(warmup):
        separate(), batched()
    times: dict[str, list[float]] = {"separate": [], "batched": []}
    for _ in range(reps):
        for name, fn in (("separate", separate), ("batched", batched)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {n: statistics.median(v) for n, v in times.items()}
    return {"method": "coop", "k": k, "seeds": seeds, "times_s": times, "median_s": med,
            "speedup_separate_over_batched": med["separate"] / med["batched"], "max_rel_diff": diff}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ncprompt.backbones.openclip import load_backbone

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    logging.getLogger().setLevel(logging.ERROR)  # open_clip's "no pretrained weights" warning
    info = machine_info(args.threads)
    if args.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    if args.note:
        info["note"] = args.note
    monitor = CpuMonitor()
    out: dict[str, Any] = {"device": args.device, "precision": args.precision, "reps": args.reps,
                           "cocoop_batch": args.cocoop_batch, "machine": info, "rows": []}
    ks = {"pocket": args.ks_pocket, "ViT-B-16": args.ks_vit + ([1000] if args.k1000 else [])}
    for model in args.models:
        backbone = load_backbone(model, device=args.device, precision=args.precision)
        for k in ks.get(model, args.ks_vit):
            for method in args.methods:
                opts = METHODS[method][0 if model == "pocket" else 1]
                print(f"{model} K={k} {method} ...", flush=True)
                r = {"model": model, **measure_cell(backbone, method, opts, k, args.reps, args.warmup,
                                                    args.cocoop_batch)}
                if "median_s" in r:
                    m = r["median_s"]
                    print(f"  full {fmt_s(m['full'])}, shared {fmt_s(m['shared'])}, floor {fmt_s(m['floor'])}: "
                          f"{r['speedup_full_over_shared']:.2f}x, shared/floor {r['shared_over_floor']:.2f}",
                          flush=True)
                out["rows"].append(r)
                write_json(args.out.with_suffix(".partial.json"), out)
            if args.seeds > 1:
                print(f"{model} K={k} coop, {args.seeds} seeds ...", flush=True)
                r = {"model": model, **seeds_cell(backbone, METHODS["coop"][0 if model == "pocket" else 1], k,
                                                  args.seeds, args.reps, args.warmup)}
                print(f"  separate {fmt_s(r['median_s']['separate'])}, batched {fmt_s(r['median_s']['batched'])}",
                      flush=True)
                out.setdefault("seed_rows", []).append(r)
                write_json(args.out.with_suffix(".partial.json"), out)
    finish_info(info, monitor)
    return out


def table(data: dict[str, Any]) -> str:
    info = data["machine"]
    where = info.get("gpu") or f"{info['cpu']}, {info['torch_threads']} threads"
    head = (f"**{data['device']} {data['precision']}** ({where}; torch {info['torch']}; {info['date']}; "
            f"median of {data['reps']} interleaved repetitions; load average at start "
            f"{info['loadavg_at_start'][0]:.2f}, others' CPU share during the run "
            f"{100 * info.get('cpu_during_run', {}).get('others_share', 0):.0f}%). {info.get('note', '')}")
    rows = []
    for r in data["rows"]:
        if "error" in r:
            rows.append([r["model"], str(r["k"]), r["method"], "-", "-", "-", "-", "-", r["error"], "-"])
            continue
        m = r["median_s"]
        rows.append([r["model"], str(r["k"]), r["method"], f"{r['prefix_len']} + {r['length'] - r['prefix_len']}"
                     + (f" (x{r['groups']})" if r["groups"] > 1 else ""), fmt_s(m["full"]), fmt_s(m["shared"]),
                     fmt_s(m["floor"]), f"{r['speedup_full_over_shared']:.2f}x", f"{r['shared_over_floor']:.2f}",
                     "{features_rel:.1e} / {grads_rel:.1e}".format(**r["max_rel_diff"])])
    text = head + "\n\n" + markdown_table(
        ["model", "K", "method", "prefix + class positions", "full", "shared", "floor", "full / shared",
         "shared / floor", "max rel. diff features / grads"], rows)
    seed_rows = [[r["model"], str(r["k"]), str(r["seeds"]), fmt_s(r["median_s"]["separate"]),
                  fmt_s(r["median_s"]["batched"]), f"{r['speedup_separate_over_batched']:.2f}x",
                  "{features_rel:.1e} / {grads_rel:.1e}".format(**r["max_rel_diff"])]
                 for r in data.get("seed_rows", [])]
    if seed_rows:
        text += "\n\nSeveral CoOp seeds' prompt steps, one after another (shared prefix each) or as one encoding " \
                "(their contexts as the prefixes):\n\n" + markdown_table(
                    ["model", "K", "seeds", "separate", "batched", "separate / batched",
                     "max rel. diff features / grads"], seed_rows)
    return text


def section(results_dir: Path = RESULTS_DIR) -> str:
    files = sorted(results_dir.glob("shared_prefix_*.json"))
    files = [f for f in files if not f.name.endswith(".partial.json")]
    lines = ["## Shared-prefix prompt encoding: the prompt step (`bench_shared_prefix.py`)", "",
             "Text side of one training step (features of the K prompts, backward into the prompt parameters) with "
             "`train.shared_prefix` off (full), on (shared), and the shared step's floor (the prefix once plus the "
             "class positions alone). Command and definitions in the script's docstring; every sample in "
             "`benchmarks/results/shared_prefix_<device>_<precision>.json`.", ""]
    if not files:
        return "\n".join(lines + ["Not measured yet.", ""])
    for f in files:
        lines += [table(json.loads(f.read_text())), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["pocket", "ViT-B-16"])
    p.add_argument("--ks-pocket", nargs="+", type=int, default=[42, 100])
    p.add_argument("--ks-vit", nargs="+", type=int, default=[100])
    p.add_argument("--k1000", action="store_true", help="also ViT-B-16 at K = 1000")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--cocoop-batch", type=int, default=4, help="images (contexts) per CoCoOp prompt step")
    p.add_argument("--seeds", type=int, default=0, help="also time S CoOp seeds separately vs batched (S >= 2)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--note", help="what else ran on the machine (stored, shown in the docs)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default results/shared_prefix_<dev>_<prec>.json)")
    p.add_argument("--no-doc", action="store_true", help="do not rewrite the docs section")
    p.add_argument("--doc", action="store_true", help="only rewrite the docs section from the saved JSON files")
    a = p.parse_args(argv)
    if not a.doc:
        a.out = a.out or RESULTS_DIR / f"shared_prefix_{a.device}_{a.precision}.json"
        data = run(a)
        write_json(a.out, data)
        a.out.with_suffix(".partial.json").unlink(missing_ok=True)
        print("\n" + table(data) + f"\n\nwritten {a.out}")
    if not a.no_doc:
        write_sections(DOC, {SECTION: section()})


if __name__ == "__main__":
    main()
