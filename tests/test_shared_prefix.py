"""Shared-prefix prompt encoding equals the full path: features, loss parts and gradients of every prompt method,
with and without NPT, on the pocket model and a random ViT-B-16; the fallbacks; a short training run.

Tolerances. Both paths compute the same sums in fp32 but not in the same order (attention over P + S keys per
class row instead of L, other matrix shapes and so other kernel blockings), so they agree to rounding: single
precision (eps 6e-8) accumulated over the text tower's layers gave <= 4e-7 relative on features and <= 3e-6 on
gradients here. The bounds, 1e-5 of the largest feature and 1e-4 of the largest gradient entry (per parameter),
leave room for other CPUs and thread counts and are still far below any real difference (a wrong mask or prefix
changes features at the 1e-2 level)."""

from __future__ import annotations

import json
import logging

import open_clip
import pytest
import torch

from ncprompt.backbones import load_backbone
from ncprompt.backbones import shared_prefix as sp
from ncprompt.collapse.regularizers import NPTRegularizer
from ncprompt.config import RunConfig
from ncprompt.config.methods import parse_method
from ncprompt.config.run import NPTConfig
from ncprompt.engine.trainer import train_step
from ncprompt.methods import build_method
from ncprompt.methods.base import MethodContext
from ncprompt.protocols.experiment import Experiment

FEAT_TOL = 1e-5  # of the largest |feature|
GRAD_TOL = 1e-4  # of the largest |gradient| entry of each parameter
NAMES = ["cat", "golden retriever", "sea lion", "ankle boot", "t-shirt"]
TEMPLATES = ["a photo of a {}."]

#: method -> options for the pocket model (4 text / 6 vision blocks) and for ViT-B-16 (12 + 12). On ViT-B-16 the
#: image towers of IVLP / PromptSRC stay unprompted (depth_vision 0: cached features) and MaPLe's text path is
#: tested alone: a 224 px vision tower's forward and backward would dominate the test time, and the image side
#: is the same code in both paths (the pocket tests run every method with its image prompts).
METHODS = {
    "coop": ({"n_ctx": 4}, {"n_ctx": 4}),
    "kgcoop": ({}, {}),
    "cocoop": ({}, {}),
    "maple": ({"depth": 3}, None),
    "ivlp": ({"depth_text": 3, "depth_vision": 2}, {"depth_text": 3, "depth_vision": 0}),
    "promptsrc": ({"depth_text": 3, "depth_vision": 2, "templates": "dataset"},
                  {"depth_text": 3, "depth_vision": 0, "templates": "dataset"}),
    "prograd": ({}, {}),
    "tcp": ({"class_layer": 2}, {}),
}


def _step(backbone, name: str, opts: dict, names: list[str], shared: bool, npt: bool, batch: int):
    """One trainer step (lr 0) of a fresh method: text features, loss parts, gradients, prefix length."""
    torch.manual_seed(0)
    m = build_method(parse_method({"name": name, **opts}),
                     MethodContext(backbone, names, TEMPLATES, shared_prefix=shared))
    m.train()
    g = torch.Generator().manual_seed(1)
    if m.image_input == "live":
        size = backbone.model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        x = torch.randn(batch, 3, size, size, generator=g)
    else:
        x = torch.randn(batch, backbone.embed_dim, generator=g)
    y = torch.arange(batch) % len(names)
    reg = NPTRegularizer(NPTConfig(enabled=True), len(names), backbone.embed_dim).train() if npt else None
    params = [p for p in m.parameters() if p.requires_grad]
    out, parts, loss = train_step(m, x, y, torch.optim.SGD(params, lr=0.0), reg)
    grads = {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}
    parts = {k: float(v.detach()) for k, v in parts.items()} | {"loss": float(loss.detach())}
    return out.text_features.detach(), parts, grads, m.prompt_learner.prefix_len


def _assert_equal_paths(backbone, name, opts, names, npt, batch=3):
    t_full, l_full, g_full, p_full = _step(backbone, name, opts, names, False, npt, batch)
    t, losses, grads, p = _step(backbone, name, opts, names, True, npt, batch)
    assert p_full == 0 and p > 1, "the shared-prefix path was not taken"
    scale = float(t_full.abs().max())
    assert (t - t_full).abs().max() <= FEAT_TOL * scale, float((t - t_full).abs().max()) / scale
    assert losses.keys() == l_full.keys()
    for k, v in l_full.items():
        # absolute 1e-6 for terms near 0 (KgCoOp's w (1 - cos) at the template's init: w x fp32 rounding of cos)
        assert losses[k] == pytest.approx(v, rel=FEAT_TOL, abs=1e-6), k
    assert grads.keys() == g_full.keys() and grads
    for k, g in g_full.items():
        assert (grads[k] - g).abs().max() <= GRAD_TOL * float(g.abs().max()) + 1e-12, k


@pytest.fixture(scope="module")
def pocket():
    torch.manual_seed(0)
    return load_backbone("pocket", device="cpu")


