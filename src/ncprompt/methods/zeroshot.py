"""Zero-shot CLIP: t_k = normalise( mean_templates normalise(encode_text(template(class_k))) )."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ncprompt.methods.base import METHODS, MethodConfig, PromptMethod
from ncprompt.methods.templates import resolve_templates


@dataclass
class ZeroShotConfig(MethodConfig):
    """templates: "dataset" (the dataset's own), "ensemble" (CLIP's 80), "simple", one template or a list."""

    templates: str | list[str] = "dataset"


@torch.no_grad()
def zero_shot_classifier(backbone, classnames: list[str], templates: list[str], batch: int = 256) -> torch.Tensor:
    """Class text features (K, E): one template gives the raw feature; several give the mean of
    the normalised features (CLIP's ensemble), re-scaled to unit norm."""
    texts = [t.format(c) for c in classnames for t in templates]
    feats = torch.cat([backbone.encode_texts(texts[i : i + batch]) for i in range(0, len(texts), batch)])
    feats = feats.view(len(classnames), len(templates), -1)
    if len(templates) == 1:
        return feats[:, 0]
    return F.normalize(F.normalize(feats, dim=-1).mean(dim=1), dim=-1)


@METHODS.register("zeroshot", help="zero-shot CLIP with hand-written templates (no training)")
class ZeroShot(PromptMethod):
    """Zero-shot CLIP; the classifier is built once and cached."""

    name = "zeroshot"
    config_class = ZeroShotConfig
    trainable = False
    uses_templates = True

    def __init__(self, backbone, classnames, cfg=None, dataset_templates: list[str] | None = None) -> None:
        super().__init__(backbone, classnames, cfg)
        self.dataset_templates = dataset_templates
        self.templates = resolve_templates(self.cfg.templates, dataset_templates)
        self.register_buffer("classifier", zero_shot_classifier(backbone, self.classnames, self.templates))

    def text_features(self) -> torch.Tensor:
        return self.classifier

    def for_classnames(self, classnames: list[str]) -> ZeroShot:
        return ZeroShot(self.backbone, classnames, self.cfg, dataset_templates=self.dataset_templates)
