"""One short GPU check (issue 12.5), prepared to run ONCE on a lent GPU in well under 4 minutes:

  1. ViT-B-16 (random weights): the prompt path equals ``encode_text`` in fp32 on the GPU; text (prompt path)
     and image features under bf16 and fp16 autocast vs fp32. Tolerances (stated, checked): relative L2
     error per feature <= 3e-2 for bf16 (8 significant bits) and <= 5e-3 for fp16 (11 bits); cosine >= 0.999.
  2. A CoOp training step (fp32, bf16, and fp16 with the grad scaler) and a MaPLe step (live images, bf16):
     finite loss, the prompts move.
  3. A 2-rank NCCL all-reduce and DDP gradient check, only if more than one GPU is visible.
  4. Step times of the cached CoOp step (bench_coop_step.py's set-up: 16 shots, batch 32, 16 context tokens)
     at K = 10, 100, 1000 under bf16 and fp32, and the text-encoder floor.

Every check runs in its own try/except (a failure is recorded, the rest still run); the JSON is rewritten
after each check and progress is flushed, so a killed run keeps what it measured.

    PYTHONPATH=src python benchmarks/gpu_check.py --out gpu_check.json          # on the GPU
    PYTHONPATH=src python benchmarks/gpu_check.py --cpu-dry-run --out /tmp/gc.json   # CPU rehearsal (tiny model)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CLASSNAMES  # noqa: E402

TOLERANCES = {"bf16": {"rel_l2": 3e-2, "cos": 0.999}, "fp16": {"rel_l2": 5e-3, "cos": 0.999},
              "fp32_prompt_path_rel": 1e-5}
TINY_CONFIG = {"embed_dim": 32,
               "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
               "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
T0 = time.perf_counter()


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], reps: int, warmup: int = 2) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "reps": reps}


def names_for(k: int) -> list[str]:
    """K distinct class names (CIFAR-100's, numbered beyond 100)."""
    return [CLASSNAMES[i % 100] + (f" {i // 100}" if i >= 100 else "") for i in range(k)]


def compare(got: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    got, ref = got.float(), ref.float()
    return {"max_rel_l2": float(((got - ref).norm(dim=-1) / ref.norm(dim=-1)).max()),
            "min_cos": float(F.cosine_similarity(got, ref, dim=-1).min())}


class Report:
    """Results, written to JSON after every check; failures recorded with their traceback's last lines."""

    def __init__(self, path: Path, info: dict[str, Any], only: list[str] | None = None) -> None:
        self.path, self.data, self.only = path, {"info": info, "checks": {}, "failed": []}, only

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        if self.only and not any(name.startswith(o) for o in self.only):
            return
        say(f"{name} ...")
        t0 = time.perf_counter()
        try:
            out = fn()
            out["seconds"] = round(time.perf_counter() - t0, 2)
            self.data["checks"][name] = out
            say(f"{name}: {'ok' if out.get('ok', True) else 'OUT OF TOLERANCE'} {json.dumps(out)[:400]}")
            if not out.get("ok", True):
                self.data["failed"].append(name)
        except Exception as e:  # noqa: BLE001 - one failing check must not lose the others
            tb = traceback.format_exc().strip().splitlines()[-6:]
            self.data["checks"][name] = {"error": f"{type(e).__name__}: {e}", "traceback": tb}
            self.data["failed"].append(name)
            say(f"{name}: FAILED {type(e).__name__}: {e}")
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self.write()

    def write(self) -> None:
        self.data["info"]["elapsed_s"] = round(time.perf_counter() - T0, 1)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        os.replace(tmp, self.path)


# ---------------------------------------------------------------------------------------------- checks


def check_features(load, device: str, precisions: list[str]) -> dict[str, Any]:
    """fp32 prompt path vs encode_text, and bf16/fp16 autocast vs fp32 (text via the prompt path, images)."""
    from ncprompt.methods import build_method

    torch.manual_seed(0)
    bb = load("fp32")
    names = names_for(20)
    m = build_method("coop", bb, names, {"ctx_init": "a photo of a"})
    images = torch.randn(8, 3, bb.meta["preprocess"]["size"][0], bb.meta["preprocess"]["size"][1], device=device)
    with torch.no_grad():
        text32 = m.text_features()
        ref = bb.encode_texts([f"a photo of a {n}." for n in names])
        img32 = bb.encode_images(images)
    out: dict[str, Any] = {"tolerances": TOLERANCES}
    rel = float((text32 - ref).abs().max() / ref.abs().max())
    out["fp32_prompt_path_vs_encode_text_max_rel"] = rel
    ok = rel <= TOLERANCES["fp32_prompt_path_rel"]
    for p in precisions:
        bb.set_precision(p)
        with torch.no_grad():
            text = m.text_features()
            img = bb.encode_images(images)
        tol = TOLERANCES[p]
        out[p] = {"text": compare(text, text32), "image": compare(img, img32)}
        for part in ("text", "image"):
            c = out[p][part]
            c["ok"] = c["max_rel_l2"] <= tol["rel_l2"] and c["min_cos"] >= tol["cos"] and c["max_rel_l2"] > 0
            ok = ok and c["ok"]
    bb.set_precision("fp32")
    out["ok"] = ok
    return out


def check_coop_step(load, device: str, precision: str) -> dict[str, Any]:
    """One CoOp step on cached features (train_step; fp16 through the grad scaler)."""
    from ncprompt.backbones.precision import backward_and_step
    from ncprompt.engine.trainer import train_step
    from ncprompt.methods import build_method

    torch.manual_seed(0)
    bb = load(precision)
    m = build_method("coop", bb, names_for(10), {"n_ctx": 16})
    ctx = m.prompt_learner.ctx
    opt = torch.optim.SGD([ctx], lr=0.002, momentum=0.9)
    before = ctx.detach().clone()
    feats, labels = torch.randn(32, bb.embed_dim, device=device), torch.randint(10, (32,), device=device)
    if precision == "fp16":
        scaler = bb.grad_scaler()
        loss = F.cross_entropy(m(feats).logits, labels)
        backward_and_step(loss, opt, scaler)
        extra = {"grad_scale": float(scaler.get_scale())}
    else:
        _, _, loss = train_step(m, feats, labels, opt)
        extra = {}
    moved = float((ctx.detach() - before).abs().max())
    return {"loss": float(loss.detach()), "ctx_moved_max_abs": moved, "ctx_dtype": str(ctx.dtype), **extra,
            "ok": bool(torch.isfinite(loss.detach())) and moved > 0}


def check_maple_step(load, device: str, precision: str, depth: int) -> dict[str, Any]:
    """One MaPLe step: live images through the prompted image tower, deep prompts in both towers."""
    from ncprompt.engine.trainer import train_step
    from ncprompt.methods import build_method

    torch.manual_seed(0)
    bb = load(precision)
    m = build_method("maple", bb, names_for(10), {"depth": depth})
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.0035, momentum=0.9)
    before = [p.detach().clone() for p in params]
    size = bb.meta["preprocess"]["size"]
    images, labels = torch.randn(8, 3, size[0], size[1], device=device), torch.randint(10, (8,), device=device)
    t0 = time.perf_counter()
    _, _, loss = train_step(m, images, labels, opt)
    sync()
    moved = max(float((p.detach() - b).abs().max()) for p, b in zip(params, before, strict=True))
    return {"loss": float(loss.detach()), "params": sum(p.numel() for p in params), "prompts_moved_max_abs": moved,
            "first_step_s": time.perf_counter() - t0, "ok": bool(torch.isfinite(loss.detach())) and moved > 0}


def _dist_worker(rank: int, world: int, backend: str, port: int, result_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, rank=rank, world_size=world)
    dev = torch.device(f"cuda:{rank}") if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(dev)
    x = torch.full((4,), float(rank + 1), device=dev)
    dist.all_reduce(x)
    lin = torch.nn.Linear(8, 2).to(dev)
    torch.manual_seed(0)
    with torch.no_grad():
        lin.weight.fill_(0.5)
        lin.bias.zero_()
    ddp = torch.nn.parallel.DistributedDataParallel(lin, device_ids=[rank] if backend == "nccl" else None)
    inp = torch.arange(16.0, device=dev).reshape(2, 8) + 100 * rank
    ddp(inp).sum().backward()
    Path(result_dir, f"rank{rank}.json").write_text(json.dumps(
        {"all_reduce": x.tolist(), "grad_w_row0": lin.weight.grad[0].tolist()}))
    dist.barrier()
    dist.destroy_process_group()


def check_distributed(backend: str) -> dict[str, Any]:
    """2 ranks: all_reduce of (rank+1) == 3; DDP's averaged gradient equals the mean of both ranks' inputs."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_dist_worker, args=(2, backend, port, d), nprocs=2, join=True)
        res = [json.loads(Path(d, f"rank{r}.json").read_text()) for r in range(2)]
    x = torch.arange(16.0).reshape(2, 8)
    want_grad = ((x.sum(0) + (x + 100).sum(0)) / 2).tolist()  # d/dW of sum(W x) per rank, averaged by DDP
    ok = all(r["all_reduce"] == [3.0] * 4 for r in res) and all(
        max(abs(a - b) for a, b in zip(r["grad_w_row0"], want_grad, strict=True)) < 1e-3 for r in res)
    return {"backend": backend, "ranks": res, "expected_grad_w_row0": want_grad, "ok": ok}


def check_step_times(load, device: str, ks: list[int], precisions: list[str], reps: int) -> dict[str, Any]:
    """bench_coop_step.py's cached step (train_step on cached features) and the floor, per K and precision."""
    from bench_coop_step import build, cached_step_fn, floor_fn

    out: dict[str, Any] = {}
    for p in precisions:
        torch.manual_seed(0)
        bb = load(p)
        for k in ks:
            b = _build_on(bb, k, build)
            fl, length = floor_fn(b)

            def floor(fl=fl, bb=bb) -> None:
                with bb.autocast():
                    fl()

            r = {"cached": timed(cached_step_fn(b), reps), "floor": timed(floor, reps), "prompt_len": length}
            r["cached_over_floor"] = r["cached"]["median_s"] / r["floor"]["median_s"]
            out[f"{p}/K={k}"] = r
            say(f"  {p} K={k}: cached {1000 * r['cached']['median_s']:.2f} ms, floor "
                f"{1000 * r['floor']['median_s']:.2f} ms")
            del b
    return out


def _build_on(bb, k: int, build) -> dict[str, Any]:
    """bench_coop_step.build with the cached features and labels on the backbone's device."""
    from ncprompt.data.cache import CachedFeatures

    b = build(bb, k)
    src = b["source"]
    feats = getattr(src, "features", None)
    if isinstance(feats, torch.Tensor):
        b["source"] = CachedFeatures(feats.to(bb.device))
    b["labels"] = b["labels"].to(bb.device)
    return b


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--only", nargs="+", metavar="CHECK",
                   help="run only the checks whose names start with these (features, coop_step, maple_step, nccl, "
                        "gloo, coop_step_times)")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="rehearse every check on CPU with a tiny model, small K, bf16 only, gloo for the 2 ranks")
    a = p.parse_args(argv)
    from ncprompt.backbones import load_backbone

    if a.cpu_dry_run:
        import open_clip

        cfg_dir = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        (cfg_dir / "gpu-check-tiny.json").write_text(json.dumps(TINY_CONFIG))
        open_clip.add_model_config(cfg_dir)
        device, model, ks, precisions, reps, depth = "cpu", "gpu-check-tiny", [10, 20], ["bf16"], 2, 2
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    else:
        if not torch.cuda.is_available():
            print("no CUDA device visible: run on the GPU machine, or rehearse with --cpu-dry-run", flush=True)
            return 2
        device, model, ks, precisions, reps, depth = "cuda", "ViT-B-16", [10, 100, 1000], ["bf16", "fp16"], a.reps, 9
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 in the comparisons
        torch.backends.cudnn.allow_tf32 = False
    info: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (dry run)",
                            "gpus": torch.cuda.device_count() if device == "cuda" else 0, "torch": torch.__version__,
                            "cuda": torch.version.cuda, "model": model, "weights": "random",
                            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "argv": sys.argv[1:]}
    if device == "cuda":
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
        precisions = [q for q in precisions if q != "bf16" or info["bf16_supported"]]
    say(f"gpu_check on {info['device']} ({info['gpus']} GPU(s)), torch {info['torch']}, model {model}")
    backbones: dict[str, Any] = {}

    def load(precision: str):
        """The one model (random weights, seed 0), built once and shared by the checks, at ``precision``."""
        if "bb" not in backbones:
            torch.manual_seed(0)
            backbones["bb"] = load_backbone(model, device=device, precision="fp32")
        bb = backbones["bb"]
        bb.set_precision(precision)
        return bb

    report = Report(a.out, info, a.only)
    report.run("features", lambda: check_features(load, device, precisions))
    report.run("coop_step_fp32", lambda: check_coop_step(load, device, "fp32"))
    for q in precisions:
        report.run(f"coop_step_{q}", lambda q=q: check_coop_step(load, device, q))
    mixed = precisions[0] if precisions else "fp32"
    report.run(f"maple_step_{mixed}", lambda: check_maple_step(load, device, mixed, depth))
    if device == "cuda" and torch.cuda.device_count() > 1:
        report.run("nccl_2_ranks", lambda: check_distributed("nccl"))
    elif a.cpu_dry_run:
        report.run("gloo_2_ranks (dry run of the NCCL check)", lambda: check_distributed("gloo"))
    elif not a.only:
        report.data["checks"]["nccl_2_ranks"] = {"skipped": "only one GPU visible"}
    timing_precisions = ([mixed] if precisions else []) + ["fp32"]
    report.run("coop_step_times", lambda: check_step_times(load, device, ks, timing_precisions, reps))
    report.write()
    print(summary(report.data), flush=True)
    say(f"written {a.out}")
    return 1 if report.data["failed"] else 0


