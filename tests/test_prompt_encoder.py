"""The prompt-encoding path must reproduce open_clip's own encode_text exactly."""

from __future__ import annotations

import pytest
import torch

from ncprompt.backbones import load_backbone
from ncprompt.methods.coop import CoOp, CoOpConfig

NAMES = ["cat", "golden retriever", "sea lion", "ankle boot", "t-shirt"]


def _check(backbone, position, template):
    m = CoOp(backbone, NAMES, CoOpConfig(ctx_init="a photo of a", class_token_position=position))
    with torch.no_grad():
        got = m.text_features()
    ref = backbone.encode_texts([template.format(n) for n in NAMES])
    scale = ref.abs().max()
    assert got.shape == ref.shape
    assert torch.allclose(got, ref, atol=2e-6 * float(scale), rtol=0), (got - ref).abs().max()


@pytest.mark.parametrize("position,template", [
    ("end", "a photo of a {}."),
    ("middle", "a photo {} of a."),
    ("front", "{} a photo of a."),
])
def test_context_equal_to_words_reproduces_encode_text_tiny(tiny_backbone, position, template):
    _check(tiny_backbone, position, template)


def test_context_equal_to_words_reproduces_encode_text_vit_b16():
    torch.manual_seed(1)
    _check(load_backbone("ViT-B-16", device="cpu"), "end", "a photo of a {}.")


def test_truncation_after_end_token_is_exact(tiny_backbone):
    m = CoOp(tiny_backbone, NAMES, CoOpConfig(n_ctx=6))
    pl = m.prompt_learner
    with torch.no_grad():
        seq = pl.sequences(full=True)
        full = pl.encoder(seq, pl.pool_idx, truncate=False)
        cut = pl.encoder(seq, pl.pool_idx, truncate=True)
        short = pl.encoder(pl.sequences(), pl.pool_idx, truncate=False)
    assert seq.shape[1] == 77 and pl.sequences().shape[1] == int(pl.pool_idx.max()) + 1 < 77
    assert torch.allclose(full, cut, atol=1e-5) and torch.allclose(full, short, atol=1e-5)


def test_gradients_reach_context_only(tiny_backbone):
    m = CoOp(tiny_backbone, NAMES, CoOpConfig(n_ctx=4))
    m.text_features().pow(2).sum().backward()
    assert m.prompt_learner.ctx.grad is not None and m.prompt_learner.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_backbone.model.parameters())
    assert [n for n, p in m.named_parameters() if p.requires_grad] == ["prompt_learner.ctx"]


def test_class_specific_context_shapes_and_new_class_error(tiny_backbone):
    m = CoOp(tiny_backbone, NAMES, CoOpConfig(n_ctx=3, class_specific=True))
    assert m.prompt_learner.ctx.shape == (len(NAMES), 3, tiny_backbone.text_width)
    assert m.text_features().shape == (len(NAMES), tiny_backbone.embed_dim)
    with pytest.raises(ValueError, match="class-specific"):
        m.for_classnames(["dog"])


def test_unified_context_transfers_to_new_classes(tiny_backbone):
    m = CoOp(tiny_backbone, NAMES, CoOpConfig(ctx_init="a photo of a"))
    other = m.for_classnames(["dog", "sandal"])
    assert other.prompt_learner.ctx is m.prompt_learner.ctx
    ref = tiny_backbone.encode_texts(["a photo of a dog.", "a photo of a sandal."])
    assert torch.allclose(other.text_features().detach(), ref, atol=1e-5)
