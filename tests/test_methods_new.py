"""Issue-11 methods: exact reductions (linear probe = scikit-learn; IVLP / PromptSRC without prompts = open_clip;
PromptSRC with its extra losses off = IVLP; ProGrad without conflict = CoOp; TCP with w = 0 = CoOp)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncprompt.config.base import ConfigError
from ncprompt.config.methods import parse_method
from ncprompt.methods import build_method
from ncprompt.methods.base import MethodConfigError
from ncprompt.methods.linear_probe import cv_folds, fit_logistic_regression, holdout_score, search_c
from ncprompt.methods.prograd import project_conflicting
from ncprompt.methods.promptsrc import gpa_weights

NAMES = ["coat", "sandal", "bag", "shirt"]
TEMPLATES = ["a photo of a {}."]


pytestmark = pytest.mark.usefixtures("one_thread")


def _build(name, backbone, **opts):
    return build_method(name, backbone, NAMES, opts, TEMPLATES)


# --- linear probe -------------------------------------------------------------------------------

def _blobs(n=60, k=5, e=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    return torch.randn(k, e, generator=g)[y] + 1.5 * torch.randn(n, e, generator=g), y


@pytest.mark.parametrize("c", [1e-2, 1.0])
def test_logistic_regression_equals_sklearn(c):
    sklearn = pytest.importorskip("sklearn.linear_model")
    x, y = _blobs()
    w, b = fit_logistic_regression(x, y, 5, c, tol=1e-10)
    clf = sklearn.LogisticRegression(C=c, max_iter=10000, tol=1e-12).fit(x.double().numpy(), y.numpy())
    # tolerance: probabilities to 1e-5, weights to 1e-4 of their largest entry (both optimisers' tolerances)
    p = torch.softmax(x.double() @ w.T + b, -1).numpy()
    assert np.abs(p - clf.predict_proba(x.double().numpy())).max() < 1e-5
    assert np.abs(w.numpy() - clf.coef_).max() < 1e-4 * np.abs(clf.coef_).max()


def test_c_search_follows_lpclip_grid_then_bisection():
    x, y = _blobs(n=80)
    xv, yv = _blobs(n=40, seed=1)
    grid = [1.0, 1e-2]
    c, trace = search_c(holdout_score(x, y, xv, yv, 5, tol=1e-6), grid, steps=1)
    assert [t[0] for t in trace[:2]] == grid and c in [t[0] for t in trace]
    assert len(trace) <= 2 + 2
    fold = cv_folds(torch.tensor([0, 0, 0, 1, 2, 2]), 4, seed=0)
    assert fold[3] == -1 and sorted(fold[:3].tolist()) == [0, 1, 2] and sorted(fold[4:].tolist()) == [0, 1]


def test_linear_probe_refuses_npt_and_new_classes(tiny_backbone):
    from ncprompt.config.run import RunConfig

    with pytest.raises(ConfigError, match="linear probe has no text features"):
        RunConfig.from_dict({"method": {"name": "linear_probe"}, "npt": {"enabled": True}})
    with pytest.raises(ConfigError, match="cannot score new classes"):
        RunConfig.from_dict({"method": {"name": "linear_probe"}, "data": {"protocol": "base2new"}})
    with pytest.raises(MethodConfigError, match="cannot score new classes"):
        _build("linear_probe", tiny_backbone).for_classnames(["x", "y"])


# --- IVLP / PromptSRC ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ivlp", "promptsrc"])
def test_zero_depth_prompts_reproduce_open_clip(tiny_backbone, name):
    m = _build(name, tiny_backbone, depth_text=0, depth_vision=0)
    assert m.image_input == "cached" and not m.prompt_state()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        t = m.text_features()
        f = m.encode_images(x)
        ref_f = tiny_backbone.model.encode_image(x)
    assert torch.allclose(t, tiny_backbone.encode_texts([f"a photo of a {n}." for n in NAMES]), atol=1e-5)
    assert torch.allclose(f, ref_f, atol=1e-5)
    m.eval()
    assert torch.allclose(m(ref_f).logits, m.logits(ref_f, t), atol=1e-6)
    # depth 1 on the text side only: the words' initialisation is still the hand-written prompt
    m1 = _build(name, tiny_backbone, depth_text=1, depth_vision=0)
    with torch.no_grad():
        assert torch.allclose(m1.text_features(), t, atol=1e-5)


def test_ivlp_prompts_act_and_gradients_reach_both_towers(tiny_backbone):
    m = _build("ivlp", tiny_backbone, depth_text=2, depth_vision=2, n_ctx_vision=3)
    x = torch.randn(4, 3, 32, 32)
    out = m(x)
    assert m.image_input == "live" and out.image_features.shape == (4, tiny_backbone.embed_dim)
    assert not torch.allclose(out.image_features, tiny_backbone.encode_images(x), atol=1e-4)
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 3])).backward()
    grads = [m.prompt_learner.ctx.grad, *[p.grad for p in m.prompts.deep_text], *[p.grad for p in m.prompts.vision]]
    assert len(grads) == 4 and all(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in tiny_backbone.model.parameters())
    new = m.for_classnames(["hat", "boot"])
    assert new.prompts is m.prompts and new.prompt_learner.ctx is m.prompt_learner.ctx
    with pytest.raises(MethodConfigError, match="depth_vision 9 exceeds the 2 blocks"):
        _build("ivlp", tiny_backbone, depth_text=1)
    with pytest.raises(MethodConfigError, match="has 4 tokens but n_ctx_text is 2"):
        _build("ivlp", tiny_backbone, depth_text=1, depth_vision=1, n_ctx_text=2)


def test_promptsrc_with_its_losses_off_equals_ivlp(tiny_backbone):
    opts = dict(depth_text=2, depth_vision=2, init_seed=3)
    ivlp = _build("ivlp", tiny_backbone, **opts)
    src = _build("promptsrc", tiny_backbone, text_loss_weight=0, image_loss_weight=0, logit_loss_weight=0,
                 gpa=False, **opts)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    opt_a = torch.optim.SGD([p for p in ivlp.parameters() if p.requires_grad], lr=0.1)
    opt_b = torch.optim.SGD([p for p in src.parameters() if p.requires_grad], lr=0.1)
    for m, opt in ((ivlp, opt_a), (src, opt_b)):
        m.train()
        out = m(x)
        loss = sum(m.base_loss(out, y).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.loss = float(loss.detach())
    assert ivlp.loss == pytest.approx(src.loss, abs=1e-6)
    sa, sb = ivlp.prompt_state(), src.prompt_state()
    assert sa.keys() == sb.keys() and all(torch.allclose(sa[k], sb[k], atol=1e-7) for k in sa)
    src.end_epoch(0, 1)  # GPA off: prompts untouched
    assert all(torch.equal(src.prompt_state()[k], sb[k]) for k in sb)


def test_promptsrc_losses_match_their_formulas(tiny_backbone):
    m = _build("promptsrc", tiny_backbone, depth_text=2, depth_vision=2).train()
    x = torch.randn(3, 3, 32, 32)
    out = m(x)
    f0 = torch.nn.functional.normalize(tiny_backbone.encode_images(x), dim=-1)
    f = torch.nn.functional.normalize(out.image_features, dim=-1)
    t = torch.nn.functional.normalize(out.text_features, dim=-1)
    assert torch.allclose(out.extra_losses["scl_image"], 10 * (f - f0).abs().mean(), atol=1e-6)
    assert torch.allclose(out.extra_losses["scl_text"], 25 * (t - m.frozen_text).abs().mean(), atol=1e-6)
    p0 = torch.softmax(m.logit_scale * f0 @ m.frozen_text.T, -1)
    kl = (p0 * (p0.log() - torch.log_softmax(out.logits, -1))).sum() / out.logits.numel()
    assert torch.allclose(out.extra_losses["scl_logits"], kl, atol=1e-6)
    assert len(m.frozen_text) == len(NAMES)  # the ensemble's mean feature per class


def test_gpa_is_the_gaussian_weighted_average_of_epoch_prompts(tiny_backbone):
    w = gpa_weights(20, 15, 1)
    assert float(w.sum()) == pytest.approx(1.0) and int(w.argmax()) == 14
    m = _build("promptsrc", tiny_backbone, depth_text=1, depth_vision=1, gpa_mean=2, gpa_std=1.5)
    ctx = m.prompt_learner.ctx
    values = [torch.full_like(ctx, v) for v in (1.0, 2.0, 4.0)]
    g = gpa_weights(3, 2, 1.5)
    for e, v in enumerate(values):
        with torch.no_grad():
            ctx.copy_(v)
        m.end_epoch(e, 3)
        if e == 1:  # resumable: the running sum travels with the prompt state
            state = m.prompt_state()
            assert any(k.startswith("gpa.") for k in state)
            m.load_prompt_state(state)
    expected = sum(float(g[i]) * values[i] for i in range(3))
    assert torch.allclose(ctx, expected.float(), atol=1e-6)


# --- ProGrad -----------------------------------------------------------------------------------------

def test_projection_removes_only_conflicting_components():
    g_ref = torch.tensor([1.0, 0.0, 0.0])
    g = torch.tensor([-2.0, 1.0, 0.5])
    p = project_conflicting(g, g_ref)
    assert torch.allclose(p, torch.tensor([0.0, 1.0, 0.5]))
    assert torch.allclose(project_conflicting(g, g_ref, 0.5), torch.tensor([-1.0, 1.0, 0.5]))
    assert torch.equal(project_conflicting(-g, g_ref), -g)  # aligned: unchanged


def _prograd_step(m, feats, labels):
    opt = torch.optim.SGD([m.prompt_learner.ctx], lr=0.5, momentum=0.9)
    m.train()
    out = m(feats)
    parts = m.base_loss(out, labels)
    opt.zero_grad()
    if hasattr(m, "backward_step"):
        m.backward_step(parts, sum(parts.values()))
    else:
        parts["ce"].backward()
    opt.step()
    return parts


@pytest.mark.parametrize("conflict", [False, True])
def test_prograd_without_conflict_is_coops_step(tiny_backbone, conflict):
    torch.manual_seed(0)
    # the same random context for both (a student unlike the zero-shot teacher); a sharp teacher (T = 0.05)
    pg = _build("prograd", tiny_backbone, n_ctx=4, template_init=False, temperature=0.05)
    coop = _build("coop", tiny_backbone, n_ctx=4)
    feats = torch.randn(6, tiny_backbone.embed_dim)
    with torch.no_grad():
        teacher = (pg.logit_scale * torch.nn.functional.normalize(feats, dim=-1) @ pg.zs_text.T).argmax(-1)
    labels = (teacher + 1) % len(NAMES) if conflict else teacher
    ctx = pg.prompt_learner.ctx
    pg.train()
    out = pg(feats)
    parts = pg.base_loss(out, labels)
    g_ce = torch.autograd.grad(parts["ce"], ctx, retain_graph=True)[0]
    g_kl = torch.autograd.grad(parts["kl"], ctx)[0]
    dot = float((g_ce * g_kl).sum())
    assert (dot < 0) == conflict
    pg._awaiting_backward = False  # the forward above only inspected the gradients: it was no training step
    _prograd_step(pg, feats, labels)
    _prograd_step(coop, feats, labels)
    same = torch.allclose(pg.prompt_learner.ctx, coop.prompt_learner.ctx, atol=1e-7)
    assert same != conflict
    if conflict:  # the applied gradient has no component against the KL gradient
        expected = g_ce - (g_ce * g_kl).sum() / g_kl.square().sum() * g_kl
        assert torch.allclose(pg.prompt_learner.ctx.grad, expected, atol=1e-6)


def test_prograd_template_initialisation(tiny_backbone):
    m = build_method("prograd", tiny_backbone, NAMES, {"n_ctx": 6}, ["a photo of a {}."])
    ctx = m.prompt_learner.ctx
    words = m.prompt_learner.encoder.token_embeddings(tiny_backbone.tokenizer(["a photo of a"]))[0, 1:5]
    assert torch.equal(ctx[:2], torch.zeros_like(ctx[:2])) and torch.allclose(ctx[2:], words)


# --- TCP -----------------------------------------------------------------------------------------------

def test_tcp_zero_weight_is_coop_and_class_tokens_act(tiny_backbone):
    tcp = _build("tcp", tiny_backbone, class_layer=1, class_weight=0.0, kg_weight=0.0)
    coop = build_method("coop", tiny_backbone, NAMES, {"n_ctx": 4}, TEMPLATES)
    with torch.no_grad():
        coop.prompt_learner.ctx.copy_(tcp.prompt_learner.ctx)
        assert torch.allclose(tcp.text_features(), coop.text_features(), atol=1e-6)
        full = _build("tcp", tiny_backbone, class_layer=1)
        full.prompt_learner.ctx.copy_(tcp.prompt_learner.ctx)
        assert not torch.allclose(full.text_features(), coop.text_features(), atol=1e-4)
    assert not tiny_backbone.model.transformer.resblocks[1]._forward_pre_hooks  # the hook is removed again
    out = full(torch.randn(3, tiny_backbone.embed_dim))
    assert set(full.base_loss(out, torch.tensor([0, 1, 2]))) == {"ce", "kg"}
    sum(full.base_loss(out, torch.tensor([0, 1, 2])).values()).backward()
    assert full.prompt_learner.ctx.grad.abs().sum() > 0 and full.class_net[0].weight.grad.abs().sum() > 0
    new = full.for_classnames(["hat", "boot", "scarf"])
    assert new.class_tokens().shape == (3, 4, tiny_backbone.text_width) and new.class_net is full.class_net
    with pytest.raises(MethodConfigError, match="class_layer 8 is beyond the 2 blocks"):
        _build("tcp", tiny_backbone)


def test_published_defaults():
    src = parse_method("promptsrc")
    assert (src.n_ctx_text, src.n_ctx_vision, src.depth_text, src.depth_vision) == (4, 4, 9, 9)
    assert (src.text_loss_weight, src.image_loss_weight, src.gpa_mean, src.gpa_std) == (25, 10, 15, 1)
    pg, tcp = parse_method("prograd"), parse_method("tcp")
    assert (pg.n_ctx, pg.prograd_lambda, pg.temperature) == (16, 1.0, 1.0)
    assert (tcp.n_ctx, tcp.kg_weight, tcp.class_layer, tcp.class_weight) == (4, 8.0, 8, 1.0)


def test_published_presets_validate():
    from ncprompt.config.presets import preset
    from ncprompt.config.run import RunConfig

    for name, method in (("linear_probe", "linear_probe"), ("ivlp_b2n", "ivlp"), ("promptsrc_b2n", "promptsrc"),
                         ("prograd_b2n", "prograd"), ("tcp_b2n", "tcp")):
        cfg = RunConfig.from_dict(preset(name))
        assert cfg.method.name == method
    assert RunConfig.from_dict(preset("promptsrc_b2n")).train.batch_size == 4


def test_missing_engine_hooks_are_errors_not_silent(tiny_backbone):
    pg = _build("prograd", tiny_backbone, n_ctx=4).train()
    feats = torch.randn(3, tiny_backbone.embed_dim)
    sum(pg.base_loss(pg(feats), torch.tensor([0, 1, 2])).values()).backward()  # plain backward: no projection
    with pytest.raises(MethodConfigError, match="backward_step"):
        pg(feats)
    src = _build("promptsrc", tiny_backbone, depth_text=1, depth_vision=0).train()
    src(feats)
    with pytest.raises(MethodConfigError, match="end_epoch"):
        src.predict(feats)
    src.end_epoch(0, 1)
    assert src.predict(feats)[0].shape == (3, len(NAMES))
