"""CoOp learns; cached and live features give the same training; an interrupted run resumes exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ncprompt.backbones import load_backbone
from ncprompt.config import RunConfig
from ncprompt.data.cache import CachedFeatures, FeatureCache, LiveFeatures
from ncprompt.data.sampling import sample_train
from ncprompt.engine.trainer import TrainConfig, lr_at, train
from ncprompt.methods import build_method
from ncprompt.protocols.experiment import Experiment


@pytest.mark.parametrize("csc", [False, True])
def test_coop_learns_few_shot_fashion_mnist(fmnist_small, tmp_path, csc):
    # a separate tiny model with CLIP's trained temperature (s = 100) instead of the random init's 14.3
    torch.manual_seed(0)
    backbone = load_backbone("tiny-clip", device="cpu")
    backbone.model.logit_scale.data.fill_(np.log(100.0))
    cfg = RunConfig.from_dict(dict(
        model="tiny-clip", method="coop", shots=8, cache_dir=str(tmp_path / "c"), diagnostics=False,
        method_options={"n_ctx": 8, "class_specific": csc},
        train={"epochs": 40, "views": 1, "batch_size": 16, "optimizer": "adamw", "lr": 0.003, "warmup_epochs": 0}))
    exp = Experiment(cfg, backbone=backbone, dataset=fmnist_small)
    res = exp.run(tmp_path / "run")
    log = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(log) == 40
    assert log[-1]["loss"] < 0.7 * log[0]["loss"]
    assert np.mean([r["train_acc"] for r in log[-5:]]) > log[0]["train_acc"] + 5
    assert res["train"]["top1"] > 14  # chance: 10
    assert (tmp_path / "run" / "prompt.safetensors").is_file()
    assert json.loads((tmp_path / "run" / "results.json").read_text())["all"]["n"] == 200


def _train_once(backbone, source, labels, names, cfg, run_dir=None, stop_after=None):
    torch.manual_seed(0)
    m = build_method("coop", backbone, names, {"n_ctx": 4})
    train(m, source, labels, cfg, run_dir, stop_after=stop_after)
    return m


def test_cache_and_live_encoding_train_identically(tiny_backbone, fmnist_small, tmp_path):
    images, _ = sample_train(fmnist_small.train, 10, 2, None, seed=3)
    labels = torch.as_tensor(images.labels)
    cfg = TrainConfig(epochs=3, batch_size=8, views=3, lr=0.01, seed=5)
    cached = FeatureCache(tmp_path).features(tiny_backbone, images, views=3, seed=5, train=True)
    a = _train_once(tiny_backbone, CachedFeatures(cached), labels, fmnist_small.classnames, cfg)
    b = _train_once(tiny_backbone, LiveFeatures(tiny_backbone, images, 3, 5), labels, fmnist_small.classnames, cfg)
    assert torch.allclose(a.prompt_learner.ctx, b.prompt_learner.ctx, atol=1e-5)
    # and the cached views really differ from each other (augmentation is on)
    assert (cached[:, 0] - cached[:, 1]).abs().max() > 1e-3


def test_resume_after_interruption_gives_same_prompts(tiny_backbone, fmnist_small, tmp_path):
    images, _ = sample_train(fmnist_small.train, 10, 2, None, seed=1)
    labels = torch.as_tensor(images.labels)
    feats = CachedFeatures(FeatureCache(tmp_path / "c").features(tiny_backbone, images, views=2, seed=1, train=True))
    cfg = TrainConfig(epochs=5, batch_size=4, views=2, lr=0.01, seed=2)
    full = _train_once(tiny_backbone, feats, labels, fmnist_small.classnames, cfg, tmp_path / "full")
    part = _train_once(tiny_backbone, feats, labels, fmnist_small.classnames, cfg, tmp_path / "part", stop_after=2)
    assert not torch.allclose(part.prompt_learner.ctx, full.prompt_learner.ctx)
    resumed = _train_once(tiny_backbone, feats, labels, fmnist_small.classnames, cfg, tmp_path / "part")
    assert torch.equal(resumed.prompt_learner.ctx, full.prompt_learner.ctx)
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 5


def test_same_seed_same_result_different_seed_differs(tiny_backbone, fmnist_small, tmp_path):
    images, _ = sample_train(fmnist_small.train, 10, 2, None, seed=1)
    labels = torch.as_tensor(images.labels)
    feats = CachedFeatures(FeatureCache(tmp_path).features(tiny_backbone, images, views=2, seed=1, train=True))
    a = _train_once(tiny_backbone, feats, labels, fmnist_small.classnames, TrainConfig(epochs=2, batch_size=4, seed=3))
    b = _train_once(tiny_backbone, feats, labels, fmnist_small.classnames, TrainConfig(epochs=2, batch_size=4, seed=3))
    c = _train_once(tiny_backbone, feats, labels, fmnist_small.classnames, TrainConfig(epochs=2, batch_size=4, seed=4))
    assert torch.equal(a.prompt_learner.ctx, b.prompt_learner.ctx)
    assert not torch.equal(a.prompt_learner.ctx, c.prompt_learner.ctx)


def test_schedule_is_constant_warmup_then_cosine():
    cfg = TrainConfig(epochs=10, lr=0.002, warmup_epochs=1, warmup_lr=1e-5)
    assert lr_at(cfg, 0) == 1e-5
    assert lr_at(cfg, 1) == 0.002  # the cosine restarts after the warm-up (Dassl)
    assert np.isclose(lr_at(cfg, 6), 0.001)
    assert lr_at(cfg, 1) > lr_at(cfg, 2) > lr_at(cfg, 9) > 0


def test_cache_is_reused_and_keyed_by_content(tiny_backbone, fmnist_small, tmp_path):
    cache = FeatureCache(tmp_path)
    a = cache.features(tiny_backbone, fmnist_small.test)
    b = cache.features(tiny_backbone, fmnist_small.test)
    assert cache.hits == 1 and cache.misses == 1 and torch.equal(a, b)
    cache.features(tiny_backbone, fmnist_small.test.subset(np.arange(10)))
    assert cache.misses == 2


def test_eval_of_an_interrupted_run_uses_its_last_checkpoint(tiny_backbone, fmnist_small, tmp_path):
    from ncprompt.protocols.experiment import load_run

    cfg = RunConfig.from_dict(dict(model="tiny-clip", method="coop", shots=2, cache_dir=str(tmp_path / "c"),
                                   method_options={"n_ctx": 2}, diagnostics=False,
                                   train={"epochs": 4, "views": 1, "batch_size": 4, "warmup_epochs": 0}))
    exp = Experiment(cfg, backbone=tiny_backbone, dataset=fmnist_small)
    assert exp.run(tmp_path / "run", stop_after=2) == {"interrupted_at_epoch": 2}
    assert not (tmp_path / "run" / "prompt.safetensors").exists()
    _, prompt = load_run(tmp_path / "run")
    initial = exp.build().prompt_learner.ctx.detach()
    assert prompt is not None and prompt["prompt_learner.ctx"].shape == initial.shape
    assert not torch.allclose(prompt["prompt_learner.ctx"], initial)
    # resuming finishes the run
    res = Experiment(cfg, backbone=tiny_backbone, dataset=fmnist_small).run(tmp_path / "run")
    assert res["epochs_run"] == 4 and (tmp_path / "run" / "prompt.safetensors").is_file()
