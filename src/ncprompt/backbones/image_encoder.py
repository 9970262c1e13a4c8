"""Prompted image encoding through open_clip's own VisionTransformer modules (for MaPLe-style
methods whose image features depend on learned prompts).

    x = ln_pre( [cls, patches] + P  ||  v_0 )           (v_0: n visual prompts appended)
    x = block_i(x), with the last n tokens replaced by v_i before blocks i = 1 .. len(deep)
    f = pool(x without the prompt tokens) @ proj         (open_clip's own _pool and proj)

With no prompts this is exactly ``model.encode_image`` (tested).
"""

from __future__ import annotations

import torch
from torch import nn


class PromptImageEncoderError(ValueError):
    pass


def check_vision_tower(visual: nn.Module) -> None:
    for attr in ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "_pool", "proj"):
        if not hasattr(visual, attr):
            raise PromptImageEncoderError(
                f"{type(visual).__name__} has no {attr!r}: visual prompts need an open_clip VisionTransformer "
                "(ViT-*); ResNet and timm towers are not supported")
    if getattr(visual, "attn_pool", None) is not None:
        raise PromptImageEncoderError("visual prompts are not supported with attentional pooling towers")


def encode_image_with_prompts(visual: nn.Module, images: torch.Tensor, prompts: torch.Tensor | None = None,
                              deep_prompts: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Image features (B, E) with optional visual prompts ``prompts`` (n, width) at the input and
    ``deep_prompts`` (each (n, width)) replacing them before blocks 1, 2, ..."""
    x = visual.conv1(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.patch_dropout(x)
    n = 0
    if prompts is not None:
        n = prompts.shape[0]
        x = torch.cat([x, prompts.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
    x = visual.ln_pre(x)
    transformer = visual.transformer
    batch_first = getattr(transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)
    for i, block in enumerate(transformer.resblocks):
        if deep_prompts is not None and n and 1 <= i <= len(deep_prompts):
            p = deep_prompts[i - 1].to(x.dtype)
            if batch_first:
                x = torch.cat([x[:, :-n], p.unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
            else:
                x = torch.cat([x[:-n], p.unsqueeze(1).expand(-1, x.shape[1], -1)], dim=0)
        x = block(x)
    if not batch_first:
        x = x.transpose(0, 1)
    if n:
        x = x[:, :-n]
    pooled, _ = visual._pool(x)
    return pooled @ visual.proj if visual.proj is not None else pooled