@pytest.mark.parametrize("npt", [False, True], ids=["plain", "npt"])
@pytest.mark.parametrize("name", list(METHODS))
def test_equal_to_full_path_pocket(pocket, one_thread, name, npt):
    _assert_equal_paths(pocket, name, METHODS[name][0], NAMES, npt)


@pytest.fixture(scope="module")
def vit_b16():
    torch.manual_seed(0)
    return load_backbone("ViT-B-16", device="cpu")


@pytest.mark.parametrize("npt", [False, True], ids=["plain", "npt"])
@pytest.mark.parametrize("name", [n for n, (_, vit) in METHODS.items() if vit is not None])
def test_equal_to_full_path_vit_b16(vit_b16, name, npt):
    """A random ViT-B-16 (CLIP's shapes: 12 text blocks, width 512, 77 positions), 3 classes, 2 images."""
    _assert_equal_paths(vit_b16, name, METHODS[name][1], NAMES[:3], npt, batch=2)


def test_maple_text_path_vit_b16(vit_b16):
    """MaPLe's text features (deep prompts in 8 of 12 blocks) and the gradients of a loss on them."""
    out = {}
    for shared in (False, True):
        torch.manual_seed(0)
        m = build_method(parse_method({"name": "maple", "depth": 9}),
                         MethodContext(vit_b16, NAMES[:3], TEMPLATES, shared_prefix=shared))
        t = m.text_features()
        w = torch.randn(t.shape, generator=torch.Generator().manual_seed(2))
        (torch.nn.functional.normalize(t, dim=-1) * w).sum().backward()
        out[shared] = t.detach(), {k: p.grad for k, p in m.named_parameters() if p.grad is not None}
    (t0, g0), (t1, g1) = out[False], out[True]
    assert (t1 - t0).abs().max() <= FEAT_TOL * float(t0.abs().max())
    assert g0.keys() == g1.keys() and len(g0) == 9  # input context + 8 deep prompts
    for k, g in g0.items():
        assert (g1[k] - g).abs().max() <= GRAD_TOL * float(g.abs().max()), k


def test_ctx_init_with_frozen_words_and_cocoop_groups(pocket, one_thread):
    """ctx_init words beyond the learned context belong to the prefix; CoCoOp's per-image prefixes stay apart."""
    opts = {"ctx_init": "a photo of a", "n_ctx": 2, "ctx_init_length": "n_ctx"}
    _assert_equal_paths(pocket, "coop", opts, NAMES, npt=False)
    _assert_equal_paths(pocket, "cocoop", opts, NAMES, npt=False, batch=4)


