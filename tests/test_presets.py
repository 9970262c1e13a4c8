"""Each published preset, as loaded (preset over the defaults), against the recipe in the authors' code.

Sources (repository: file; every value below comes from the file named in its row's comment):
  CoOp      KaiyangZhou/CoOp: configs/trainers/CoOp/vit_b16.yaml (few-shot), vit_b16_ctxv1.yaml (base-to-new,
            named for CoOp in scripts/cocoop/base2new_train.sh), scripts/coop/main.sh (N_CTX 16, end)
  CoCoOp    KaiyangZhou/CoOp: configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml,
            scripts/cocoop/base2new_train.sh
  KgCoOp    htyao89/KgCoOp: KgCoOp/configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml, KgCoOp/scripts/base2new_train.sh
  MaPLe     muzairkhattak/multimodal-prompt-learning: configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml
  IVLP      muzairkhattak/PromptSRC: configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml
  PromptSRC muzairkhattak/PromptSRC: configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml
  ProGrad   BeierZhu/Prompt-align: ProGrad.public/configs/trainers/ProGrad/rn50_ep100.yaml,
            ProGrad.public/scripts/base2new_train_prograd.sh
  TCP       htyao89/Textual-based_Class-aware_prompt_tuning: configs/trainers/TCP/vit_b16_ep100_ctxv1.yaml,
            scripts/base2new_train.sh, trainers/clip_text/model.py (layers=[8], weights=[1.0])
  lpclip    KaiyangZhou/CoOp: lpclip/linear_probe.py
  Dassl     KaiyangZhou/Dassl.pytorch: dassl/config/defaults.py (OPTIM.MOMENTUM 0.9, OPTIM.WEIGHT_DECAY 5e-4), which
            every config above inherits, as it does WARMUP_EPOCH 1 / WARMUP_CONS_LR 1e-5 (set in each yaml)
"""

from __future__ import annotations

from typing import Any

import pytest

from ncprompt.config.presets import PRESETS, preset
from ncprompt.config.run import RunConfig

#: what every Dassl yaml above sets or inherits: SGD momentum 0.9, weight decay 5e-4, 1 constant warm-up epoch at 1e-5
_DASSL = {"train.momentum": 0.9, "train.weight_decay": 5e-4, "train.warmup_epochs": 1, "train.warmup_lr": 1e-5}
_B2N = {"data.protocol": "base2new", "data.shots": 16}  # base2new_train.sh of CoCoOp / KgCoOp / TCP: SHOTS=16
_PHOTO = {"method.n_ctx": 4, "method.ctx_init": "a photo of a"}  # CTX_INIT "a photo of a" -> 4 learned words

