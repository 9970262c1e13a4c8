"""Published recipes and the project's own, as partial configs over :class:`RunConfig` (one place).

``ncprompt train --preset cocoop_b2n ...`` starts from the preset; a --config file, --set and flags
override it. Each entry: (summary, partial config in the sectioned format).
"""

from __future__ import annotations

from typing import Any

from ncprompt.config.base import ConfigError

_B2N_16 = {"protocol": "base2new", "shots": 16}
#: what every pocket recipe shares (pocket_b2n's): the pocket model, base-to-new at 16 shots, 100 test images per
#: class, one training view cropped to 50-100% of its area, no flip (32 px sprites; arrows and hands)
_POCKET_DATA = {**_B2N_16, "max_test_per_class": 100}
_POCKET_VIEWS = {"views": 1, "crop_min": 0.5, "flip": False}
_POCKET_TRAIN = {"epochs": 100, "batch_size": 32, "lr": 0.002, **_POCKET_VIEWS}

PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "zeroshot": ("zero-shot CLIP with the dataset's templates (no training images)",
                 {"method": {"name": "zeroshot"}, "data": {"shots": 0}}),
    "coop": ("CoOp few-shot (Zhou et al. 2022): 16 random context tokens, class token at the end, 16 shots, "
             "SGD lr 0.002, batch 32, 200 epochs, 1 warm-up epoch at 1e-5",
             {"method": {"name": "coop", "n_ctx": 16, "ctx_init": ""}, "data": {"protocol": "all", "shots": 16},
              "train": {"epochs": 200, "batch_size": 32, "lr": 0.002, "warmup_epochs": 1, "warmup_lr": 1e-5}}),
    "coop_b2n": ("CoOp on base-to-new as in CoCoOp's base2new_train.sh (vit_b16_ctxv1): 16 shots, 4 context "
                 "tokens from 'a photo of a', SGD lr 0.002, batch 32, 200 epochs",
                 {"method": {"name": "coop", "n_ctx": 4, "ctx_init": "a photo of a"}, "data": _B2N_16,
                  "train": {"epochs": 200, "batch_size": 32, "lr": 0.002}}),
    "cocoop_b2n": ("CoCoOp base-to-new as published (vit_b16_c4_ep10_batch1_ctxv1): 4 tokens from 'a photo of a', "
                   "10 epochs, batch 1, lr 0.002",
                   {"method": {"name": "cocoop", "n_ctx": 4, "ctx_init": "a photo of a"}, "data": _B2N_16,
                    "train": {"epochs": 10, "batch_size": 1, "lr": 0.002}}),
    "kgcoop_b2n": ("KgCoOp base-to-new as published (vit_b16_ep100_ctxv1): 4 tokens from 'a photo of a', w = 8.0, "
                   "16 shots, 100 epochs, batch 128, lr 0.002",
                   {"method": {"name": "kgcoop", "n_ctx": 4, "ctx_init": "a photo of a", "kg_weight": 8.0},
                    "data": _B2N_16, "train": {"epochs": 100, "batch_size": 128, "lr": 0.002}}),
    "maple_b2n": ("MaPLe base-to-new as published (vit_b16_c2_ep5_batch4_2ctx): 2 tokens, depth 9, 5 epochs, "
                  "batch 4, lr 0.0035",
                  {"method": {"name": "maple", "n_ctx": 2, "depth": 9}, "data": _B2N_16,
                   "train": {"epochs": 5, "batch_size": 4, "lr": 0.0035}}),
    "pocket_b2n": ("the pocket-suite recipe (docs/results.md): pocket model, base-to-new, 16 shots, CoOp's own "
                   "default context (16 random tokens), SGD lr 0.002, batch 32, 100 epochs (KgCoOp's; CoOp's B2N "
                   "200), 1 view cropped to 50-100% of the area, no flip (32 px sprites, arrows), 100 test images "
                   "per class",
                   {"run": {"model": "pocket"}, "data": _POCKET_DATA,
                    "method": {"name": "coop", "n_ctx": 16, "ctx_init": ""}, "train": _POCKET_TRAIN}),
    "pocket_kgcoop_b2n": ("KgCoOp on the pocket suite: the pocket_b2n training with KgCoOp's published context "
                          "design carried to the emoji world (the hand prompt's words: 3 tokens from 'an emoji of', "
                          "as 4 from 'a photo of a' on photos), w = 8.0",
                          {"run": {"model": "pocket"}, "data": _POCKET_DATA,
                           "method": {"name": "kgcoop", "n_ctx": 3, "ctx_init": "an emoji of", "kg_weight": 8.0},
                           "train": _POCKET_TRAIN}),
    # issue 11 (published recipes; sources in docs/method.md)
    "linear_probe": ("linear probe (CoOp's lpclip): logistic regression on image features, C searched on held-out "
                     "images, 16 shots, protocol all (no NPT, no new classes)",
                     {"method": {"name": "linear_probe"}, "data": {"protocol": "all", "shots": 16}}),
    "ivlp_b2n": ("IVLP base-to-new as published (PromptSRC repo, vit_b16_c2_ep20_batch4_4+4ctx): 4 + 4 tokens, "
                 "depth 9 + 9, 20 epochs, batch 4, lr 0.0025",
                 {"method": {"name": "ivlp", "n_ctx_text": 4, "n_ctx_vision": 4, "depth_text": 9, "depth_vision": 9},
                  "data": _B2N_16, "train": {"epochs": 20, "batch_size": 4, "lr": 0.0025}}),
    "promptsrc_b2n": ("PromptSRC base-to-new as published (vit_b16_c2_ep20_batch4_4+4ctx): IVLP 4 + 4 tokens, depth "
                      "9, weights 25 / 10 / 1, GPA mean 15 std 1, 20 epochs, batch 4, lr 0.0025",
                      {"method": {"name": "promptsrc", "text_loss_weight": 25.0, "image_loss_weight": 10.0,
                                  "gpa_mean": 15.0, "gpa_std": 1.0},
                       "data": _B2N_16, "train": {"epochs": 20, "batch_size": 4, "lr": 0.0025}}),
    "prograd_b2n": ("ProGrad base-to-new as published (base2new_train_prograd.sh, rn50_ep100): 4 shots, 16 tokens "
                    "from the template, lambda 1, T 1, 100 epochs, batch 32, lr 0.002",
                    {"method": {"name": "prograd", "n_ctx": 16, "prograd_lambda": 1.0, "temperature": 1.0},
                     "data": {"protocol": "base2new", "shots": 4},
                     "train": {"epochs": 100, "batch_size": 32, "lr": 0.002}}),
    "tcp_b2n": ("TCP base-to-new as published (vit_b16_ep100_ctxv1): 4 random tokens, class tokens at text block 8, "
                "w 8.0, 50 epochs, batch 32, lr 0.002, Adam with L2 weight decay 5e-4 (Dassl's 'adam')",
                {"method": {"name": "tcp", "n_ctx": 4, "kg_weight": 8.0, "class_layer": 8},
                 "data": _B2N_16, "train": {"epochs": 50, "batch_size": 32, "lr": 0.002, "optimizer": "adam"}}),
}

