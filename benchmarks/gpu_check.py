"""A short GPU check (run on a lent accelerator): correctness of the prompt path on CUDA in fp32,
bf16 autocast agreement, an end-to-end CoOp+NPT run on the GPU, and step timings for ViT-B-16.

    PYTHONPATH=src python benchmarks/gpu_check.py --out results.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CLASSNAMES  # noqa: E402

from ncprompt.backbones import load_backbone  # noqa: E402
from ncprompt.methods.coop import CoOp, CoOpConfig  # noqa: E402


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, reps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def step_timings(bb, k: int, reps: int) -> dict[str, float]:
    names = (CLASSNAMES * (k // len(CLASSNAMES) + 1))[:k]
    names = [f"{n} {i // len(CLASSNAMES)}" if i >= len(CLASSNAMES) else n for i, n in enumerate(names)]
    m = CoOp(bb, names, CoOpConfig(n_ctx=16))
    opt = torch.optim.SGD([m.prompt_learner.ctx], lr=0.002, momentum=0.9)
    feats = torch.randn(32, bb.embed_dim, device=bb.device)
    labels = torch.randint(k, (32,), device=bb.device)
    images = torch.randn(32, 3, 224, 224, device=bb.device)
    pl = m.prompt_learner

    def cached():
        loss = F.cross_entropy(m(feats).logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def reference():
        with torch.no_grad():
            f = bb.encode_images(images)
        with bb.autocast():
            t = pl.encoder(pl.sequences(full=True), pl.pool_idx, truncate=False).float()
        loss = F.cross_entropy(m.logits(f, t), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def floor():
        with bb.autocast():
            t = pl.encoder(pl.sequences(), pl.pool_idx).float()
        t.sum().backward()

    out = {"cached_s": timed(cached, reps), "reference_s": timed(reference, reps), "floor_s": timed(floor, reps)}
    out["speedup_vs_reference"] = out["reference_s"] / out["cached_s"]
    out["cached_over_floor"] = out["cached_s"] / out["floor_s"]
    return out


def end_to_end(tmp: Path) -> dict:
    from ncprompt.config import RunConfig
    from ncprompt.data.base import ArrayImages, DatasetSplits
    from ncprompt.protocols.experiment import Experiment

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (400, 32, 32, 3), dtype=np.uint8)
    y = np.arange(400) % 10
    ds = DatasetSplits("synthetic", CLASSNAMES[:10], ArrayImages(x, y), ArrayImages(x[:200], y[:200]))
    cfg = RunConfig.from_dict(dict(model="ViT-B-16", device="cuda", method="coop", shots=8, protocol="base2new",
                                   cache_dir=str(tmp / "cache"), method_options={"n_ctx": 4},
                                   train={"epochs": 3, "views": 2}, npt={"enabled": True}))
    t0 = time.perf_counter()
    res = Experiment(cfg, dataset=ds).run(tmp / "run")
    return {"seconds": time.perf_counter() - t0, "hm": res["hm"], "base": res["base"]["top1"],
            "new": res["new"]["top1"], "final_loss": res["final_train_loss"],
            "finite": bool(np.isfinite(res["final_train_loss"]))}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--reps", type=int, default=20)
    a = p.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    torch.manual_seed(0)
    bb32 = load_backbone("ViT-B-16", device="cuda", precision="fp32")
    names = CLASSNAMES[:20]
    m = CoOp(bb32, names, CoOpConfig(ctx_init="a photo of a"))
    with torch.no_grad():
        got = m.text_features()
    ref = bb32.encode_texts([f"a photo of a {n}." for n in names])
    report["fp32_prompt_path_max_rel_err"] = float((got - ref).abs().max() / ref.abs().max())
    bb16 = load_backbone("ViT-B-16", device="cuda")
    bb16.model.load_state_dict(bb32.model.state_dict())
    report["default_precision_on_gpu"] = bb16.precision
    m16 = CoOp(bb16, names, CoOpConfig(ctx_init="a photo of a"))
    with torch.no_grad():
        got16 = m16.text_features()
    report["bf16_text_cosine_to_fp32_min"] = float(F.cosine_similarity(got16, ref, dim=-1).min())
    imgs = torch.randn(8, 3, 224, 224, device="cuda")
    report["bf16_image_cosine_to_fp32_min"] = float(
        F.cosine_similarity(bb16.encode_images(imgs), bb32.encode_images(imgs), dim=-1).min())
    report["end_to_end"] = end_to_end(Path("/tmp/ncprompt_gpu"))
    report["steps_bf16"] = {str(k): step_timings(bb16, k, a.reps) for k in (10, 100, 1000)}
    report["steps_fp32"] = {str(k): step_timings(bb32, k, a.reps) for k in (100,)}
    print(json.dumps(report, indent=1))
    Path(a.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
