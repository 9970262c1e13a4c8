"""TCP (Yao et al., CVPR 2024, "Textual-based class-aware prompt tuning"): class-aware tokens made from the frozen
class text embeddings enter the text tower at a middle layer.

With z_k the normalised zero-shot feature of class k (the dataset's template), a projection
(Linear(E, E/r) - QuickGELU - Linear(E/r, n d_txt)) gives n class-aware tokens c_k (n, d_txt). The prompt is CoOp's,
[SOS] v_1 .. v_n name_k . [EOS] (random context, n = 4), and before text block ``class_layer`` (8 of 12 as
published) the hidden states at the context positions become w c_k + (1 - w) h (published w = 1: replaced).
Loss: CE + kg_weight mean_k (1 - cos(t_k, z_k)) (KgCoOp's term, 8.0). Published: Adam, lr 0.002, batch 32,
50 epochs. The class tokens of new classes come from their own z_k through the same projection.

Identity case: with w = 0 the class tokens leave the hidden states unchanged, and TCP is KgCoOp with its
context (with kg_weight = 0 too, CoOp), tested.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ncprompt.backbones.text_encoder import text_tower
from ncprompt.config.methods import TCPConfig
from ncprompt.methods.base import (
    MethodConfigError,
    MethodContext,
    MethodOutput,
    register_method,
    seeded_linear_init_,
)
from ncprompt.methods.coop import CoOp
from ncprompt.methods.zeroshot import zero_shot_classifier


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def class_token_net(embed_dim: int, n_tokens: int, width: int, reduction: int, seed: int) -> nn.Sequential:
    """Linear(E, E/r) - QuickGELU - Linear(E/r, n * width), PyTorch's default uniform init from a seeded generator."""
    hidden = max(1, embed_dim // reduction)
    net = nn.Sequential(nn.Linear(embed_dim, hidden), QuickGELU(), nn.Linear(hidden, n_tokens * width))
    g = torch.Generator().manual_seed(seed)
    seeded_linear_init_(net, g)
    return net


@contextlib.contextmanager
def tokens_before_block(block: nn.Module, tokens: torch.Tensor, weight: float, batch_first: bool) -> Iterator[None]:
    """While active, the input of ``block`` at positions 1 .. n becomes weight * tokens + (1 - weight) * input
    (``tokens`` (N, n, width), one row per sequence). A forward pre-hook on the frozen block, removed on exit."""
    n = tokens.shape[1]

    def hook(_module, args, kwargs):
        x = args[0]
        t = tokens.to(x.dtype) if batch_first else tokens.to(x.dtype).transpose(0, 1)
        mid = x[:, 1 : 1 + n] if batch_first else x[1 : 1 + n]
        new = weight * t + (1.0 - weight) * mid
        x = torch.cat([x[:, :1], new, x[:, 1 + n :]], dim=1) if batch_first else torch.cat([x[:1], new, x[1 + n :]])
        return (x, *args[1:]), kwargs

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@register_method
class TCP(CoOp):
    """TCP; options in :class:`ncprompt.config.methods.TCPConfig`."""

    config_class = TCPConfig

    def __init__(self, context: MethodContext, cfg: TCPConfig | None = None, ctx=None,
                 class_net: nn.Module | None = None) -> None:
        super().__init__(context, cfg, ctx=ctx)
        cfg = self.cfg
        if cfg.class_specific or cfg.class_token_position != "end":
            raise MethodConfigError("TCP uses one shared context with the class token at the end")
        blocks = text_tower(self.backbone.model).transformer.resblocks
        if cfg.class_layer >= len(blocks):
            raise MethodConfigError(f"class_layer {cfg.class_layer} is beyond the {len(blocks)} blocks of this "
                                    f"model's text tower; choose 0 .. {len(blocks) - 1}")
        zs = zero_shot_classifier(self.backbone, self.classnames, self.templates[:1]).float()
        self.register_buffer("zs_text", F.normalize(zs, dim=-1), persistent=False)
        self.n_tokens = self.prompt_learner.n_ctx
        self.class_net = class_net if class_net is not None else class_token_net(
            self.backbone.embed_dim, self.n_tokens, self.backbone.text_width, cfg.reduction,
            cfg.init_seed + 5).to(self.backbone.device)

    def class_tokens(self) -> torch.Tensor:
        """(K, n, d_txt) class-aware tokens of the K classes."""
        return self.class_net(self.zs_text).view(self.num_classes, self.n_tokens, -1)

    def text_features(self) -> torch.Tensor:
        transformer = text_tower(self.backbone.model).transformer
        block = transformer.resblocks[self.cfg.class_layer]
        with tokens_before_block(block, self.class_tokens(), self.cfg.class_weight,
                                 getattr(transformer, "batch_first", True)):
            return super().text_features()

    def forward(self, image_features: torch.Tensor) -> MethodOutput:
        t = self.text_features()
        kg = (1.0 - F.cosine_similarity(t, self.zs_text, dim=-1)).mean()
        return MethodOutput(self.logits(image_features, t), t, {"kg": self.cfg.kg_weight * kg})

    def for_classnames(self, classnames: list[str]) -> TCP:
        return TCP(self.context.with_classnames(classnames), self.cfg, ctx=self.prompt_learner.ctx,
                   class_net=self.class_net)
