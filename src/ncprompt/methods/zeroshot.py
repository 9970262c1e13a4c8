"""Zero-shot CLIP: t_k = normalise( mean_templates normalise(encode_text(template(class_k))) )."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ncprompt.config.methods import ZeroShotConfig
from ncprompt.methods.base import MethodContext, PromptMethod, register_method
from ncprompt.methods.templates import check_templates_fit, prompt_classname, resolve_templates


@torch.no_grad()
def template_features(backbone, classnames: list[str], templates: list[str], batch: int = 256) -> torch.Tensor:
    """Raw text features (K, T, E) of every template filled with every class name (underscores as spaces). A
    filled template longer than the text context is a :class:`PromptOverflowError` (never silently cut)."""
    length = min(backbone.context_length, int(getattr(backbone.tokenizer, "context_length", 10**9)))
    check_templates_fit(backbone.tokenizer, length, backbone.name, classnames, templates)
    texts = [t.format(prompt_classname(c)) for c in classnames for t in templates]
    feats = torch.cat([backbone.encode_texts(texts[i : i + batch]) for i in range(0, len(texts), batch)])
    return feats.view(len(classnames), len(templates), -1)


@torch.no_grad()
def zero_shot_classifier(backbone, classnames: list[str], templates: list[str], batch: int = 256) -> torch.Tensor:
    """Class text features (K, E): one template gives the raw feature; several give the mean of
    the normalised features (CLIP's ensemble), re-scaled to unit norm (:func:`template_features`)."""
    feats = template_features(backbone, classnames, templates, batch)
    if len(templates) == 1:
        return feats[:, 0]
    return F.normalize(F.normalize(feats, dim=-1).mean(dim=1), dim=-1)


@register_method
class ZeroShot(PromptMethod):
    """Zero-shot CLIP; the classifier is built once and cached."""

    config_class = ZeroShotConfig
    trainable = False

    def __init__(self, context: MethodContext, cfg: ZeroShotConfig | None = None) -> None:
        super().__init__(context, cfg)
        self.templates = resolve_templates(self.cfg.templates, context.templates)  # the ones it uses
        self.register_buffer("classifier", zero_shot_classifier(self.backbone, self.classnames,
                                                                self.templates))

    def text_features(self) -> torch.Tensor:
        return self.classifier

    def for_classnames(self, classnames: list[str]) -> ZeroShot:
        return ZeroShot(self.context.with_classnames(classnames), self.cfg)
