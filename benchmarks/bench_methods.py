"""Step time and peak memory of the issue-11 methods (and CoOp for reference) at K = 10 and 100, on ViT-B-16
(random weights, 224 px) and on the pocket model (32 px), CPU.

One child process per (model, K, method), so that each peak resident memory (``ru_maxrss``) is that method's
alone. A step is what the trainer does: forward, the method's loss terms (+ NPT), backward (ProGrad: its projected
backward_step), SGD step; median of ``--reps`` steps after one warm-up step. Inputs: random cached features
(B, E) for cached methods, random pixels (B, 3, H, W) for live ones (IVLP, PromptSRC), at the published batch size.
Each trainable method is timed without NPT and with cluster-aware NPT (``lc_form: cluster``). The linear probe is
timed as one full fit (lpclip's C search, 7 + 2 x 8 fits) on K x 16 random features, plus its memory.
PromptSRC is built with one template (its 80-template ensemble only changes the one-off set-up, not the step).

    .venv/bin/python benchmarks/bench_methods.py                      # both models, K = 10 and 100
    .venv/bin/python benchmarks/bench_methods.py --models pocket --ks 10 --reps 2   # quick
    .venv/bin/python benchmarks/bench_methods.py --doc                # (re)write the section in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, classnames, fmt_s, machine_info, markdown_table, write_json  # noqa: E402
from doc_sections import write_sections  # noqa: E402

RESULT = RESULTS_DIR / "bench_methods.json"
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"

#: method -> (options for ViT-B-16 (12 + 12 blocks), options for pocket (4 text / 6 vision blocks), batch size)
METHODS: dict[str, tuple[dict[str, Any], dict[str, Any], int]] = {
    "coop": ({"n_ctx": 16}, {"n_ctx": 16}, 32),
    "linear_probe": ({}, {}, 0),
    "ivlp": ({}, {"depth_text": 4, "depth_vision": 4}, 4),
    "promptsrc": ({"templates": "dataset"}, {"depth_text": 4, "depth_vision": 4, "templates": "dataset"}, 4),
    "prograd": ({}, {}, 32),
    "tcp": ({}, {"class_layer": 2}, 32),
}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(model: str, k: int, method: str, reps: int, threads: int) -> dict[str, Any]:
    """Runs in a fresh process: build, time steps (NPT off, then cluster NPT), report peak memory."""
    from ncprompt.backbones.openclip import load_backbone
    from ncprompt.collapse.regularizers import NPTRegularizer
    from ncprompt.config.run import NPTConfig
    from ncprompt.methods import build_method

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    logging.getLogger().setLevel(logging.ERROR)
    backbone = load_backbone(model, device="cpu")
    mem_backbone = _peak_mib()
    vit_opts, pocket_opts, batch = METHODS[method]
    opts = vit_opts if model != "pocket" else pocket_opts
    names = classnames(k)
    t0 = time.perf_counter()
    m = build_method(method, backbone, names, opts, ["a photo of a {}."])
    out: dict[str, Any] = {"model": model, "k": k, "method": method, "batch": batch, "options": opts,
                           "build_s": time.perf_counter() - t0, "peak_mib_backbone": mem_backbone}
    e = backbone.embed_dim
    if method == "linear_probe":
        from ncprompt.methods.linear_probe import holdout_score, search_c

        g = torch.Generator().manual_seed(0)
        y = torch.arange(k).repeat_interleave(16)
        x = torch.randn(k, e, generator=g)[y] + 2.0 * torch.randn(len(y), e, generator=g)
        yv = torch.arange(k).repeat_interleave(4)
        xv = torch.randn(k, e, generator=g)[yv] + 2.0 * torch.randn(len(yv), e, generator=g)
        t0, c0 = time.perf_counter(), time.process_time()
        c, _ = search_c(holdout_score(x, y, xv, yv, k, m.cfg.max_iter, m.cfg.tol), m.cfg.c_grid, m.cfg.search_steps)
        out.update({"fit_s": time.perf_counter() - t0, "fit_cpu_s": time.process_time() - c0, "chosen_c": c,
                    "peak_mib": _peak_mib()})
        return out
    size = backbone.model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    live = m.image_input == "live"
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, size, size, generator=g) if live else torch.randn(batch, e, generator=g)
    y = torch.arange(batch) % k
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    m.train()
    with torch.no_grad():
        zs = m.text_features().detach()
    for variant in ("off", "cluster"):
        reg = None
        if variant == "cluster":
            reg = NPTRegularizer(NPTConfig(enabled=True, lc_form="cluster"), k, e).train()
            reg.setup(zero_shot_text=zs)

        def step(reg: NPTRegularizer | None = reg) -> None:
            o = m(x)
            parts = m.base_loss(o, y)
            if reg is not None:
                parts["npt"] = reg(o.text_features, o.image_features if o.image_features is not None else x, y)["loss"]
            loss = sum(parts.values())
            opt.zero_grad(set_to_none=True)
            if hasattr(m, "backward_step"):
                m.backward_step(parts, loss)
            else:
                loss.backward()
            opt.step()

        times, cpu = [], []
        for i in range(reps + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            if i:
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        out[f"step_s_{variant}"] = statistics.median(times)
        out[f"step_all_s_{variant}"] = times
        out[f"step_cpu_s_{variant}"] = statistics.median(cpu)
        out[f"peak_mib_{variant}"] = _peak_mib()
    return out


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    info = machine_info(args.threads)
    if args.note:
        info["note"] = args.note
    info["uptime_start"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows = []
    t_start = time.perf_counter()
    for model in args.models:
        for k in args.ks:
            for method in args.methods:
                if args.budget and time.perf_counter() - t_start > args.budget:
                    rows.append({"model": model, "k": k, "method": method, "error": "not run: --budget exhausted"})
                    continue
                cmd = [sys.executable, __file__, "--child", model, str(k), method, "--reps", str(args.reps),
                       "--threads", str(args.threads)]
                r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
                if r.returncode != 0:
                    rows.append({"model": model, "k": k, "method": method, "error": r.stderr.strip()[-400:]})
                else:
                    rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1])[:300], flush=True)
                info["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
                if args.save_each:  # partial results survive an interrupted run
                    write_json(RESULT, {"machine": info, "rows": rows})
                    write_doc({"machine": info, "rows": rows})
    return {"machine": info, "rows": rows}


def section(data: dict[str, Any]) -> str:
    info = data["machine"]
    lines = ["## Issue-11 methods: step time and peak memory (`bench_methods.py`)", "",
             f"CPU ({info['cpu']}, {info['logical_cpus']} logical CPUs), torch threads {info['torch_threads']}, "
             f"fp32, random inputs; {info['date']}. `uptime` at start: `" + info["uptime_start"] + "`; at end: `"
             + info["uptime_end"] + "`. " + info.get("note", ""), "",
             "Times are the process's **CPU time** per step (one torch thread, so about the wall time of an "
             "idle core, and little affected by other processes on the other core; wall times are in the "
             "JSON).", "",
             f"Step = forward + loss terms (+ NPT) + backward + SGD step, median of {_reps(data)} timed step(s) "
             "after one warm-up step, at the "
             "published batch size (B; live methods encode B images of the model's size per step). Peak = "
             "the child process's maximum resident memory (the backbone alone: first column). The linear probe "
             "row is one full lpclip C search (23 L-BFGS fits on K x 16 random features).", ""]
    skipped = [f"{r['model']} K={r['k']} {r['method']}" for r in data["rows"]
               if r.get("error", "").startswith("not run")]
    for model in sorted({r["model"] for r in data["rows"]}):
        rows = []
        measured = [r for r in data["rows"] if r["model"] == model and not r.get("error", "").startswith("not run")]
        if not measured:
            continue
        for r in measured:
            if "error" in r:
                rows.append([r["method"], str(r["k"]), "-", "error: " + r["error"].splitlines()[-1][:60], "", "", ""])
            elif r["method"] == "linear_probe":
                rows.append([r["method"], str(r["k"]), "-", f"fit {fmt_s(r['fit_cpu_s'])}", "-",
                             f"{r['peak_mib_backbone']:.0f}", f"{r['peak_mib']:.0f}"])
            else:
                rows.append([r["method"], str(r["k"]), str(r["batch"]), fmt_s(r["step_cpu_s_off"]),
                             fmt_s(r["step_cpu_s_cluster"]), f"{r['peak_mib_backbone']:.0f}",
                             f"{r['peak_mib_cluster']:.0f}"])
        lines += [f"**{model}**", "", markdown_table(
            ["method", "K", "B", "CPU s/step (no NPT)", "CPU s/step (cluster NPT)", "peak MiB, backbone",
             "peak MiB, run"],
            rows), ""]
    if skipped:
        lines += ["Not measured (the run's --budget ran out): " + ", ".join(skipped) + ".",
                  ""]
    return "\n".join(lines)


def _reps(data: dict[str, Any]) -> int:
    return max((len(r.get("step_all_s_off", [])) for r in data["rows"]), default=0)


def write_doc(data: dict[str, Any]) -> None:
    """Rewrite the ``bench_methods`` section of docs/benchmarks.md (only it: :mod:`doc_sections`)."""
    write_sections(DOC, {"bench_methods": section(data)})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", nargs=3, metavar=("MODEL", "K", "METHOD"), help=argparse.SUPPRESS)
    p.add_argument("--models", nargs="+", default=["pocket", "ViT-B-16"])
    p.add_argument("--ks", nargs="+", type=int, default=[10, 100])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on a shared 2-core machine)")
    p.add_argument("--budget", type=float, default=0, help="stop starting new measurements after S seconds")
    p.add_argument("--save-each", action="store_true", help="write the JSON and the docs section after each row")
    p.add_argument("--doc", action="store_true", help="only rewrite the docs section from the saved JSON")
    p.add_argument("--note", help="what else ran on the machine (stored in the JSON, shown in the docs)")
    a = p.parse_args()
    if a.child:
        model, k, method = a.child
        print(json.dumps(child(model, int(k), method, a.reps, a.threads)))
        return
    if a.doc:
        data = json.loads(RESULT.read_text())
        if a.note is not None:
            data["machine"]["note"] = a.note
            write_json(RESULT, data)
        write_doc(data)
        return
    data = run_all(a)
    write_json(RESULT, data)
    write_doc(data)
    print(section(data))


if __name__ == "__main__":
    main()
