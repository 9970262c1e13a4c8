"""Methods as published (issue 7 items 5 and 6), each proven against open_clip's own encode_text:
prompt overflow is an error naming the longest class name and the largest n_ctx that fits; ctx_init
counts words as CoOp does (tokens as an option); MaPLe learns 2 tokens of "a photo of a"; CoCoOp's
per-image prompts honour the class-token position; KgCoOp's defaults are the published ones;
underscores in class names become spaces for API users too."""

from __future__ import annotations

import pytest
import torch

from ncprompt.methods import build_method
from ncprompt.methods.templates import PromptOverflowError
from ncprompt.methods.zeroshot import zero_shot_classifier

NAMES = ["t-shirt", "trouser", "ankle boot"]


def _encode(backbone, texts):
    with torch.no_grad():
        return backbone.encode_texts(texts)


def _close(a, b):
    return torch.allclose(a, b, atol=1e-5)


# --- prompt overflow -----------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["coop", "kgcoop", "cocoop"])
def test_prompt_overflow_names_the_longest_class_and_the_n_ctx_that_fits(tiny_backbone, method):
    # tiny-clip reads 77 tokens; "t-shirt." is 4 tokens: 1 + n_ctx + 4 + 1 <= 77  <=>  n_ctx <= 71
    opts = {"n_ctx": 74, "ctx_init": ""}
    with pytest.raises(PromptOverflowError) as e:
        build_method(method, tiny_backbone, NAMES, opts)
    msg = str(e.value)
    assert "'t-shirt'" in msg and "the largest n_ctx that fits is 71" in msg and "reads 77" in msg
    assert "\n" not in msg
    m = build_method(method, tiny_backbone, NAMES, {"n_ctx": 71, "ctx_init": ""})
    # at the limit nothing is cut: the end token is the last position and the name is all there
    assert int(m.prompt_learner.pool_idx.max()) == 76


def test_prompt_overflow_with_a_long_ctx_init_and_zero_shot_templates(tiny_backbone):
    long_init = " ".join(["a"] * 74)
    with pytest.raises(PromptOverflowError, match=r"longest class name 't-shirt'.*ctx_init .* takes 74 tokens: "
                                                  r"shorten it"):
        build_method("coop", tiny_backbone, NAMES, {"ctx_init": long_init})
    template = " ".join(["a"] * 72) + " {}."
    with pytest.raises(PromptOverflowError, match=r"template .*longest class name 't-shirt'.*needs 78 tokens"):
        zero_shot_classifier(tiny_backbone, NAMES, [template])
    with pytest.raises(PromptOverflowError):
        build_method("zeroshot", tiny_backbone, NAMES, {"templates": template})


# --- ctx_init: words (CoOp) vs tokens ------------------------------------------------------------

def test_ctx_init_counts_words_as_coop_and_tokens_as_an_option(tiny_backbone):
    init = "a zqxv photo"  # 3 words, 5 BPE tokens: a, z, q, xv, photo
    words = build_method("coop", tiny_backbone, NAMES, {"ctx_init": init})
    tokens = build_method("coop", tiny_backbone, NAMES, {"ctx_init": init, "ctx_init_length": "tokens"})
    assert words.prompt_learner.n_ctx == 3 and words.prompt_learner.n_frozen == 2
    assert tokens.prompt_learner.n_ctx == 5 and tokens.prompt_learner.n_frozen == 0
    emb = words.prompt_learner.encoder.token_embeddings(tiny_backbone.tokenize([init]))[0, 1:6].float()
    assert torch.equal(words.prompt_learner.ctx.detach(), emb[:3]) and torch.equal(tokens.prompt_learner.ctx, emb)
    ref = _encode(tiny_backbone, [f"{init} {n}." for n in NAMES])  # both start as the hand-written prompt
    with torch.no_grad():
        assert _close(words.text_features(), ref) and _close(tokens.text_features(), ref)


