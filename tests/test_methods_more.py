"""KgCoOp and CoCoOp: exact reductions to known cases, gradients, and end-to-end runs with NPT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncprompt.config import RunConfig
from ncprompt.methods import build_method
from ncprompt.protocols.experiment import Experiment, predict

NAMES = ["t-shirt", "trouser", "pullover", "dress"]


def test_kgcoop_term_is_zero_at_handwritten_init_and_positive_after(tiny_backbone):
    m = build_method("kgcoop", tiny_backbone, NAMES, {"ctx_init": "a photo of a"},
                     dataset_templates=["a photo of a {}."])
    out = m(torch.randn(3, tiny_backbone.embed_dim))
    assert float(out.extra_losses["kg"]) < 1e-6
    with torch.no_grad():
        m.prompt_learner.ctx.add_(0.5 * torch.randn_like(m.prompt_learner.ctx))
    out = m(torch.randn(3, tiny_backbone.embed_dim))
    assert float(out.extra_losses["kg"]) > 1e-3
    losses = m.base_loss(out, torch.tensor([0, 1, 2]))
    assert set(losses) == {"ce", "kg"}
    sum(losses.values()).backward()
    assert m.prompt_learner.ctx.grad.abs().sum() > 0


def test_cocoop_with_zero_meta_net_equals_coop_and_encode_text(tiny_backbone):
    m = build_method("cocoop", tiny_backbone, NAMES, {})
    with torch.no_grad():
        m.meta_net[2].weight.zero_()
        m.meta_net[2].bias.zero_()
    feats = torch.randn(5, tiny_backbone.embed_dim)
    with torch.no_grad():
        t = m.conditional_text_features(feats)
    ref = tiny_backbone.encode_texts([f"a photo of a {n}." for n in NAMES])
    assert t.shape == (5, len(NAMES), tiny_backbone.embed_dim)
    assert torch.allclose(t, ref.expand(5, -1, -1), atol=1e-5)


def test_cocoop_predictions_equal_per_image_brute_force(tiny_backbone):
    torch.manual_seed(0)
    m = build_method("cocoop", tiny_backbone, NAMES, {"eval_chunk": 3, "meta_reduction": 2}).eval()
    feats = torch.randn(7, tiny_backbone.embed_dim)
    preds, _ = predict(m, feats)
    expected = [int(m.logits(feats[i : i + 1], m.conditional_text_features(feats[i : i + 1])).argmax())
                for i in range(7)]
    assert preds.tolist() == expected
    m.train()
    out = m(feats)
    torch.nn.functional.cross_entropy(out.logits, torch.arange(7) % len(NAMES)).backward()
    assert m.meta_net[0].weight.grad.abs().sum() > 0 and m.prompt_learner.ctx.grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["kgcoop", "cocoop"])
def test_methods_run_end_to_end_with_npt(tiny_backbone, fmnist_small, tmp_path, method):
    cfg = RunConfig.from_dict(dict(model="tiny-clip", method=method, shots=2, protocol="base2new",
                                   cache_dir=str(tmp_path / "c"), max_test_per_class=5,
                                   train={"epochs": 2, "views": 1, "batch_size": 4}, npt={"enabled": True}))
    res = Experiment(cfg, backbone=tiny_backbone, dataset=fmnist_small).run(tmp_path / "run")
    assert res["epochs_run"] == 2 and np.isfinite(res["hm"])
    assert res["new"]["n"] == 25 and "nc" in res["base"]