def summary(data: dict[str, Any]) -> str:
    lines = [f"== gpu_check summary: {data['info']['device']}, {data['info']['elapsed_s']} s =="]
    for name, r in data["checks"].items():
        if "error" in r:
            lines.append(f"{name}: FAILED {r['error']}")
        elif "skipped" in r:
            lines.append(f"{name}: skipped ({r['skipped']})")
        elif name == "coop_step_times":
            for key, t in r.items():
                if isinstance(t, dict) and "cached" in t:
                    lines.append(f"  {key}: cached step {1000 * t['cached']['median_s']:.2f} ms, floor "
                                 f"{1000 * t['floor']['median_s']:.2f} ms ({t['cached_over_floor']:.2f}x)")
        elif name == "features":
            parts = [f"fp32 prompt path rel err {r['fp32_prompt_path_vs_encode_text_max_rel']:.1e}"]
            for q in ("bf16", "fp16"):
                if q in r:
                    parts.append(f"{q} text rel {r[q]['text']['max_rel_l2']:.1e} cos {r[q]['text']['min_cos']:.5f}, "
                                 f"image rel {r[q]['image']['max_rel_l2']:.1e}")
            lines.append(f"features: {'ok' if r['ok'] else 'OUT OF TOLERANCE'}; " + "; ".join(parts))
        else:
            lines.append(f"{name}: {'ok' if r.get('ok', True) else 'NOT OK'} (loss {r.get('loss', '-')})")
    lines.append(f"failed: {data['failed'] or 'none'}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
