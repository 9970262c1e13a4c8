"""The prompt-encoding path: token-embedding sequences -> text features, through open_clip's modules.

For a sequence of token embeddings ``e`` (start token, context vectors, class-name tokens, end
token, padding) the feature is

    t = ln_final( Transformer( e + P, mask ) )[pool] @ W_proj

exactly as open_clip's ``encode_text`` computes it from token ids, calling the text tower's own
``positional_embedding``, ``transformer``, ``attn_mask``, ``ln_final`` and ``text_projection``.
The tower is the ``CLIP`` model itself (built-in text transformer) or ``model.text`` of a
``CustomTextCLIP`` (an open_clip ``TextTransformer``: SigLIP, EVA, MobileCLIP, CLIPA, ...);
Hugging Face text towers and towers whose mask depends on the token ids (padding masks, CoCa's
class token) are refused with a one-line error.

``mask`` is the causal mask, or none for bidirectional towers; ``pool`` is the tower's pooling:
the end token (``argmax``: the highest id, CLIP's end token; ``eos``: the first ``eos_id``), the
``first`` or the ``last`` position. Only when the mask is causal and the pooled position is at
or before the end token does the feature not depend on anything after the end token: then
sequences are cut after the batch's last end token (identical features, 77 -> ~10 positions for
short prompts). Bidirectional towers, and ``last`` pooling, always see all positions.
"""

from __future__ import annotations

import torch
from torch import nn


class PromptEncoderError(ValueError):
    pass


def text_tower(model: nn.Module) -> nn.Module:
    """The module holding the text transformer: ``model.text`` (CustomTextCLIP) or ``model`` (CLIP)."""
    return model.text if isinstance(getattr(model, "text", None), nn.Module) else model


class PromptTextEncoder(nn.Module):
    """Encodes token-embedding sequences with a frozen open_clip text tower (not a copy of it)."""

    def __init__(self, clip_model: nn.Module) -> None:
        super().__init__()
        tower = text_tower(clip_model)
        name = type(clip_model).__name__
        if tower is not clip_model and not hasattr(tower, "token_embedding"):
            raise PromptEncoderError(
                f"{name} has a {type(tower).__name__} text tower (Hugging Face); prompt tuning needs an open_clip "
                "TextTransformer tower: pick another architecture (`ncprompt models`), e.g. ViT-B-16 or EVA02-B-16")
        for attr in ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection"):
            if not hasattr(tower, attr):
                raise PromptEncoderError(
                    f"{name} has no text {attr!r}: prompt tuning needs an open_clip text transformer tower")
        if getattr(tower, "cls_emb", None) is not None or getattr(tower, "use_pad_mask", False):
            raise PromptEncoderError(
                f"{name}'s text tower masks by token ids (CoCa class token or padding mask); prompt tuning does not "
                "support it: pick another architecture (`ncprompt models`)")
        # Held in lists so the frozen model is not registered as a sub-module (not saved with prompts).
        self._clip = [clip_model]
        self._tower = [tower]
        if tower is clip_model:
            self.pool_type: str = getattr(clip_model, "text_pool_type", "argmax")
            self.eos_id = getattr(clip_model, "text_eos_id", None)
        else:
            self.pool_type = tower.pool_type
            self.eos_id = getattr(tower, "eos_id", None)
        if self.pool_type not in ("argmax", "eos", "first", "last"):
            raise PromptEncoderError(f"{name}'s text pooling {self.pool_type!r} is not supported (argmax, eos, first, "
                                     "last are)")
        if self.pool_type == "eos" and self.eos_id is None:
            raise PromptEncoderError(f"{name} pools at 'eos' but defines no eos_id")

    @property
    def clip(self) -> nn.Module:
        return self._clip[0]

    @property
    def tower(self) -> nn.Module:
        """The text tower whose modules are called (``clip`` itself or ``clip.text``)."""
        return self._tower[0]

    @property
    def causal(self) -> bool:
        """True when the text tower uses a causal attention mask."""
        return getattr(self.tower, "attn_mask", None) is not None

    @property
    def cut_exact(self) -> bool:
        """True when features do not depend on positions after the end token (causal mask and the pooled
        position at or before it), so sequences may be cut after the last end token."""
        return self.causal and self.pool_type in ("argmax", "eos", "first")

    @property
    def full_length(self) -> int:
        return int(self.tower.positional_embedding.shape[0])

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """Frozen token embeddings of token ids (N, L) -> (N, L, width)."""
        return self.tower.token_embedding(tokens)

    def pool_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """Position of each sequence's end token (N,): CLIP's end token is the highest id (``argmax``), or
        the first ``eos_id`` for ``eos`` pooling. ``forward`` pools there unless the tower pools at the
        ``first``/``last`` position."""
        if self.pool_type == "eos":
            return (tokens == self.eos_id).int().argmax(dim=-1)
        return tokens.argmax(dim=-1)

    def forward(
        self,
        embeddings: torch.Tensor,
        pool_index: torch.Tensor,
        truncate: bool = True,
        deep_prompts: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Text features (N, embed_dim) of token-embedding sequences ``embeddings`` (N, L, width).

        Args:
            pool_index: (N,) position of each sequence's end token (:meth:`pool_index`).
            truncate: cut the sequences after the last end token (only where :attr:`cut_exact`).
            deep_prompts: optional per-layer prompt embeddings (n_ctx, width) that replace the
                context positions ``1 .. n_ctx`` before each layer ``i >= 1`` (MaPLe-style); the
                model's blocks are called in order, never modified.
        """
        tower = self.tower
        cast = tower.transformer.get_cast_dtype()
        length = embeddings.shape[1]
        if not self.cut_exact and length != self.full_length:
            raise PromptEncoderError(
                f"this text tower ({'causal' if self.causal else 'bidirectional'} attention, {self.pool_type!r} "
                f"pooling) needs all {self.full_length} positions, got {length}: sequences must not be cut")
        if truncate and self.cut_exact:
            length = int(pool_index.max().item()) + 1
        x = embeddings[:, :length].to(cast) + tower.positional_embedding[:length].to(cast)
        mask = tower.attn_mask[:length, :length] if self.causal else None
        transformer = tower.transformer
        if deep_prompts is None and length == self.full_length:
            x = transformer(x, attn_mask=mask)
        else:
            x = run_blocks(transformer, x, mask, deep_prompts)
        n = x.shape[0]
        if self.pool_type == "first":
            x = x[:, 0]
        elif self.pool_type == "last":
            x = x[:, -1]
        else:
            x = x[torch.arange(n, device=x.device), pool_index]
        return self.head(x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Features (N, embed_dim) of the pooled last-layer hidden states (N, width): ``ln_final(x) @ W_proj``
        (ln_final acts per position, so pooling first is the same as open_clip's order)."""
        tower = self.tower
        x = tower.ln_final(x)
        proj = tower.text_projection
        if proj is not None:
            x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return x


def run_blocks(
    transformer: nn.Module, x: torch.Tensor, mask: torch.Tensor | None, deep_prompts: list[torch.Tensor] | None,
    start: int = 0,
) -> torch.Tensor:
    """Calls ``transformer.resblocks[start:]`` in order (as ``Transformer.forward`` does), optionally
    replacing the context positions with per-layer prompts before layers 1.."""
    batch_first = getattr(transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)
    for i, block in enumerate(transformer.resblocks):
        if i < start:
            continue
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
