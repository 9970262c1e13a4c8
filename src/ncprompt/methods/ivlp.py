"""IVLP (independent vision-language prompting; the baseline of MaPLe and PromptSRC, Khattak et al., 2023):
deep prompts in both towers, learned independently (no coupling).

Text (depth J_t >= 1): n_t context vectors v^0 at the input (CoOp's prompt, init from the words of ``ctx_init``)
and v^1 .. v^{J_t-1} (N(0, 0.02)) replacing the context positions before text blocks 1 .. J_t-1.
Vision (depth J_v >= 1): n_v prompts u^0 (N(0, 0.02)) appended to the patch tokens before ``ln_pre`` and
u^1 .. u^{J_v-1} replacing them before vision blocks 1 .. J_v-1; dropped before open_clip's pooling.
Depth 0 leaves a tower unprompted: J_t = 0 keeps the hand-written prompt "{ctx_init} {name}." (frozen), J_v = 0
gives open_clip's ``encode_image`` (features can be cached). Published defaults (ViT-B/16): n_t = n_v = 4,
"a photo of a", J_t = J_v = 9, SGD lr 0.0025, batch 4, 20 epochs.
"""

from __future__ import annotations

import torch
from torch import nn

from ncprompt.backbones.image_encoder import check_vision_tower, encode_image_with_prompts
from ncprompt.backbones.text_encoder import text_tower
from ncprompt.config.methods import CoOpConfig, IVLPConfig
from ncprompt.methods.base import MethodConfigError, MethodContext, PromptMethod, register_method
from ncprompt.methods.coop import PromptLearner


def _gaussian_prompts(count: int, n: int, width: int, g: torch.Generator, device: torch.device) -> nn.ParameterList:
    return nn.ParameterList([nn.Parameter((torch.randn(n, width, generator=g) * 0.02).to(device))
                             for _ in range(count)])


class IVLPPrompts(nn.Module):
    """The deep text prompts v^1.. and the vision prompts u^0, u^1.. (the input text context is the learner's)."""

    def __init__(self, cfg: IVLPConfig, d_txt: int, d_img: int, device: torch.device) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(cfg.init_seed + 3)
        self.deep_text = _gaussian_prompts(max(cfg.depth_text - 1, 0), cfg.n_ctx_text, d_txt, g, device)
        self.vision = _gaussian_prompts(cfg.depth_vision, cfg.n_ctx_vision, d_img, g, device)


@register_method
class IVLP(PromptMethod):
    config_class = IVLPConfig
    image_input = "live"

    def __init__(self, context: MethodContext, cfg: IVLPConfig | None = None,
                 shared: tuple[nn.Parameter, IVLPPrompts] | None = None) -> None:
        super().__init__(context, cfg)
        cfg, backbone = self.cfg, self.backbone
        visual = backbone.model.visual
        if cfg.depth_vision:
            check_vision_tower(visual)
        for tower, depth, blocks in (("text", cfg.depth_text, text_tower(backbone.model).transformer),
                                     ("vision", cfg.depth_vision, visual.transformer if cfg.depth_vision else None)):
            n_blocks = len(blocks.resblocks) if blocks is not None else depth
            if depth > n_blocks:
                raise MethodConfigError(f"depth_{tower} {depth} exceeds the {n_blocks} blocks of this model's "
                                        f"{tower} tower")
        if cfg.depth_vision == 0:  # an unprompted image tower is the frozen one: its features can be cached
            self.image_input = "cached"
        coop_cfg = CoOpConfig(n_ctx=cfg.n_ctx_text, ctx_init=cfg.ctx_init, init_seed=cfg.init_seed)
        self.prompt_learner = PromptLearner(backbone, self.classnames, coop_cfg, ctx=shared[0] if shared else None,
                                            shared_prefix=context.shared_prefix)
        if cfg.ctx_init and self.prompt_learner.n_ctx != cfg.n_ctx_text:
            raise MethodConfigError(f"ctx_init {cfg.ctx_init!r} has {self.prompt_learner.n_ctx} tokens but "
                                    f"n_ctx_text is {cfg.n_ctx_text}: make them agree")
        if cfg.depth_text == 0:
            self.prompt_learner.ctx.requires_grad_(False)
        d_img = visual.conv1.out_channels if cfg.depth_vision else 1
        self.prompts = shared[1] if shared else IVLPPrompts(cfg, backbone.text_width, d_img, backbone.device)

    def text_features(self) -> torch.Tensor:
        pl = self.prompt_learner
        deep = list(self.prompts.deep_text) or None
        with self.backbone.autocast():
            return pl.encode(deep_prompts=deep).float()

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Prompted image features (B, E) of preprocessed pixels (the frozen tower's when depth_vision is 0)."""
        if self.image_input == "cached":
            return self.backbone.encode_images(images)
        first, *deep = list(self.prompts.vision)
        with self.backbone.autocast():
            return encode_image_with_prompts(self.backbone.model.visual, images, first, deep).float()

    def for_classnames(self, classnames: list[str]) -> IVLP:
        return type(self)(self.context.with_classnames(classnames), self.cfg,
                          shared=(self.prompt_learner.ctx, self.prompts))