# --- MaPLe -----------------------------------------------------------------------------------------

def test_maple_default_learns_two_tokens_of_a_photo_of_a(tiny_backbone):
    m = build_method("maple", tiny_backbone, NAMES, {"depth": 1})
    pl = m.prompt_learner
    assert pl.n_ctx == 2 and pl.ctx.shape[0] == 2 and pl.n_frozen == 2
    emb = pl.encoder.token_embeddings(tiny_backbone.tokenize(["a photo"]))[0, 1:3].float()
    assert torch.equal(pl.ctx.detach(), emb)  # initialised from "a photo"; "of a" stay frozen text
    with torch.no_grad():
        assert _close(m.text_features(), _encode(tiny_backbone, [f"a photo of a {n}." for n in NAMES]))


# --- CoCoOp's per-image prompts and the class-token position -------------------------------------

@pytest.mark.parametrize("position, text", [("end", "a photo of a {}."), ("middle", "a photo {} of a."),
                                            ("front", "{} a photo of a.")])
def test_cocoop_per_image_prompts_honour_the_class_token_position(tiny_backbone, position, text):
    m = build_method("cocoop", tiny_backbone, NAMES, {"class_token_position": position})
    ref = _encode(tiny_backbone, [text.format(n) for n in NAMES])
    with torch.no_grad():
        assert _close(m.text_features(), ref)
        m.meta_net[2].weight.zero_()
        m.meta_net[2].bias.zero_()
        per_image = m.conditional_text_features(torch.randn(3, tiny_backbone.embed_dim))
        assert _close(per_image, ref.expand(3, -1, -1))  # pi = 0: every image sees the same prompts
        m.meta_net[2].bias.normal_()  # pi != 0: image i's prompts are the classifier with ctx + pi
        f = torch.randn(2, tiny_backbone.embed_dim)
        per_image = m.conditional_text_features(f)
        pi = m.meta_net(torch.nn.functional.normalize(f, dim=-1))
        pl = m.prompt_learner
        for i in range(2):
            seq = pl.sequences(ctx=pl.ctx + pi[i])
            assert _close(per_image[i], pl.encoder(seq, pl.pool_idx).float())


# --- KgCoOp's published defaults --------------------------------------------------------------------

def test_kgcoop_defaults_are_the_published_ones(tiny_backbone):
    m = build_method("kgcoop", tiny_backbone, NAMES, {}, templates=["a photo of a {}."])
    assert (m.cfg.n_ctx, m.cfg.ctx_init, m.cfg.kg_weight) == (4, "a photo of a", 8.0)
    assert m.prompt_learner.n_ctx == 4 and m.prompt_learner.ctx.shape == (4, tiny_backbone.text_width)
    out = m(torch.randn(2, tiny_backbone.embed_dim))
    assert float(out.extra_losses["kg"].detach()) < 1e-6  # starts at the hand-written prompt


# --- underscores in class names, for API users ----------------------------------------------------

def test_underscores_in_class_names_become_spaces(tiny_backbone):
    raw, clean = ["basset_hound", "great_white_shark"], ["basset hound", "great white shark"]
    ref = _encode(tiny_backbone, [f"a photo of a {n}." for n in clean])
    assert _close(zero_shot_classifier(tiny_backbone, raw, ["a photo of a {}."]), ref)
    m = build_method("coop", tiny_backbone, raw, {"ctx_init": "a photo of a"})
    with torch.no_grad():
        assert _close(m.text_features(), ref)
    assert m.classnames == raw  # the names themselves are kept (results, reports)


def test_training_views_use_coops_crop_scale(tiny_backbone):
    from torchvision.transforms import RandomResizedCrop

    crops = [t for t in tiny_backbone.train_transform.transforms if isinstance(t, RandomResizedCrop)]
    assert len(crops) == 1 and tuple(crops[0].scale) == (0.08, 1.0)
