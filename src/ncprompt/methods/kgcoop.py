"""KgCoOp (Yao et al., 2023): CoOp plus knowledge-guided consistency with the hand-written prompt.

    L = CE + w * mean_k ( 1 - cos(t_k, t_k^zs) ),   t^zs = zero-shot features of the dataset's template

with w = 8.0 as published. The zero-shot features are computed once per class list and frozen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ncprompt.config.methods import KgCoOpConfig
from ncprompt.methods.base import MethodConfigError, MethodOutput, register_method
from ncprompt.methods.coop import CoOp
from ncprompt.methods.zeroshot import zero_shot_classifier


@register_method
class KgCoOp(CoOp):
    """KgCoOp; options in :class:`ncprompt.config.methods.KgCoOpConfig`."""

    config_class = KgCoOpConfig

    def __init__(self, context, cfg=None, ctx=None) -> None:
        super().__init__(context, cfg, ctx=ctx)
        zs = zero_shot_classifier(self.backbone, self.classnames, self.templates[:1])
        self.register_buffer("zs_text", zs, persistent=False)

    def forward(self, image_features: torch.Tensor) -> MethodOutput:
        t = self.text_features()
        kg = (1.0 - F.cosine_similarity(t, self.zs_text, dim=-1)).mean()
        return MethodOutput(self.logits(image_features, t), t, {"kg": self.cfg.kg_weight * kg})

    def for_classnames(self, classnames: list[str]) -> KgCoOp:
        if self.cfg.class_specific:
            raise MethodConfigError("class-specific context cannot be applied to new classes; use a unified one")
        return KgCoOp(self.context.with_classnames(classnames), self.cfg, ctx=self.prompt_learner.ctx)
