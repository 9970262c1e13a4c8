"""Issue 19 section 3: each method's defaults equal the authors' code, built here from the published formulas and
template tables on the same tensors (the reference construction is written out in each test, never taken from the
method under test).

Sources: PromptSRC  muzairkhattak/PromptSRC trainers/promptsrc.py, trainers/imagenet_templates.py
         ProGrad    BeierZhu/Prompt-align ProGrad.public/trainers/prograd.py (CUSTOM_TEMPLATES, PromptLearner, CLIP)
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from ncprompt.data.templates import COOP_TEMPLATES, PROGRAD_TEMPLATES, PROMPTSRC_TEMPLATES
from ncprompt.methods import build_method
from ncprompt.methods.base import MethodConfigError, MethodContext
from ncprompt.methods.templates import PromptOverflowError

pytestmark = pytest.mark.usefixtures("one_thread")

#: class names as the CoOp datasets give them (underscores), which every prompt path writes with spaces
NAMES = ["basset_hound", "great_pyrenees", "sphynx", "yorkshire_terrier"]


def _tokens(backbone, texts: list[str]) -> torch.Tensor:
    return backbone.tokenizer(texts)


@torch.no_grad()
def _clip_text_encoder(model, prompts: torch.Tensor, tokenized: torch.Tensor) -> torch.Tensor:
    """CoOp's / ProGrad's TextEncoder: (prompts + positional) -> transformer -> ln_final -> end token @ projection."""
    x = prompts + model.positional_embedding
    batch_first = getattr(model.transformer, "batch_first", True)
    x = model.transformer(x if batch_first else x.permute(1, 0, 2), attn_mask=model.attn_mask)
    x = model.ln_final(x if batch_first else x.permute(1, 0, 2))
    return x[torch.arange(x.shape[0]), tokenized.argmax(dim=-1)] @ model.text_projection


# --- PromptSRC ----------------------------------------------------------------------------------------------

def test_promptsrc_templates_are_its_60_of_clips_80():
    clip80 = [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
    assert len(PROMPTSRC_TEMPLATES) == 60 == len(set(PROMPTSRC_TEMPLATES))
    assert set(PROMPTSRC_TEMPLATES) < set(clip80)
    assert (PROMPTSRC_TEMPLATES[0], PROMPTSRC_TEMPLATES[-1]) == ("a photo of a {}.", "itap of the {}.")


def test_promptsrc_frozen_text_is_the_published_mean_over_its_templates(tiny_backbone):
    m = build_method("promptsrc", tiny_backbone, NAMES, {"depth_text": 1, "depth_vision": 1})
    assert m.cfg.templates == "promptsrc"
    model = tiny_backbone.model
    with torch.no_grad():  # promptsrc.py: per template, the raw encode_text of the spaced names; mean; normalise
        names = [n.replace("_", " ") for n in NAMES]
        per_template = [model.encode_text(_tokens(tiny_backbone, [t.replace("{}", n) for n in names])).unsqueeze(1)
                        for t in PROMPTSRC_TEMPLATES]
        ref = F.normalize(torch.cat(per_template, dim=1).mean(dim=1), dim=-1)
    # tolerance: the same features encoded in one batch here and per template in the reference (fp32 reductions)
    assert torch.allclose(m.frozen_text, ref, atol=1e-5)
    # CLIP's 80 give another target: the option is not a no-op
    m80 = build_method("promptsrc", tiny_backbone, NAMES, {"depth_text": 1, "depth_vision": 1, "templates": "ensemble"})
    assert not torch.allclose(m80.frozen_text, ref, atol=1e-4)


def test_promptsrc_frozen_text_refuses_a_prompt_longer_than_the_context(tiny_backbone):
    long_name = "very " * 80 + "long name"
    with pytest.raises(PromptOverflowError, match="longest class name"):
        build_method("promptsrc", tiny_backbone, ["cat", long_name],
                     {"depth_text": 0, "depth_vision": 0, "templates": ["a photo of a {}."]})


# --- ProGrad ------------------------------------------------------------------------------------------------

def test_prograd_template_table_is_the_published_one():
    published = {  # prograd.py CUSTOM_TEMPLATES, under this project's dataset names
        "oxford_pets": "a type of pet, a photo of a {}.", "oxford_flowers": "a type of flower, a photo of a {}.",
        "fgvc_aircraft": "a type of aircraft, a photo of a {}.", "dtd": "a texture of {}.",
        "eurosat": "a centered satellite photo of {}.", "stanford_cars": "a photo of a {}.",
        "food101": "a type of food, a photo of {}.", "sun397": "a photo of a {}.", "caltech101": "a photo of a {}.",
        "ucf101": "a photo of a person doing {}.", "imagenet": "a photo of a {}.",
    }
    assert PROGRAD_TEMPLATES == published
    assert {k for k in published if published[k] != COOP_TEMPLATES[k]} == {
        "oxford_pets", "oxford_flowers", "fgvc_aircraft", "dtd", "food101"}


def _prograd(backbone, dataset: str, **opts):
    ctx = MethodContext(backbone, list(NAMES), [COOP_TEMPLATES.get(dataset, "a photo of a {}.")], dataset=dataset)
    return build_method({"name": "prograd", **opts}, ctx)


@pytest.mark.parametrize("dataset", ["oxford_pets", "food101", "dtd", "eurosat"])
def test_prograd_prompt_and_teacher_equal_the_published_construction(tiny_backbone, dataset):
    n_ctx = 16
    m = _prograd(tiny_backbone, dataset, n_ctx=n_ctx)
    model = tiny_backbone.model
    template = PROGRAD_TEMPLATES[dataset]
    with torch.no_grad():
        # PromptLearner with CTX_INIT: the words before " {}.", m = their space-separated count, the first m token
        # embeddings in the last m of n_ctx zero vectors, "X" placeholders in the prompt text before the words
        ctx_init = template.replace(" {}.", "").replace("_", " ")
        n_words = len(ctx_init.split(" "))
        emb = model.token_embedding(_tokens(tiny_backbone, [ctx_init]))
        ref_ctx = torch.zeros(n_ctx, emb.shape[-1])
        ref_ctx[n_ctx - n_words :] = emb[0, 1 : 1 + n_words]
        prefix = " ".join(["X"] * (n_ctx - n_words)) + " " + ctx_init
        tokenized = _tokens(tiny_backbone, [f"{prefix} {n.replace('_', ' ')}." for n in NAMES])
        embedding = model.token_embedding(tokenized)
        prompts = torch.cat([embedding[:, :1], ref_ctx.expand(len(NAMES), -1, -1), embedding[:, 1 + n_ctx :]], 1)
        ref_text = _clip_text_encoder(model, prompts, tokenized)
        # the zero-shot teacher (class CLIP): the template with the spaced names, normalised
        ref_teacher = F.normalize(model.encode_text(
            _tokens(tiny_backbone, [template.format(n.replace("_", " ")) for n in NAMES])), dim=-1)
        assert torch.equal(m.prompt_learner.ctx, ref_ctx)  # the same embedding rows copied: exact
        # tolerance: the method's encoder cuts the sequences after the last end token (same maths, other reductions)
        assert torch.allclose(m.text_features(), ref_text, atol=1e-5)
        assert torch.allclose(m.zs_text, ref_teacher, atol=1e-6)
    if template.split("{}")[0].count(","):  # "a type of pet, a photo of a": 8 words, 9 tokens; the last stays text
        assert m.prompt_learner.n_frozen == 1


def test_prograd_template_options(tiny_backbone):
    own = _prograd(tiny_backbone, "oxford_pets", n_ctx=16, templates="dataset")  # CoOp's table (the earlier default)
    assert own.template == COOP_TEMPLATES["oxford_pets"]
    custom = _prograd(tiny_backbone, "my_folder", n_ctx=16)  # a dataset ProGrad does not list: its own template
    assert custom.template == "a photo of a {}."
    with pytest.raises(MethodConfigError, match="starts with 8 words but n_ctx is 4"):
        _prograd(tiny_backbone, "oxford_pets", n_ctx=4)
    from ncprompt.config.base import ConfigError
    from ncprompt.config.methods import parse_method

    with pytest.raises(ConfigError, match="templates"):
        parse_method({"name": "prograd", "templates": "ensemble"})
