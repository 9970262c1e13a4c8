"""MaPLe: the prompted image path reduces to open_clip's encode_image; gradients reach both branches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncprompt.backbones.image_encoder import encode_image_with_prompts
from ncprompt.config import RunConfig
from ncprompt.methods import build_method
from ncprompt.methods.base import MethodConfigError
from ncprompt.protocols.experiment import Experiment

NAMES = ["coat", "sandal", "bag"]


def test_unprompted_image_path_equals_encode_image(tiny_backbone):
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = tiny_backbone.model.encode_image(x)
        got = encode_image_with_prompts(tiny_backbone.model.visual, x)
    assert torch.allclose(got, ref, atol=1e-5)


def test_prompts_change_features_and_text_side_reduces_to_encode_text(tiny_backbone):
    m = build_method("maple", tiny_backbone, NAMES, {"depth": 1})  # no deep prompts
    with torch.no_grad():
        t = m.text_features()
        x = torch.randn(2, 3, 32, 32)
        f = m.encode_images(x)
    ref = tiny_backbone.encode_texts([f"a photo of a {n}." for n in NAMES])  # 2 learned + "of a" frozen
    assert torch.allclose(t, ref, atol=1e-5)
    assert not torch.allclose(f, tiny_backbone.encode_images(x), atol=1e-4)  # visual prompts act


def test_gradients_reach_both_branches(tiny_backbone):
    m = build_method("maple", tiny_backbone, NAMES, {"depth": 2})
    out = m(torch.randn(4, 3, 32, 32))
    assert out.image_features.shape == (4, tiny_backbone.embed_dim)
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 0])).backward()
    assert m.prompt_learner.ctx.grad.abs().sum() > 0
    assert all(p.grad.abs().sum() > 0 for p in m.prompts.deep_text)
    assert all(lin.weight.grad.abs().sum() > 0 for lin in m.prompts.couple)
    assert all(p.grad is None for p in tiny_backbone.model.parameters())


def test_depth_beyond_the_towers_is_an_error(tiny_backbone):
    with pytest.raises(MethodConfigError, match="depth 9 exceeds the 2 blocks"):
        build_method("maple", tiny_backbone, NAMES, {"depth": 9})


def test_maple_end_to_end_with_npt(tiny_backbone, fmnist_small, tmp_path):
    cfg = RunConfig.from_dict(dict(model="tiny-clip", method="maple", shots=2, protocol="base2new",
                                   cache_dir=str(tmp_path / "c"), max_test_per_class=4,
                                   method_options={"depth": 2},
                                   train={"epochs": 2, "views": 2, "batch_size": 4, "lr": 0.0035},
                                   npt={"enabled": True, "image_anchor": True}))
    res = Experiment(cfg, backbone=tiny_backbone, dataset=fmnist_small).run(tmp_path / "run")
    assert res["epochs_run"] == 2 and np.isfinite(res["hm"]) and res["new"]["n"] == 20
    assert "nc3_self_duality" in res["train"]["nc"]
