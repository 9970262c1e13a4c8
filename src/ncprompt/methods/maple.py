"""MaPLe (Khattak et al., 2023): multi-modal prompts, coupled, in both towers.

Text: n context vectors v^0 at the input (as CoOp, init from "a photo of a"-style words) and
deep prompts v^1 .. v^{J-1} replacing the context positions before text blocks 1 .. J-1.
Vision: prompts u^i = F_i(v^i) (coupling F_i = Linear(d_txt, d_img), one per depth) appended to
the patch tokens before ``ln_pre`` and replaced before vision blocks 1 .. J-1. Gradients reach
both branches through the frozen towers; image features are trainable, so they are encoded live
(no feature cache) and NPT's MI uses a running average of the image class means.
"""

from __future__ import annotations

import torch
from torch import nn

from ncprompt.backbones.image_encoder import check_vision_tower, encode_image_with_prompts
from ncprompt.backbones.text_encoder import text_tower
from ncprompt.config.methods import MaPLeConfig
from ncprompt.methods.base import (
    MethodConfigError,
    MethodOutput,
    PromptMethod,
    register_method,
    seeded_linear_init_,
)
from ncprompt.methods.coop import PromptLearner


class MaPLePrompts(nn.Module):
    """The deep text prompts and the coupling functions (the input context lives in the PromptLearner)."""

    def __init__(self, n_ctx: int, depth: int, d_txt: int, d_img: int, seed: int, device: torch.device) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed + 2)
        self.deep_text = nn.ParameterList(
            [nn.Parameter((torch.randn(n_ctx, d_txt, generator=g) * 0.02).to(device)) for _ in range(depth - 1)])
        self.couple = nn.ModuleList([nn.Linear(d_txt, d_img) for _ in range(depth)]).to(device)
        seeded_linear_init_(self.couple, g)


@register_method
class MaPLe(PromptMethod):
    """MaPLe; options in :class:`ncprompt.config.methods.MaPLeConfig`. Encodes images itself (live)."""

    config_class = MaPLeConfig
    image_input = "live"

    def __init__(self, context, cfg=None, shared: tuple[nn.Parameter, MaPLePrompts] | None = None) -> None:
        super().__init__(context, cfg)
        backbone = self.backbone
        visual = backbone.model.visual
        check_vision_tower(visual)
        layers = min(len(text_tower(backbone.model).transformer.resblocks), len(visual.transformer.resblocks))
        if self.cfg.depth > layers:
            raise MethodConfigError(
                f"MaPLe depth {self.cfg.depth} exceeds the {layers} blocks of {backbone.name}'s towers: set "
                f"method.depth <= {layers} (--set method.depth={layers}, or `depth: {layers}` under method: in YAML)")
        ctx = shared[0] if shared else None
        self.prompt_learner = PromptLearner(backbone, self.classnames, self.cfg, ctx=ctx,
                                            shared_prefix=self.context.shared_prefix)
        d_img = visual.conv1.out_channels
        self.prompts = shared[1] if shared else MaPLePrompts(
            self.prompt_learner.n_ctx, self.cfg.depth, backbone.text_width, d_img, self.cfg.init_seed, backbone.device)

    def text_features(self) -> torch.Tensor:
        pl = self.prompt_learner
        with self.backbone.autocast():
            return pl.encode(deep_prompts=list(self.prompts.deep_text)).float()

    def visual_prompts(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        c = self.prompts.couple
        return c[0](self.prompt_learner.ctx), [c[i + 1](p) for i, p in enumerate(self.prompts.deep_text)]

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Prompted image features (B, E) of preprocessed pixels (B, 3, H, W)."""
        first, deep = self.visual_prompts()
        with self.backbone.autocast():
            return encode_image_with_prompts(self.backbone.model.visual, images, first, deep).float()

    def forward(self, images: torch.Tensor) -> MethodOutput:
        f = self.encode_images(images)
        t = self.text_features()
        return MethodOutput(self.logits(f, t), t, image_features=f)

    def for_classnames(self, classnames: list[str]) -> MaPLe:
        return MaPLe(self.context.with_classnames(classnames), self.cfg, shared=(self.prompt_learner.ctx, self.prompts))
