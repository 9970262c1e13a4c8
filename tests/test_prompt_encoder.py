"""The prompt-encoding path must reproduce open_clip's own encode_text exactly, for CLIP and for
custom-text towers (causal or bidirectional, argmax / eos / first / last pooling, SigLIP's text tower)."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch

from ncprompt.backbones import Backbone, BackboneError, load_backbone
from ncprompt.backbones.text_encoder import PromptEncoderError, PromptTextEncoder
from ncprompt.methods import build_method

NAMES = ["cat", "golden retriever", "sea lion", "ankle boot", "t-shirt"]
TINY_VISION = {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 8}
TINY_TEXT = {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}

# Custom-text (CustomTextCLIP) variants of the tiny config, each a text-tower shape open_clip ships:
CUSTOM_TEXT = {
    "ncp-ct-causal": {},                                                  # EVA02-style: causal, argmax
    "ncp-ct-bidir": {"no_causal_mask": True},                             # MobileCLIP-style: bidirectional
    "ncp-ct-sigstyle": {"no_causal_mask": True, "pool_type": "last", "proj_bias": True,   # SigLIP(2)-style
                      "norm_kwargs": {"eps": 1e-6}, "act_kwargs": {"approximate": "tanh"}},
    "ncp-ct-eos": {"pool_type": "eos", "eos_id": 49407},                  # eos pooling (worldwide-style)
    "ncp-ct-first": {"pool_type": "first"},
}


@pytest.fixture(scope="module")
def custom_text_configs(tmp_path_factory):
    d = tmp_path_factory.mktemp("configs")
    for name, text in CUSTOM_TEXT.items():
        cfg = {"embed_dim": 16, "custom_text": True, "vision_cfg": TINY_VISION, "text_cfg": {**TINY_TEXT, **text}}
        if name == "ncp-ct-sigstyle":
            cfg["init_logit_bias"] = -10
        (d / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d)
    return list(CUSTOM_TEXT)


def _check(backbone, position, template, options=None):
    m = build_method("coop", backbone, NAMES, {"ctx_init": "a photo of a", "class_token_position": position,
                                               **(options or {})})
    with torch.no_grad():
        got = m.text_features()
    ref = backbone.encode_texts([template.format(n) for n in NAMES])
    scale = ref.abs().max()
    assert got.shape == ref.shape == (len(NAMES), backbone.embed_dim)
    assert torch.allclose(got, ref, atol=2e-6 * float(scale), rtol=0), (got - ref).abs().max()
    return m


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


@pytest.mark.parametrize("name", list(CUSTOM_TEXT))
def test_custom_text_towers_reproduce_encode_text(custom_text_configs, name):
    torch.manual_seed(0)
    bb = load_backbone(name, device="cpu")
    assert bb.meta["model_class"] == "CustomTextCLIP" and bb.embed_dim == 16 and bb.text_width == 32
    enc = PromptTextEncoder(bb.model)
    assert enc.cut_exact == (name in ("ncp-ct-causal", "ncp-ct-eos", "ncp-ct-first"))
    for position, template in (("end", "a photo of a {}."), ("middle", "a photo {} of a.")):
        m = _check(bb, position, template)
    pl = m.prompt_learner
    assert pl.sequences().shape[1] == (int(pl.pool_idx.max()) + 1 if enc.cut_exact else TINY_TEXT["context_length"])
    out = m(torch.randn(4, bb.embed_dim))  # CoOp's forward and a gradient step on a custom-text model
    assert out.logits.shape == (4, len(NAMES))
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 3])).backward()
    if name == "ncp-ct-first":  # causal + first-token pooling: the start token sees only itself
        assert pl.ctx.grad is None or pl.ctx.grad.abs().sum() == 0
    else:
        assert pl.ctx.grad is not None and pl.ctx.grad.abs().sum() > 0


def test_bidirectional_tower_refuses_cut_sequences(custom_text_configs):
    bb = load_backbone("ncp-ct-bidir", device="cpu")
    enc = PromptTextEncoder(bb.model)
    tokens = bb.tokenize(["a photo of a cat."])
    emb = enc.token_embeddings(tokens)
    with pytest.raises(PromptEncoderError, match="needs all 24 positions"):
        enc(emb[:, :8], enc.pool_index(tokens))
    # the cut would be silently wrong: features do depend on the padding positions
    full = enc(emb, enc.pool_index(tokens))
    assert torch.allclose(full, bb.model.encode_text(tokens), atol=1e-6)


class _FoldedTokenizer:
    """open_clip's CLIP tokenizer with ids folded into SigLIP's 32000-word vocabulary (its own tokenizer is
    a Hugging Face download); the end token stays the largest id, so argmax still finds it."""

    def __init__(self, context_length: int) -> None:
        self.inner = open_clip.SimpleTokenizer(context_length=context_length)

    def __call__(self, texts):
        t = self.inner(texts)
        eot = t == self.inner.eot_token_id
        return torch.where(t == 0, t, torch.where(eot, torch.full_like(t, 31999), t % 31998 + 1))


def test_siglip_text_tower_reproduces_encode_text():
    """ViT-B-16-SigLIP's own text config (bidirectional, last-token pooling, projection with bias,
    logit bias), random weights, a tiny vision tower so the test stays fast."""
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16-SigLIP", vision_cfg=TINY_VISION).eval().requires_grad_(False)
    bb = Backbone(model=model, name="ViT-B-16-SigLIP", pretrained=None, weights_id="random-init",
                  tokenizer=_FoldedTokenizer(64), train_transform=None, eval_transform=None,
                  device=torch.device("cpu"))
    assert bb.embed_dim == 768 and bb.text_width == 768 and bb.context_length == 64
    assert bb.logit_bias == pytest.approx(-10)
    m = _check(bb, "end", "a photo of a {}.")
    assert m.prompt_learner.sequences().shape[1] == 64  # bidirectional: never cut
    assert m(torch.randn(3, 768)).logits.shape == (3, len(NAMES))


def test_siglip_by_name_fails_cleanly_offline():
    with pytest.raises(BackboneError, match=r"tokenizer of ViT-B-16-SigLIP cannot be loaded.*network"):
        load_backbone("ViT-B-16-SigLIP", device="cpu")


def test_unsupported_text_towers_are_refused():
    class HF(torch.nn.Module):  # stands for open_clip's HFTextEncoder: no token_embedding
        pass

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.text = HF()

    with pytest.raises(PromptEncoderError, match="Hugging Face"):
        PromptTextEncoder(M())
    coca_like = open_clip.create_model("ncp-ct-causal") if "ncp-ct-causal" in open_clip.list_models() else None
    if coca_like is not None:
        coca_like.text.cls_emb = torch.nn.Parameter(torch.zeros(32))
        with pytest.raises(PromptEncoderError, match="CoCa class token or padding mask"):
            PromptTextEncoder(coca_like)


def test_truncation_after_end_token_is_exact(tiny_backbone):
    m = build_method("coop", tiny_backbone, NAMES, {"n_ctx": 6})
    pl = m.prompt_learner
    with torch.no_grad():
        seq = pl.sequences(full=True)
        full = pl.encoder(seq, pl.pool_idx, truncate=False)
        cut = pl.encoder(seq, pl.pool_idx, truncate=True)
        short = pl.encoder(pl.sequences(), pl.pool_idx, truncate=False)
    assert seq.shape[1] == 77 and pl.sequences().shape[1] == int(pl.pool_idx.max()) + 1 < 77
    assert torch.allclose(full, cut, atol=1e-5) and torch.allclose(full, short, atol=1e-5)


def test_gradients_reach_context_only(tiny_backbone):
    m = build_method("coop", tiny_backbone, NAMES, {"n_ctx": 4})
    m.text_features().pow(2).sum().backward()
    assert m.prompt_learner.ctx.grad is not None and m.prompt_learner.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_backbone.model.parameters())
    assert [n for n, p in m.named_parameters() if p.requires_grad] == ["prompt_learner.ctx"]


def test_unified_context_transfers_to_new_classes(tiny_backbone):
    m = build_method("coop", tiny_backbone, NAMES, {"ctx_init": "a photo of a"})
    other = m.for_classnames(["dog", "sandal"])
    assert other.prompt_learner.ctx is m.prompt_learner.ctx
    ref = tiny_backbone.encode_texts(["a photo of a dog.", "a photo of a sandal."])
    assert torch.allclose(other.text_features().detach(), ref, atol=1e-5)
