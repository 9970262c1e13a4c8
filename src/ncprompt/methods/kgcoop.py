"""KgCoOp (Yao et al., 2023): CoOp plus knowledge-guided consistency with the hand-written prompt.

    L = CE + w * mean_k ( 1 - cos(t_k, t_k^zs) ),   t^zs = zero-shot features of the dataset's template

with w = 8.0 as published. The zero-shot features are computed once per class list and frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ncprompt.methods.base import METHODS, MethodConfigError, MethodOutput
from ncprompt.methods.coop import CoOp, CoOpConfig
from ncprompt.methods.zeroshot import zero_shot_classifier


@dataclass
class KgCoOpConfig(CoOpConfig):
    """CoOp's options plus ``kg_weight`` (w, default 8.0)."""

    kg_weight: float = 8.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kg_weight < 0:
            raise MethodConfigError(f"kg_weight must be >= 0, got {self.kg_weight}")


@METHODS.register("kgcoop", help="KgCoOp: CoOp + consistency with the hand-written prompt's features")
class KgCoOp(CoOp):
    name = "kgcoop"
    config_class = KgCoOpConfig
    uses_templates = True

    def __init__(self, backbone, classnames, cfg=None, ctx=None, dataset_templates: list[str] | None = None) -> None:
        super().__init__(backbone, classnames, cfg, ctx=ctx)
        self.dataset_templates = dataset_templates
        zs = zero_shot_classifier(backbone, self.classnames, (dataset_templates or ["a photo of a {}."])[:1])
        self.register_buffer("zs_text", zs, persistent=False)

    def forward(self, image_features: torch.Tensor) -> MethodOutput:
        t = self.text_features()
        kg = (1.0 - F.cosine_similarity(t, self.zs_text, dim=-1)).mean()
        return MethodOutput(self.logits(image_features, t), t, {"kg": self.cfg.kg_weight * kg})

    def for_classnames(self, classnames: list[str]) -> KgCoOp:
        if self.cfg.class_specific:
            raise MethodConfigError("class-specific context cannot be applied to new classes; use a unified one")
        return KgCoOp(self.backbone, classnames, self.cfg, ctx=self.prompt_learner.ctx,
                      dataset_templates=self.dataset_templates)