#: the caption frames of the pocket world (ncprompt.pocket.world.NAME_FRAMES, tested equal): the emoji world's
#: counterpart of CLIP's 80 ImageNet templates, which PromptSRC's frozen text features average
POCKET_FRAMES = ["{}", "{} emoji", "{} icon", "emoji {}", "an emoji of {}", "{} clipart", "{} sticker",
                 "{} illustration", "cute {} emoji", "{} vector icon", "{} cartoon", "{} symbol", "emoticon: {}",
                 "the {} emoji", "image of {}", "a photo of {}"]
_EMOJI_CTX = {"ctx_init": "an emoji of"}  # "a photo of a" in the emoji world (pocket_kgcoop_b2n's words)


def _on_pocket(published: str, summary: str, method: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Published preset ``published`` carried to the pocket suite as pocket_b2n carries CoOp: the pocket model,
    base-to-new at 16 shots, 100 test images per class, 1 view cropped to 50-100%, no flip; the method's own
    epochs, batch, lr and optimiser kept; ``method``: the options that change (depths scaled from 12 blocks to
    the 4 of the pocket text tower, the emoji world's words)."""
    src = PRESETS[published][1]
    return (summary, {"run": {"model": "pocket"}, "data": dict(_POCKET_DATA), "method": {**src["method"], **method},
                      "train": {**src["train"], **_POCKET_VIEWS}})


_POCKET_SAME = ("pocket model, base-to-new, 16 shots, 1 view cropped to 50-100%, no flip, 100 test images per class "
                "(as pocket_b2n)")
PRESETS.update({
    "pocket_cocoop_b2n": _on_pocket(
        "cocoop_b2n", f"CoCoOp on the pocket suite: cocoop_b2n's 10 epochs, batch 1, lr 0.002; 3 tokens from 'an "
        f"emoji of' (as pocket_kgcoop_b2n); {_POCKET_SAME}", {"n_ctx": 3, **_EMOJI_CTX}),
    "pocket_maple_b2n": _on_pocket(
        "maple_b2n", f"MaPLe on the pocket suite: maple_b2n's 5 epochs, batch 4, lr 0.0035, 2 learned tokens of 'an "
        f"emoji of' ('of' stays frozen text); depth 3 of the 4 text blocks (published 9 of 12; the vision tower "
        f"has 6); {_POCKET_SAME}", {**_EMOJI_CTX, "depth": 3}),
    "pocket_ivlp_b2n": _on_pocket(
        "ivlp_b2n", f"IVLP on the pocket suite: ivlp_b2n's 20 epochs, batch 4, lr 0.0025; 3 text tokens from 'an "
        f"emoji of' + 4 vision tokens; depth 3 + 3 (published 9 + 9 of 12; one depth in both towers as published, "
        f"3 of the 4 text and of the 6 vision blocks); {_POCKET_SAME}",
        {"n_ctx_text": 3, **_EMOJI_CTX, "depth_text": 3, "depth_vision": 3}),
    "pocket_promptsrc_b2n": _on_pocket(
        "promptsrc_b2n", f"PromptSRC on the pocket suite: promptsrc_b2n's 20 epochs, batch 4, lr 0.0025, weights 25 / "
        f"10 / 1, GPA mean 15 std 1; pocket_ivlp_b2n's prompts (3 + 4 tokens, depth 3 + 3); frozen text features "
        f"averaged over the pocket world's 16 caption frames (CLIP's 80 photo templates on real CLIP); "
        f"{_POCKET_SAME}",
        {"n_ctx_text": 3, **_EMOJI_CTX, "depth_text": 3, "depth_vision": 3, "templates": POCKET_FRAMES}),
    "pocket_prograd_b2n": _on_pocket(
        "prograd_b2n", f"ProGrad on the pocket suite: prograd_b2n's 16 tokens, lambda 1, T 1, 100 epochs, batch 32, "
        f"lr 0.002, at 16 shots (published base-to-new: 4; 16 as every other method of the table); the emoji "
        f"template '{{}} emoji' has no words before the class, so the context starts random (CoOp's pocket "
        f"default); {_POCKET_SAME}", {}),
    "pocket_tcp_b2n": _on_pocket(
        "tcp_b2n", f"TCP on the pocket suite: tcp_b2n's 4 random tokens, w 8.0, 50 epochs, batch 32, lr 0.002, "
        f"Adam; class tokens before text block 3 of 4 (published 8 of 12); {_POCKET_SAME}", {"class_layer": 3}),
    "pocket_linear_probe": ("linear probe on the pocket suite: linear_probe's search, protocol all (a probe has "
                            "no weights for new classes), pocket model, 16 shots, 100 test images per class",
                            {"run": {"model": "pocket"}, "method": {"name": "linear_probe"},
                             "data": {"protocol": "all", "shots": 16, "max_test_per_class": 100}}),
})


def preset(name: str) -> dict[str, Any]:
    """A copy of preset ``name``'s partial config."""
    import copy

    if name not in PRESETS:
        raise ConfigError(f"--preset: unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return copy.deepcopy(PRESETS[name][1])


def method_options(name: str) -> dict[str, Any]:
    """Preset ``name``'s method options without the method's name (for a grid cell of another method)."""
    return {k: v for k, v in preset(name)["method"].items() if k != "name"}
