"""Each issue-11 method learns a small task (loss falls, accuracy rises), with and without NPT (global pairwise LC
and the cluster-aware form), on the tiny random open_clip model and synthetic data: seconds each."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncprompt.collapse import NPTRegularizer
from ncprompt.config.run import NPTConfig
from ncprompt.data.base import ArrayImages
from ncprompt.methods import build_method

NAMES = ["coat", "sandal", "bag", "shirt"]
K = len(NAMES)


pytestmark = pytest.mark.usefixtures("one_thread")


def _features(backbone, n_per_class=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(K, backbone.embed_dim, generator=g)
    y = torch.arange(K).repeat_interleave(n_per_class)
    return means[y] + 0.3 * torch.randn(len(y), backbone.embed_dim, generator=g), y


def _pixels(n_per_class=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(K, 3, 32, 32, generator=g)
    y = torch.arange(K).repeat_interleave(n_per_class)
    return patterns[y] + 0.2 * torch.randn(len(y), 3, 32, 32, generator=g), y


def _regularizer(form, method, x, y):
    if form is None:
        return None
    reg = NPTRegularizer(NPTConfig(enabled=True, lc_form=form, clusters=2), K, method.backbone.embed_dim)
    with torch.no_grad():
        zs = method.text_features().detach()
        if method.image_input == "cached":
            f = torch.nn.functional.normalize(x, dim=-1)
            means = torch.stack([f[y == k].mean(0) for k in range(K)])
            reg.setup(zero_shot_text=zs, image_class_means=means)
        else:
            reg.setup(zero_shot_text=zs)
    return reg.train()


def _evaluate(m, x, y):
    m.eval()
    with torch.no_grad():
        logits = m(x).logits
    m.train()
    return float(torch.nn.functional.cross_entropy(logits, y)), float((logits.argmax(-1) == y).float().mean())


def _learn(m, x, y, form, steps, lr):
    reg = _regularizer(form, m, x, y)
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    before = _evaluate(m, x, y)
    m.train()
    for step in range(steps):
        out = m(x)
        parts = m.base_loss(out, y)
        if reg is not None:
            r = reg(out.text_features, out.image_features if out.image_features is not None else x, y)
            parts["npt"] = r["loss"]
            assert all(torch.isfinite(v) for v in r.values())
        loss = sum(parts.values())
        opt.zero_grad()
        if hasattr(m, "backward_step"):
            m.backward_step(parts, loss)
        else:
            loss.backward()
        opt.step()
        if hasattr(m, "end_epoch"):
            m.end_epoch(step, steps)
    return before, _evaluate(m, x, y)


CASES = {
    "prograd": ({"n_ctx": 4}, "features", 40, 0.05),
    "tcp": ({"class_layer": 1}, "features", 40, 0.02),
    "ivlp": ({"depth_text": 2, "depth_vision": 2}, "pixels", 40, 0.1),
    # the frozen-text target of CLIP's 80 templates, with which these step counts were set (the published 60 give the
    # random tiny tower another arbitrary target; tests/test_published_defaults.py checks the default)
    "promptsrc": ({"depth_text": 2, "depth_vision": 2, "gpa_mean": 40, "gpa_std": 2, "templates": "ensemble"},
                  "pixels", 40, 0.1),
}


@pytest.mark.parametrize("form", [None, "pairwise", "cluster"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_method_learns_with_and_without_npt(tiny_backbone, name, form):
    opts, data, steps, lr = CASES[name]
    torch.manual_seed(0)
    m = build_method(name, tiny_backbone, NAMES, opts, ["a photo of a {}."])
    x, y = _features(tiny_backbone) if data == "features" else _pixels()
    (ce0, acc0), (ce1, acc1) = _learn(m, x, y, form, steps, lr)
    # a random tower's features are nearly parallel: logits (and CE) move little in a few steps
    assert ce1 < ce0 - 0.02, (ce0, ce1)
    assert acc1 > acc0 or acc1 == 1.0, (acc0, acc1)
    # chance is 0.25; 13/32 right has p < 0.03 under chance. Not higher: a random tower's features are nearly
    # parallel, so the trajectory depends on the kernels (ProGrad ends at 0.72 with AVX-512, 0.47 with default)
    assert acc1 >= 0.4


def test_linear_probe_learns_from_image_features(tiny_backbone):
    rng = np.random.default_rng(0)
    patterns = rng.integers(0, 256, size=(K, 32, 32, 3))
    labels = np.repeat(np.arange(K), 10)
    imgs = np.clip(patterns[labels] + rng.normal(0, 20, size=(len(labels), 32, 32, 3)), 0, 255).astype(np.uint8)
    train, test = ArrayImages(imgs[::2], labels[::2]), ArrayImages(imgs[1::2], labels[1::2])
    m = build_method("linear_probe", tiny_backbone, NAMES, {"c_grid": [1.0, 1e-2], "search_steps": 1})
    feats = m.image_features(test)
    assert (m.predict(feats)[0].argmax(-1) == 0).all()  # unfitted: all-zero weights
    assert m.training_source(train, views=1, seed=0) is None  # fitted in closed form, nothing left for SGD
    acc = float((m.predict(feats)[0].argmax(-1) == torch.as_tensor(test.labels)).float().mean())
    assert acc >= 0.75 and m.chosen_c in [c for c, _ in m.search_trace]