PUBLISHED: dict[str, dict[str, Any]] = {
    # zero-shot CLIP: no training images
    "zeroshot": {"method.name": "zeroshot", "data.shots": 0},
    # CoOp vit_b16.yaml: batch 32, lr 0.002, 200 epochs; main.sh: 16 random tokens, class token at the end
    "coop": {"method.name": "coop", "method.n_ctx": 16, "method.ctx_init": "", "method.class_token_position": "end",
             "data.protocol": "all", "data.shots": 16, "train.optimizer": "sgd", "train.epochs": 200,
             "train.batch_size": 32, "train.lr": 0.002, **_DASSL},
    # CoOp vit_b16_ctxv1.yaml: batch 32, lr 0.002, 200 epochs, CTX_INIT "a photo of a"
    "coop_b2n": {"method.name": "coop", **_PHOTO, **_B2N, "train.optimizer": "sgd", "train.epochs": 200,
                 "train.batch_size": 32, "train.lr": 0.002, **_DASSL},
    # CoCoOp vit_b16_c4_ep10_batch1_ctxv1.yaml: batch 1, lr 0.002, 10 epochs, N_CTX 4, "a photo of a"
    "cocoop_b2n": {"method.name": "cocoop", **_PHOTO, **_B2N, "train.optimizer": "sgd", "train.epochs": 10,
                   "train.batch_size": 1, "train.lr": 0.002, **_DASSL},
    # KgCoOp vit_b16_ep100_ctxv1.yaml: batch 128, lr 0.002, 100 epochs; base2new_train.sh: NCTX 4, W 8.0, SHOTS 16
    "kgcoop_b2n": {"method.name": "kgcoop", **_PHOTO, "method.kg_weight": 8.0, **_B2N, "train.optimizer": "sgd",
                   "train.epochs": 100, "train.batch_size": 128, "train.lr": 0.002, **_DASSL},
    # MaPLe vit_b16_c2_ep5_batch4_2ctx.yaml: batch 4, lr 0.0035, 5 epochs, N_CTX 2, "a photo of a", depth 9
    "maple_b2n": {"method.name": "maple", "method.n_ctx": 2, "method.ctx_init": "a photo of a", "method.depth": 9,
                  **_B2N, "train.optimizer": "sgd", "train.epochs": 5, "train.batch_size": 4, "train.lr": 0.0035,
                  **_DASSL},
    # IVLP vit_b16_c2_ep20_batch4_4+4ctx.yaml: batch 4, lr 0.0025, 20 epochs, 4 + 4 tokens, depth 9 + 9
    "ivlp_b2n": {"method.name": "ivlp", "method.n_ctx_text": 4, "method.n_ctx_vision": 4,
                 "method.ctx_init": "a photo of a", "method.depth_text": 9, "method.depth_vision": 9, **_B2N,
                 "train.optimizer": "sgd", "train.epochs": 20, "train.batch_size": 4, "train.lr": 0.0025, **_DASSL},
    # PromptSRC vit_b16_c2_ep20_batch4_4+4ctx.yaml: as IVLP + TEXT_LOSS_WEIGHT 25, IMAGE_LOSS_WEIGHT 10,
    # GPA_MEAN 15, GPA_STD 1; promptsrc.py: frozen text over imagenet_templates.py's IMAGENET_TEMPLATES (60)
    "promptsrc_b2n": {"method.name": "promptsrc", "method.n_ctx_text": 4, "method.n_ctx_vision": 4,
                      "method.ctx_init": "a photo of a", "method.depth_text": 9, "method.depth_vision": 9,
                      "method.text_loss_weight": 25.0, "method.image_loss_weight": 10.0, "method.gpa": True,
                      "method.gpa_mean": 15.0, "method.gpa_std": 1.0, "method.templates": "promptsrc", **_B2N,
                      "train.optimizer": "sgd", "train.epochs": 20, "train.batch_size": 4, "train.lr": 0.0025,
                      **_DASSL},
    # ProGrad rn50_ep100.yaml: batch 32, lr 0.002, 100 epochs, LOSS.T 1.0, CTX_INIT True (the words of prograd.py's
    # CUSTOM_TEMPLATES);
    # base2new_train_prograd.sh: NCTX 16, SHOTS 4, LAMBDA 1.0
    "prograd_b2n": {"method.name": "prograd", "method.n_ctx": 16, "method.template_init": True,
                    "method.templates": "prograd", "method.prograd_lambda": 1.0, "method.temperature": 1.0,
                    "data.protocol": "base2new",
                    "data.shots": 4, "train.optimizer": "sgd", "train.epochs": 100, "train.batch_size": 32,
                    "train.lr": 0.002, **_DASSL},
    # TCP vit_b16_ep100_ctxv1.yaml: adam (Dassl: torch.optim.Adam), lr 0.002, 50 epochs, batch 32, CTX_INIT False;
    # base2new_train.sh: NCTX 4, W 8.0, SHOTS 16; clip_text/model.py: class tokens before block 8, weight 1.0
    "tcp_b2n": {"method.name": "tcp", "method.n_ctx": 4, "method.ctx_init": "", "method.kg_weight": 8.0,
                "method.class_layer": 8, "method.class_weight": 1.0, **_B2N, "train.optimizer": "adam",
                "train.epochs": 50, "train.batch_size": 32, "train.lr": 0.002, "train.warmup_epochs": 1,
                "train.warmup_lr": 1e-5, "train.weight_decay": 5e-4},
    # lpclip linear_probe.py: C grid {1e6 .. 1e-6}, 8 search steps, max_iter 1000 (its 4 val shots from the val split:
    # here 4-fold cross-validation on the training shots, docs/method.md)
    "linear_probe": {"method.name": "linear_probe", "method.c_grid": [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6],
                     "method.search_steps": 8, "method.max_iter": 1000, "method.cv_folds": 4, "method.val_shots": 0,
                     "data.protocol": "all", "data.shots": 16},
}
#: the project's own recipes (not published elsewhere; the pocket carries: tests/test_pocket_method_presets.py)
OWN = {"pocket_b2n", "pocket_kgcoop_b2n", "pocket_linear_probe",
       *(f"pocket_{m}_b2n" for m in ("cocoop", "maple", "ivlp", "promptsrc", "prograd", "tcp"))}


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def test_every_preset_is_in_the_table():
    assert set(PRESETS) == set(PUBLISHED) | OWN


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_matches_the_published_recipe(name):
    cfg = RunConfig.from_dict(preset(name))
    got = {key: _get(cfg, key) for key in PUBLISHED[name]}
    assert got == PUBLISHED[name]
