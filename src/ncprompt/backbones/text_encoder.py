"""The prompt-encoding path: token-embedding sequences -> text features, through open_clip's modules.

For a sequence of token embeddings ``e`` (start token, context vectors, class-name tokens, end
token, padding) the feature is

    t = ln_final( Transformer( e + P, causal_mask ) )[eot] @ W_proj

exactly as ``CLIP.encode_text`` computes it from token ids, calling the model's own
``positional_embedding``, ``transformer``, ``attn_mask``, ``ln_final`` and ``text_projection``.
Under the causal mask a position never attends to later ones, so the feature at the end token
does not depend on anything after it: sequences are cut after the batch's last end token, which
gives identical features at a fraction of the cost (77 -> ~10 positions for short prompts).
"""

from __future__ import annotations

import torch
from torch import nn


class PromptEncoderError(ValueError):
    pass


class PromptTextEncoder(nn.Module):
    """Encodes token-embedding sequences with a frozen open_clip text tower (not a copy of it)."""

    def __init__(self, clip_model: nn.Module) -> None:
        super().__init__()
        for attr in ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection"):
            if not hasattr(clip_model, attr):
                raise PromptEncoderError(
                    f"{type(clip_model).__name__} has no {attr!r}: prompt tuning needs an open_clip CLIP with a "
                    "built-in text transformer (CustomTextCLIP / HF text towers are not supported)"
                )
        # Held in a list so the frozen CLIP is not registered as a sub-module (not saved with prompts).
        self._clip = [clip_model]
        self.pool_type: str = getattr(clip_model, "text_pool_type", "argmax")
        self.eos_id = getattr(clip_model, "text_eos_id", None)
        if self.pool_type not in ("argmax", "eos", "first", "last"):
            raise PromptEncoderError(f"unsupported text pooling {self.pool_type!r}")

    @property
    def clip(self) -> nn.Module:
        return self._clip[0]

    @property
    def causal(self) -> bool:
        return getattr(self.clip, "attn_mask", None) is not None

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """Frozen token embeddings of token ids (N, L) -> (N, L, width)."""
        return self.clip.token_embedding(tokens)

    def pool_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """Position of the pooled (end) token of each sequence, as ``text_global_pool`` picks it."""
        n, length = tokens.shape
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)
        if self.pool_type == "eos":
            return (tokens == self.eos_id).int().argmax(dim=-1)
        if self.pool_type == "first":
            return torch.zeros(n, dtype=torch.long, device=tokens.device)
        return torch.full((n,), length - 1, dtype=torch.long, device=tokens.device)

    def forward(
        self,
        embeddings: torch.Tensor,
        pool_index: torch.Tensor,
        truncate: bool = True,
        deep_prompts: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Text features (N, embed_dim) of token-embedding sequences ``embeddings`` (N, L, width).

        Args:
            pool_index: (N,) position of each sequence's end token.
            truncate: cut the sequences after the last end token (exact under a causal mask).
            deep_prompts: optional per-layer prompt embeddings (n_ctx, width) that replace the
                context positions ``1 .. n_ctx`` before each layer ``i >= 1`` (MaPLe-style); the
                model's blocks are called in order, never modified.
        """
        clip = self.clip
        cast = clip.transformer.get_cast_dtype()
        length = embeddings.shape[1]
        if truncate and self.causal and self.pool_type in ("argmax", "eos", "first"):
            length = int(pool_index.max().item()) + 1
        x = embeddings[:, :length].to(cast) + clip.positional_embedding[:length].to(cast)
        mask = clip.attn_mask[:length, :length] if self.causal else None
        transformer = clip.transformer
        if deep_prompts is None:
            if length == clip.positional_embedding.shape[0]:
                x = transformer(x, attn_mask=mask)
            else:
                x = _run_blocks(transformer, x, mask, None)
        else:
            x = _run_blocks(transformer, x, mask, deep_prompts)
        x = clip.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), pool_index]
        proj = clip.text_projection
        if proj is not None:
            x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return x


def _run_blocks(
    transformer: nn.Module, x: torch.Tensor, mask: torch.Tensor | None, deep_prompts: list[torch.Tensor] | None
) -> torch.Tensor:
    """Calls ``transformer.resblocks`` in order (as ``Transformer.forward`` does), optionally
    replacing the context positions with per-layer prompts before layers 1.."""
    batch_first = getattr(transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)
    for i, block in enumerate(transformer.resblocks):
        if deep_prompts is not None and 1 <= i <= len(deep_prompts):
            p = deep_prompts[i - 1].to(x.dtype)
            n_ctx = p.shape[0]
            if batch_first:
                x = torch.cat([x[:, :1], p.unsqueeze(0).expand(x.shape[0], -1, -1), x[:, 1 + n_ctx :]], dim=1)
            else:
                x = torch.cat([x[:1], p.unsqueeze(1).expand(-1, x.shape[1], -1), x[1 + n_ctx :]], dim=0)
        x = block(x, attn_mask=mask)
    if not batch_first:
        x = x.transpose(0, 1)
    return x