@pytest.fixture(scope="module")
def tiny_configs(tmp_path_factory):
    """Tiny open_clip configs: layer scale (ls_1 / ls_2), custom (qk-norm) blocks, a bidirectional tower."""
    d = tmp_path_factory.mktemp("sp-configs")
    text = {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
    vision = {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 8}
    cfgs = {"ncp-sp-layerscale": ({"ls_init_value": 0.5}, False), "ncp-sp-custom": ({"block_type": "custom"}, False),
            "ncp-sp-bidir": ({"no_causal_mask": True}, True)}
    for name, (extra, custom) in cfgs.items():
        cfg = {"embed_dim": 16, "vision_cfg": vision, "text_cfg": {**text, **extra}}
        if custom:
            cfg["custom_text"] = True
        (d / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d)


def test_layer_scale_blocks(tiny_configs, one_thread):
    torch.manual_seed(0)
    bb = load_backbone("ncp-sp-layerscale", device="cpu")
    assert not isinstance(bb.model.transformer.resblocks[0].ls_1, torch.nn.Identity)
    _assert_equal_paths(bb, "kgcoop", {}, NAMES, npt=True)


@pytest.mark.parametrize("model,options,reason", [
    ("tiny-clip", {"class_token_position": "middle"}, "class token is at the middle"),
    ("tiny-clip", {"class_token_position": "front"}, "class token is at the front"),
    ("tiny-clip", {"class_specific": True}, "context is class-specific"),
    ("ncp-sp-bidir", {}, "bidirectional"),
    ("ncp-sp-custom", {}, "CustomResidualAttentionBlock"),
])
def test_fallback_to_full_prompts_said_once(tiny_configs, caplog, model, options, reason):
    torch.manual_seed(0)
    bb = load_backbone(model, device="cpu")
    sp._said.clear()
    with caplog.at_level(logging.INFO, logger=sp.__name__):
        for _ in range(2):
            m = build_method("coop", bb, NAMES, {"n_ctx": 4, **options})
            assert m.prompt_learner.prefix_len == 0
            with torch.no_grad():
                m.text_features()  # the full path serves it
    said = [r.getMessage() for r in caplog.records if r.name == sp.__name__]
    assert len(said) == 1 and reason in said[0] and "encoded in full" in said[0], said


def test_switch_off_is_silent_and_full(tiny_backbone, caplog):
    sp._said.clear()
    with caplog.at_level(logging.INFO, logger=sp.__name__):
        m = build_method(parse_method({"name": "coop"}), MethodContext(tiny_backbone, NAMES, shared_prefix=False))
    assert m.prompt_learner.prefix_len == 0 and not caplog.records
    assert m.for_classnames(["dog", "car"]).prompt_learner.prefix_len == 0  # the context carries the switch


def test_forward_hooks_run_in_full_from_their_block(pocket, one_thread):
    """A hook on a text block (as TCP's class tokens) sees the full rows from that block on."""
    m = build_method("coop", pocket, NAMES, {"n_ctx": 4})
    block = m.prompt_learner.encoder.tower.transformer.resblocks[2]
    seen = []

    def hook(_module, args):
        seen.append(tuple(args[0].shape))
        return (args[0] * 1.5,)

    handle = block.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            t = m.prompt_learner.encode()
            pl = m.prompt_learner
            ref = pl.encoder(pl.sequences(), pl.pool_idx)
    finally:
        handle.remove()
    assert seen[0] == (len(NAMES), pl.length, pocket.text_width)
    assert (t - ref).abs().max() <= FEAT_TOL * float(ref.abs().max())


def _train(backbone, fmnist_small, tmp_path, shared: bool):
    torch.manual_seed(0)
    cfg = RunConfig.from_dict(dict(
        model="tiny-clip", method="kgcoop", shots=4, cache_dir=str(tmp_path / "c"), diagnostics=False,
        npt={"enabled": True},
        train={"epochs": 3, "views": 1, "batch_size": 8, "lr": 0.01, "warmup_epochs": 0, "shared_prefix": shared}))
    exp = Experiment(cfg, backbone=backbone, dataset=fmnist_small)
    assert (exp.build().prompt_learner.prefix_len > 0) == shared  # the config switch reaches the method
    out = tmp_path / f"run-{shared}"
    res = exp.run(out)
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    from safetensors.torch import load_file

    return res, log, load_file(out / "prompt.safetensors")


def test_short_training_run_same_with_switch_on_and_off(tiny_backbone, fmnist_small, tmp_path):
    """12 SGD steps of KgCoOp + NPT: the rounding-level differences stay at rounding level."""
    res_off, log_off, p_off = _train(tiny_backbone, fmnist_small, tmp_path, False)
    res_on, log_on, p_on = _train(tiny_backbone, fmnist_small, tmp_path, True)
    assert len(log_on) == len(log_off) == 3
    for a, b in zip(log_on, log_off):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    for k, v in p_off.items():
        assert torch.allclose(p_on[k], v, rtol=0, atol=1e-5 * float(v.abs().max())), k
    assert res_on["train"]["top1"] == res_off["train"]["top1"]


def test_unsupported_reason_names_the_problem(pocket):
    from ncprompt.backbones.text_encoder import PromptTextEncoder

    enc = PromptTextEncoder(pocket.model)
    assert sp.unsupported_reason(enc) is None
    assert sp._is_causal_mask(enc.tower.attn_mask)
    assert not sp._is_causal_mask(torch.zeros(4, 4))


@pytest.mark.parametrize("name", ["coop", "cocoop"])
def test_bf16_autocast_close_to_full_path(one_thread, name):
    """Under bf16 autocast both paths round every matmul to bf16 (relative 2^-8 = 0.4%), in other shapes and so
    differently: about 0.5% apart here; 3% bounds it (a wrong prefix is off by tens of percent)."""
    torch.manual_seed(0)
    bb = load_backbone("pocket", device="cpu", precision="bf16")
    out = {}
    for shared in (False, True):
        torch.manual_seed(0)
        m = build_method(parse_method({"name": name}), MethodContext(bb, NAMES, TEMPLATES, shared_prefix=shared))
        f = torch.randn(2, bb.embed_dim, generator=torch.Generator().manual_seed(0))
        t = m.conditional_text_features(f) if name == "cocoop" else m.text_features()
        t.float().pow(2).sum().backward()
        out[shared] = t.detach(), m.prompt_learner.ctx.grad.clone(), m.prompt_learner.prefix_len
    (t0, g0, p0), (t1, g1, p1) = out[False], out[True]
    assert p0 == 0 < p1
    assert (t1 - t0).abs().max() <= 3e-2 * float(t0.abs().max())
    assert (g1 - g0).abs().max() <= 3e-2 * float(g0.abs().max())


def test_fallback_note_in_the_run_log(tiny_backbone, tmp_path, one_thread):
    from ncprompt.data.cache import CachedFeatures
    from ncprompt.engine.trainer import TrainConfig, train

    m = build_method("coop", tiny_backbone, NAMES, {"n_ctx": 4, "class_token_position": "front"})
    feats = torch.randn(10, 1, tiny_backbone.embed_dim, generator=torch.Generator().manual_seed(0))
    train(m, CachedFeatures(feats), torch.arange(10) % 5, TrainConfig(epochs=1, batch_size=5, views=1,
                                                                     warmup_epochs=0), tmp_path)
    log = (tmp_path / "train.log").read_text()
    assert log.count("shared-prefix prompt encoding is off") == 1 and "class token is at the front" in log
    assert build_method("coop", tiny_backbone, NAMES, {"n_ctx": 4}).notes() == []
