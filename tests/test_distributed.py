"""Training and NC metrics on 2 CPU ranks (torchrun, gloo) equal one process with the same global batch.

One torchrun launch (module fixture) runs this file as a script on 2 ranks: CoOp (+NPT) with DDP and in
"main" mode, MaPLe (+NPT, EMA image means summed over ranks) with DDP, a CoOp run stopped after 1 epoch
(resumed here on 1 rank), and NC statistics of row shards reduced over the ranks. The tests rebuild
each case in this process and compare. Tolerance: 1e-5 absolute on the learned tensors (values ~0.02-1,
moved by > 1e-2; DDP only changes the order of float32 sums: measured 4e-6), 1e-9 relative on the float64 NC metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import load_file, save_file

from ncprompt.backbones import load_backbone
from ncprompt.collapse.regularizers import NPTConfig, NPTRegularizer
from ncprompt.data.base import ArrayImages
from ncprompt.data.cache import CachedFeatures, FeatureCache, PixelViews, encode_images, encode_with
from ncprompt.engine import distributed
from ncprompt.engine.trainer import TrainConfig, train
from ncprompt.methods import build_method
from ncprompt.metrics.neural_collapse import NCAccumulator

ASSETS = Path(__file__).parent / "assets"
NAMES = ["coat", "sandal", "bag"]
ATOL = 1e-5


def tiny_backbone():
    open_clip.add_model_config(ASSETS / "tiny-clip.json")
    torch.manual_seed(0)
    return load_backbone("tiny-clip", device="cpu")


def _npt(backbone, fixed_means: bool) -> NPTRegularizer:
    g = torch.Generator().manual_seed(11)
    reg = NPTRegularizer(NPTConfig(enabled=True, lambda_lc=0.5, lambda_mi=0.5), len(NAMES), backbone.embed_dim)
    means = torch.nn.functional.normalize(torch.randn(len(NAMES), backbone.embed_dim, generator=g), dim=-1)
    reg.setup(zero_shot_text=torch.randn(len(NAMES), backbone.embed_dim, generator=g),
              image_class_means=means if fixed_means else None)
    return reg


def coop_case(backbone):
    """17 cached samples x 2 views, batch 8: batches of 8, 8 and 1 (the last one smaller than the world)."""
    torch.manual_seed(0)
    method = build_method("coop", backbone, NAMES, {"n_ctx": 4})
    feats = torch.randn(17, 2, backbone.embed_dim, generator=torch.Generator().manual_seed(1))
    cfg = TrainConfig(epochs=3, batch_size=8, views=2, lr=0.05, seed=5, warmup_epochs=0)
    return method, CachedFeatures(feats), torch.arange(17) % 3, cfg, _npt(backbone, fixed_means=True)


def maple_case(backbone):
    """12 random images x 2 augmented views, batch 5: batches of 5, 5, 2 (uneven rank slices)."""
    torch.manual_seed(0)
    method = build_method("maple", backbone, NAMES, {"depth": 2, "n_ctx": 2})
    pixels = np.random.default_rng(2).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(12) % 3
    source = PixelViews(backbone, ArrayImages(pixels, labels), 2, 3)
    cfg = TrainConfig(epochs=2, batch_size=5, views=2, lr=0.01, seed=7, warmup_epochs=0)
    return method, source, torch.as_tensor(labels), cfg, _npt(backbone, fixed_means=False)


def images13() -> ArrayImages:
    pixels = np.random.default_rng(5).integers(0, 256, (13, 32, 32, 3), dtype=np.uint8)
    return ArrayImages(pixels, np.arange(13) % 3)


def nc_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    labels = torch.arange(41) % 4
    feats = torch.randn(41, 6, generator=g, dtype=torch.float64) + 3 * torch.eye(4, 6, dtype=torch.float64)[labels]
    preds = (labels + (torch.rand(41, generator=g) < 0.3).long()) % 4
    return feats, labels, preds


def nc_accumulate(feats, labels, preds, lo: int, hi: int, reduce: bool) -> dict[str, float]:
    """NC1-NC4 of rows [lo, hi) (two update batches), all-reduced over the ranks when ``reduce``."""
    acc = NCAccumulator(4, 6)
    mid = (lo + hi) // 2
    acc.update(feats[lo:mid], labels[lo:mid])
    acc.update(feats[mid:hi], labels[mid:hi])
    if reduce:
        acc.reduce_()
    nc4 = NCAccumulator(4, 6)  # second pass against the (global) class means
    nc4.update_nc4(feats[lo:hi], preds[lo:hi], reference_means=acc.class_means())
    acc.merge(nc4.reduce_() if reduce else nc4)
    text = torch.randn(4, 6, generator=torch.Generator().manual_seed(9))
    return acc.compute(text_features=text)


def _prompts(prefix: str, method, reg=None) -> dict[str, torch.Tensor]:
    out = {f"{prefix}.{k}": v for k, v in method.prompt_state().items()}
    if reg is not None:
        out[f"{prefix}.reg.image_means"] = reg.image_means.detach().clone()
    return out


def worker(out: Path) -> None:
    """Runs on every rank under torchrun."""
    assert distributed.init_from_env("cpu") and distributed.world_size() == 2
    r = distributed.rank()
    backbone = tiny_backbone()
    res: dict[str, torch.Tensor] = {}
    m, src, y, cfg, reg = coop_case(backbone)
    log = train(m, src, y, cfg, regularizer=reg, ddp="ddp")
    res.update(_prompts("coop_ddp", m))
    res["coop_ddp.loss"] = torch.tensor([rec["loss"] for rec in log])
    res["coop_ddp.acc"] = torch.tensor([rec["train_acc"] for rec in log])
    m, src, y, cfg, reg = coop_case(backbone)
    train(m, src, y, cfg, regularizer=reg, ddp="main")
    res.update(_prompts("coop_main", m))
    m, src, y, cfg, reg = maple_case(backbone)
    train(m, src, y, cfg, regularizer=reg)  # auto: DDP for live image encoding
    res.update(_prompts("maple_ddp", m, reg))
    m, src, y, cfg, reg = coop_case(backbone)
    train(m, src, y, cfg, run_dir=out / "run", regularizer=reg, stop_after=1, ddp="ddp")
    m, *_ = maple_case(backbone)  # live encoding of evaluation images: row shards 7/6, gathered
    res["encode_with"] = encode_with(m.encode_images, backbone, images13(), batch_size=4)
    cache = distributed.attach_cache(FeatureCache(out / "cache", shard_rows=4))  # 4 shards dealt 2/2
    res["cache"] = cache.features(backbone, images13(), views=2, seed=1, train=True)
    save_file({k: v.contiguous() for k, v in res.items()}, str(out / f"rank{r}.safetensors"))
    feats, labels, preds = nc_data()
    lo, hi = distributed.shard_bounds(len(labels))
    (out / f"nc{r}.json").write_text(json.dumps(nc_accumulate(feats, labels, preds, lo, hi, reduce=True)))
    distributed.teardown()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(distributed.free_port()), __file__, str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone()


def _ranks(out: Path) -> list[dict[str, torch.Tensor]]:
    return [load_file(str(out / f"rank{r}.safetensors")) for r in range(2)]


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str) -> None:
    keys = [k for k in b if k.startswith(prefix + ".")]
    assert keys
    for k in keys:
        torch.testing.assert_close(a[k], b[k], atol=ATOL, rtol=0, msg=k)


def test_coop_two_ranks_equal_one_process(two_ranks, backbone):
    m, src, y, cfg, reg = coop_case(backbone)
    init = m.prompt_learner.ctx.detach().clone()
    log = train(m, src, y, cfg, regularizer=reg)
    ref = _prompts("coop_ddp", m)
    ref["coop_ddp.loss"] = torch.tensor([rec["loss"] for rec in log])
    ref["coop_ddp.acc"] = torch.tensor([rec["train_acc"] for rec in log])
    assert (m.prompt_learner.ctx - init).abs().max() > 1e-2  # it trained: the comparison means something
    for got in _ranks(two_ranks):
        _close(got, ref, "coop_ddp")
        _close(got, {k.replace("coop_ddp", "coop_main"): v for k, v in ref.items() if "ctx" in k}, "coop_main")


def test_maple_two_ranks_equal_one_process(two_ranks, backbone):
    m, src, y, cfg, reg = maple_case(backbone)
    train(m, src, y, cfg, regularizer=reg)
    ref = _prompts("maple_ddp", m, reg)
    assert len(ref) > 4 and bool(reg.image_seen.all())
    for got in _ranks(two_ranks):
        _close(got, ref, "maple_ddp")


def test_two_rank_checkpoint_resumes_on_one_rank(two_ranks, backbone, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_ranks / "run", run)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    m, src, y, cfg, reg = coop_case(backbone)
    train(m, src, y, cfg, run_dir=run, regularizer=reg)  # 1 rank, epochs 2..3
    full, fsrc, fy, fcfg, freg = coop_case(backbone)
    train(full, fsrc, fy, fcfg, regularizer=freg)
    torch.testing.assert_close(m.prompt_learner.ctx, full.prompt_learner.ctx, atol=ATOL, rtol=0)
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_sharded_encoding_and_cache_build_equal_one_process(two_ranks, backbone):
    m, *_ = maple_case(backbone)
    ref = encode_with(m.encode_images, backbone, images13(), batch_size=4)
    feats = encode_images(backbone, images13(), views=2, seed=1, train=True)
    cache = FeatureCache(two_ranks / "cache", shard_rows=4)
    again = cache.features(backbone, images13(), views=2, seed=1, train=True)  # written by rank 0: a hit
    # the cache was written by the two ranks (other processes, shard splits and batch compositions): equal to
    # fp32 tolerance (a few ulps; kernels and reduction order depend on the CPU and the batch), not bitwise
    assert cache.hits == 1
    torch.testing.assert_close(again, feats, atol=1e-6, rtol=1e-5)
    for got in _ranks(two_ranks):
        torch.testing.assert_close(got["encode_with"], ref, atol=1e-6, rtol=0)
        torch.testing.assert_close(got["cache"], feats, atol=1e-6, rtol=1e-5)


def test_nc_metrics_reduced_over_two_ranks_equal_one_process(two_ranks):
    feats, labels, preds = nc_data()
    ref = nc_accumulate(feats, labels, preds, 0, len(labels), reduce=False)
    assert set(ref) >= {"nc1", "nc3_self_duality", "nc4"} and ref["n_samples"] == 41
    for r in range(2):
        got = json.loads((two_ranks / f"nc{r}.json").read_text())
        assert got.keys() == ref.keys()
        for k in ref:
            assert got[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-12), k


def test_merge_of_shards_equals_one_accumulator():
    feats, labels, preds = nc_data()
    whole = NCAccumulator(4, 6)
    whole.update(feats, labels)
    parts = [NCAccumulator(4, 6) for _ in range(3)]
    for p, (lo, hi) in zip(parts, [(0, 5), (5, 30), (30, 41)]):
        p.update(feats[lo:hi], labels[lo:hi])
    merged = NCAccumulator(4, 6).merge(parts[0]).merge(parts[1]).merge(parts[2])
    a, b = whole.compute(), merged.compute()
    assert a.keys() == b.keys() and all(b[k] == pytest.approx(a[k], rel=1e-10) for k in a)
    with pytest.raises(ValueError, match="cannot merge"):
        whole.merge(NCAccumulator(5, 6))


def test_shards_and_batch_shares():
    for n in (0, 1, 7, 16):
        for w in (1, 2, 3):
            bounds = [distributed.shard_bounds(n, r, w) for r in range(w)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            assert max(h - lo for lo, h in bounds) - min(h - lo for lo, h in bounds) <= 1
    assert distributed.batch_share(5) == (slice(None), 1.0)  # one process


def test_torchrun_command_and_grid_devices(monkeypatch):
    cmd = distributed.torchrun_command(2, ["train", "--nproc", "2", "--epochs", "1", "--nproc=3"])
    assert cmd[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    assert cmd[7:] == ["ncprompt.cli", "train", "--epochs", "1"]
    with pytest.raises(distributed.DistributedError, match="--nproc must be >= 1"):
        distributed.torchrun_command(0, [])
    assert distributed.grid_pool_kwargs(4, print, ("x",), devices=["0"]) == {"initializer": print, "initargs": ("x",)}
    calls: list[str] = []
    kw = distributed.grid_pool_kwargs(2, calls.append, ("init",), devices=["3", "5"])
    assert kw["initializer"] is distributed.claim_device and kw["mp_context"].get_start_method() == "spawn"
    seen = []
    for _ in range(3):
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        distributed.claim_device(*kw["initargs"])
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert seen == ["3", "5", "3"] and calls == ["init"] * 3
    assert distributed.train_mode("main") == "single"  # no process group


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
