"""The interface every prompt method implements, and the method registry.

A method turns class names into text features and image features into logits:

    logits_ik = s * cos(f_i, t_k),   s = exp(CLIP's logit_scale) (frozen)

Methods whose image encoder stays frozen (zero-shot, CoOp, KgCoOp, CoCoOp) take cached image
features; the trainer feeds them and hands text features, image features and labels to the NPT
regularisers through one hook, so no method re-implements them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ncprompt.backbones.openclip import Backbone
from ncprompt.registry import Registry


class MethodConfigError(ValueError):
    pass


@dataclass
class MethodConfig:
    """Base of the per-method config dataclasses (validated in ``__post_init__``)."""

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> MethodConfig:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise MethodConfigError(f"unknown option(s) {unknown} for {cls.__name__}; known: {sorted(known)}")
        return cls(**d)


@dataclass
class MethodOutput:
    """What a forward pass returns: logits (B, K), the raw text features it used ((K, E) or
    (B, K, E) for per-image prompts), any method-specific loss terms and, for methods that encode
    images themselves, the image features."""

    logits: torch.Tensor
    text_features: torch.Tensor
    extra_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    #: the image features used, when the method computes them itself (trainable image prompts)
    image_features: torch.Tensor | None = None


class PromptMethod(nn.Module):
    """A classifier over ``classnames`` built on a frozen :class:`Backbone`."""

    name: ClassVar[str] = "base"
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    #: True when image features do not depend on learned parameters (features can be cached).
    frozen_image_encoder: ClassVar[bool] = True
    trainable: ClassVar[bool] = True
    #: True when text features depend on the image (CoCoOp): prediction calls ``forward`` per batch.
    image_conditional: ClassVar[bool] = False
    #: True when the method reads the dataset's hand-written templates (``dataset_templates=`` kwarg).
    uses_templates: ClassVar[bool] = False

    def __init__(self, backbone: Backbone, classnames: list[str], cfg: MethodConfig | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.classnames = list(classnames)
        self.cfg = cfg if cfg is not None else self.config_class()
        self.logit_scale = backbone.logit_scale

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def text_features(self) -> torch.Tensor:
        """Raw text features (K, E) of the current prompts."""
        raise NotImplementedError

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Image features (B, E) of preprocessed pixels, as this method sees them (frozen tower by default)."""
        return self.backbone.encode_images(images)

    def forward(self, image_features: torch.Tensor) -> MethodOutput:
        t = self.text_features()
        return MethodOutput(self.logits(image_features, t), t)

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """s * cos(f_i, t_k) for (B, E) x (K, E) or per-image (B, K, E)."""
        f = F.normalize(image_features.float(), dim=-1)
        t = F.normalize(text_features.float(), dim=-1)
        if t.ndim == 3:
            return self.logit_scale * torch.einsum("be,bke->bk", f, t)
        return self.logit_scale * f @ t.t()

    def base_loss(self, out: MethodOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The method's own loss terms (cross-entropy, plus e.g. KgCoOp's); summed by the trainer."""
        losses = {"ce": F.cross_entropy(out.logits, labels)}
        losses.update(out.extra_losses)
        return losses

    def for_classnames(self, classnames: list[str]) -> PromptMethod:
        """The same learned prompts applied to other classes (e.g. the new classes of base-to-new)."""
        raise NotImplementedError(f"{self.name} cannot be applied to other class names")

    def prompt_state(self) -> dict[str, torch.Tensor]:
        """The learned parameters, for safetensors."""
        return {k: v.detach().cpu().contiguous() for k, v in self.named_parameters() if v.requires_grad}

    def load_prompt_state(self, state: dict[str, torch.Tensor]) -> None:
        own = dict(self.named_parameters())
        missing = sorted(k for k, v in own.items() if v.requires_grad and k not in state)
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise MethodConfigError(
                f"prompt file does not fit method {self.name!r}: missing {missing}, unexpected {unexpected}"
            )
        with torch.no_grad():
            for k, v in state.items():
                if own[k].shape != v.shape:
                    raise MethodConfigError(
                        f"prompt tensor {k!r} has shape {tuple(v.shape)}, method expects {tuple(own[k].shape)}: "
                        "train and evaluate with the same method options (n_ctx, class-specific context, ...)"
                    )
                own[k].copy_(v.to(own[k].device, own[k].dtype))


METHODS: Registry[type[PromptMethod]] = Registry("method")


def options_for(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``options`` that method ``name``'s config knows (shared option sets)."""
    known = {f.name for f in fields(METHODS.get(name).config_class)}
    return {k: v for k, v in options.items() if k in known}


def build_method(
    name: str, backbone: Backbone, classnames: list[str], options: dict[str, Any] | MethodConfig | None = None,
    dataset_templates: list[str] | None = None,
) -> PromptMethod:
    """Build a registered method; ``options`` fill its config dataclass."""
    cls = METHODS.get(name)
    cfg = options if isinstance(options, MethodConfig) else cls.config_class.from_dict(options)
    if cls.uses_templates:
        return cls(backbone, classnames, cfg, dataset_templates=dataset_templates)
    return cls(backbone, classnames, cfg)
