"""Mixed precision: bf16 autocast close to fp32 (stated tolerance), LayerNorm kept in fp32 under CPU autocast,
fp32 untouched by the hooks, and the grad-scaler step equal to a plain step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ncprompt.backbones import load_backbone
from ncprompt.backbones.precision import backward_and_step, keep_layernorm_fp32, make_grad_scaler
from ncprompt.methods import build_method

NAMES = ["cat", "golden retriever", "sea lion", "ankle boot", "t-shirt"]
# bf16 keeps 8 significant bits (relative rounding 2^-9); through the tiny tower the text features move by
# ~1.0% (relative L2, measured on tiny-clip and on ViT-B-16 alike): we allow 2.5% and cosine >= 0.9995.
BF16_REL_TOL, BF16_COS_TOL = 2.5e-2, 0.9995


@pytest.fixture()
def fresh_tiny():
    torch.manual_seed(0)
    return load_backbone("tiny-clip", device="cpu")


def test_bf16_text_features_close_to_fp32(fresh_tiny):
    m = build_method("coop", fresh_tiny, NAMES, {"ctx_init": "a photo of a"})
    with torch.no_grad():
        f32 = m.text_features()
        fresh_tiny.set_precision("bf16")
        bf16 = m.text_features()
        images = torch.randn(4, 3, 32, 32)
        img16 = fresh_tiny.encode_images(images)
        fresh_tiny.set_precision("fp32")
        img32 = fresh_tiny.encode_images(images)
    assert bf16.dtype == torch.float32  # features and losses leave autocast in fp32
    rel = ((bf16 - f32).norm(dim=-1) / f32.norm(dim=-1)).max()
    assert 0 < rel < BF16_REL_TOL  # > 0: bf16 really ran
    assert torch.nn.functional.cosine_similarity(bf16, f32, dim=-1).min() > BF16_COS_TOL
    assert ((img16 - img32).norm(dim=-1) / img32.norm(dim=-1)).max() < BF16_REL_TOL


def _layernorm_precisions(model: nn.Module, run) -> set[str]:
    """How each LayerNorm computed: "bf16" when all its outputs are bf16 values (open_clip casts them back
    to the input's dtype, so the dtype alone does not tell), else "fp32"."""
    seen: set[str] = set()

    def record(mod, args, out):
        seen.add("bf16" if torch.equal(out.float(), out.bfloat16().float()) else "fp32")

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.LayerNorm)]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_layernorm_stays_fp32_under_cpu_autocast(fresh_tiny):
    tokens = fresh_tiny.tokenize(["a photo of a cat."])
    model = fresh_tiny.model

    def encode():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            model.encode_text(tokens)

    ln = model.ln_final
    x16 = torch.randn(3, ln.normalized_shape[0]).bfloat16()

    def ln_on_bf16_input():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            ln(x16)

    assert _layernorm_precisions(ln, ln_on_bf16_input) == {"bf16"}  # CPU autocast: LayerNorm in its input dtype
    ref = model.encode_text(tokens)
    assert keep_layernorm_fp32(model) > 0 and keep_layernorm_fp32(model) == 0  # idempotent
    assert _layernorm_precisions(ln, ln_on_bf16_input) == {"fp32"}
    assert _layernorm_precisions(model, encode) == {"fp32"}  # every LayerNorm of the tower
    assert torch.equal(model.encode_text(tokens), ref)  # fp32 inputs: the hooks change nothing


def test_bf16_training_step_on_cpu(fresh_tiny):
    fresh_tiny.set_precision("bf16")
    m = build_method("coop", fresh_tiny, NAMES, {"n_ctx": 4})
    opt = torch.optim.SGD([m.prompt_learner.ctx], lr=0.1)
    before = m.prompt_learner.ctx.detach().clone()
    out = m(torch.randn(8, fresh_tiny.embed_dim))
    loss = torch.nn.functional.cross_entropy(out.logits, torch.arange(8) % 5)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    backward_and_step(loss, opt, fresh_tiny.grad_scaler())
    assert m.prompt_learner.ctx.dtype == torch.float32 and not torch.equal(before, m.prompt_learner.ctx)


def _one_step(scaler, grad_scale: float = 1.0):
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(5))
    opt = torch.optim.SGD([w], lr=0.5, momentum=0.9)
    loss = (w * torch.arange(5.0)).pow(2).sum() * grad_scale
    backward_and_step(loss, opt, scaler, max_grad_norm=3.0)
    return w.detach()


def test_grad_scaler_step_equals_plain_step():
    plain = _one_step(None)
    assert torch.equal(_one_step(make_grad_scaler(torch.device("cpu"), "bf16")), plain)  # disabled scaler
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)  # fp16's scaler: powers of two, exact unscale
    assert scaler.is_enabled()
    assert torch.equal(_one_step(scaler), plain)
    assert scaler.get_scale() == 2.0**10


def test_grad_scaler_skips_overflowing_step():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    torch.manual_seed(0)
    start = torch.randn(5)
    skipped = _one_step(scaler, grad_scale=float("inf"))
    assert torch.equal(skipped, start) and scaler.get_scale() == 2.0**9  # step skipped, scale halved
