"""The interface every prompt method implements, and the method registry.

A method turns class names into text features and image features into logits:

    logits_ik = s * cos(f_i, t_k),   s = exp(CLIP's logit_scale) (frozen)

A method is built from a :class:`MethodContext` (backbone, class names, the dataset's templates)
and its config model (:mod:`ncprompt.config.methods`), and owns its behaviour: how it sees images
(:meth:`PromptMethod.image_features`: cached frozen-tower features, or its own live encoding), what
it trains on (:meth:`PromptMethod.training_source`, None when it trains nothing) and how it predicts
(:meth:`PromptMethod.predict`). The engine only calls these; it never asks which method it runs.
The trainer hands text features, image features and labels to the NPT regularisers through one
hook, so no method re-implements them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ncprompt.backbones.openclip import Backbone
from ncprompt.config.base import ConfigError
from ncprompt.config.methods import MethodConfig, parse_method
from ncprompt.data.base import LabeledImages
from ncprompt.data.cache import CachedFeatures, FeatureCache, FeatureSource, PixelViews, encode_with
from ncprompt.registry import Registry

DEFAULT_TEMPLATES = ["a photo of a {}."]


class MethodConfigError(ConfigError):
    pass


@dataclass(frozen=True)
class MethodContext:
    """What a method is built on: the frozen backbone, the class names, the dataset's templates, its registered
    name (``data.dataset``; methods with published per-dataset tables, e.g. ProGrad's templates, look it up), and
    whether prompts encode their shared prefix once (``train.shared_prefix``;
    :class:`ncprompt.methods.coop.PromptLearner`)."""

    backbone: Backbone
    classnames: list[str]
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    dataset: str = field(default="", kw_only=True)
    shared_prefix: bool = field(default=True, kw_only=True)

    def with_classnames(self, classnames: list[str]) -> MethodContext:
        return replace(self, classnames=list(classnames))


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
    """A classifier over ``context.classnames`` built on a frozen :class:`Backbone`.

    Subclasses set ``config_class`` and declare what they need; only this class reads the
    declarations: ``image_input`` "cached" (the frozen image tower's features, cached) or "live"
    (pixels, encoded by :meth:`encode_images` at every step), ``trainable``.
    """

    name: ClassVar[str] = "base"
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    image_input: ClassVar[Literal["cached", "live"]] = "cached"
    trainable: ClassVar[bool] = True

    def __init__(self, context: MethodContext, cfg: MethodConfig | None = None) -> None:
        super().__init__()
        if not isinstance(context, MethodContext):
            raise TypeError(f"{type(self).__name__} takes a MethodContext (build it with build_method)")
        self.context = context
        self.backbone = context.backbone
        self.classnames = list(context.classnames)
        self.templates = list(context.templates)
        self.cfg = cfg if cfg is not None else self.config_class()
        self.logit_scale = self.backbone.logit_scale

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    # --- prompts and logits -----------------------------------------------------------------
    def text_features(self) -> torch.Tensor:
        """Raw text features (K, E) of the current prompts (the classifier used by diagnostics)."""
        raise NotImplementedError

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Image features (B, E) of preprocessed pixels, as this method sees them (frozen tower by default)."""
        return self.backbone.encode_images(images)

    def forward(self, inputs: torch.Tensor) -> MethodOutput:
        """One training forward on what :meth:`training_source` yields (features, or pixels when live)."""
        f = self.encode_images(inputs) if self.image_input == "live" else inputs
        t = self.text_features()
        return MethodOutput(self.logits(f, t), t, image_features=f if self.image_input == "live" else None)

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

    # --- behaviour the engine calls ---------------------------------------------------------
    def image_features(self, images: LabeledImages, cache: FeatureCache | None = None,
                       desc: str = "images") -> torch.Tensor:
        """Centre-view image features (N, E) of ``images`` as this method sees them."""
        cache = cache if cache is not None else FeatureCache(enabled=False)
        if self.image_input == "cached":
            return cache.features(self.backbone, images, desc=desc)
        with torch.no_grad():
            return encode_with(self.encode_images, self.backbone, images, workers=cache.workers)

    def fixed_image_features(self, images: LabeledImages, cache: FeatureCache | None = None) -> torch.Tensor | None:
        """Training-image features that do not change while training (NPT's fixed class means), or None."""
        return self.image_features(images, cache, desc="train") if self.image_input == "cached" else None

    @property
    def ddp_auto(self) -> Literal["main", "ddp"]:
        """How this method trains under torchrun by default: "main" (rank 0 alone) for a step on cached
        features, which is the text encoder over all K prompts that every DDP rank would repeat in full;
        "ddp" (each rank a slice of the batch) for a step that encodes images live and divides over ranks."""
        return "main" if self.image_input == "cached" else "ddp"

    def backward_step(self, parts: dict[str, torch.Tensor], loss: torch.Tensor) -> None:
        """Back-propagate one step: dL/dtheta of ``loss`` = the sum of the summed ``parts`` (ProGrad overrides
        it to project the CE gradient off the zero-shot direction)."""
        loss.backward()

    def notes(self) -> list[str]:
        """Lines for the run's log about how this method computes (e.g. why the shared-prefix prompt encoding is
        off): every sub-module's ``encoding_note``, when set."""
        return [n for m in self.modules() if (n := getattr(m, "encoding_note", None))]

    def end_epoch(self, epoch: int, epochs: int) -> None:
        """Called by the trainer after the steps of 0-based ``epoch`` (PromptSRC: Gaussian prompt aggregation)."""

    def training_source(self, images: LabeledImages, views: int, seed: int,
                        cache: FeatureCache | None = None) -> FeatureSource | None:
        """What :meth:`forward` trains on, by (index, view); None when the method trains nothing."""
        if not self.trainable:
            return None
        cache = cache if cache is not None else FeatureCache(enabled=False)
        if self.image_input == "live":  # decoded and augmented by the cache's DataLoader workers
            return PixelViews(self.backbone, images, views, seed, workers=cache.workers)
        return CachedFeatures(cache.store(self.backbone, images, views=views, seed=seed, train=True,
                                          desc="train views"))  # memory-mapped: batches read from disk

    @torch.no_grad()
    def predict(self, features: torch.Tensor, batch: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (N, K) of image features (from :meth:`image_features`) and the (K, E) text features
        used as the classifier (computed once)."""
        self.eval()
        t = self.text_features()
        out = [self.logits(features[i : i + batch].to(t.device), t).cpu() for i in range(0, len(features), batch)]
        return torch.cat(out) if out else torch.zeros(0, self.num_classes), t

    @torch.no_grad()
    def fixed_head(self) -> dict[str, torch.Tensor] | None:
        """The classifier as three tensors when the logits are ``logit_scale * normalise(f) @ weight.T + bias``
        on the frozen image tower's features f: weight (K, E) the L2-normalised text features, bias (K,) zeros,
        logit_scale () s. None when predicting needs more (image-side prompts: the image tower runs prompted;
        per-image prompts). What ``ncprompt export`` writes for plain open_clip."""
        if self.image_input != "cached":
            return None
        self.eval()
        t = F.normalize(self.text_features().float(), dim=-1).cpu()
        return {"weight": t.contiguous(), "bias": torch.zeros(len(t)), "logit_scale": torch.tensor(self.logit_scale)}

    def for_classnames(self, classnames: list[str]) -> PromptMethod:
        """The same learned prompts applied to other classes (e.g. the new classes of base-to-new)."""
        raise MethodConfigError(f"{self.name} cannot be applied to other class names")

    # --- learned state ----------------------------------------------------------------------
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



def seeded_linear_init_(layers: list[nn.Module] | nn.Module, g: torch.Generator) -> None:
    """PyTorch's default range for each ``nn.Linear``: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    drawn on the CPU from ``g`` (weight then bias, layer by layer) and copied to the layer's device, so the
    initial values are the same on every device."""
    with torch.no_grad():
        for m in layers:
            if isinstance(m, nn.Linear):
                bound = 1.0 / m.in_features**0.5
                for p in (m.weight, m.bias):
                    p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=g))


def register_method(cls: type[PromptMethod]) -> type[PromptMethod]:
    """Class decorator: register ``cls`` under its config model's ``name`` (``ncprompt methods`` lists it)."""
    name = cls.config_class.model_fields["name"].default
    if not isinstance(name, str):
        raise TypeError(f"{cls.__name__}.config_class needs a name: Literal[...] = ... default")
    cls.name = name
    METHODS.register(name, help=cls.config_class.summary or (cls.__doc__ or "").strip().split("\n")[0])(cls)
    return cls


def build_method(
    spec: str | MethodConfig | dict[str, Any], context: MethodContext | Backbone, classnames: list[str] | None = None,
    options: dict[str, Any] | MethodConfig | None = None, templates: list[str] | None = None,
    dataset_templates: list[str] | None = None,
) -> PromptMethod:
    """Build a registered method: ``build_method(cfg, context)`` or, as a shortcut,
    ``build_method("coop", backbone, classnames, {"n_ctx": 4}, templates)``."""
    if isinstance(options, MethodConfig):
        cfg = options
    elif isinstance(spec, MethodConfig):
        cfg = spec.model_copy(update=options) if options else spec
        cfg = parse_method(cfg.model_dump())
    else:
        base = {"name": spec} if isinstance(spec, str) else dict(spec)
        cfg = parse_method({**base, **(options or {})})
    if not isinstance(context, MethodContext):
        if classnames is None:
            raise TypeError("build_method(spec, backbone, classnames, ...) needs the class names")
        context = MethodContext(context, list(classnames), list(templates or dataset_templates or DEFAULT_TEMPLATES))
    import ncprompt.methods  # noqa: F401  (registers the built-in methods)

    cls = METHODS.get(cfg.name)
    return cls(context, cfg)
