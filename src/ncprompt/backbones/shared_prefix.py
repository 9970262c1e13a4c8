"""Shared-prefix prompt encoding: the prompts' common start is encoded once, the class positions per class.

With the class token at the end the prompt of class k is ``e_k = [a ; s_k]``: a prefix ``a`` of P positions
(start token, the M context vectors, any frozen words of ``ctx_init`` after them) equal for all K classes, then
the class part ``s_k`` (name tokens, ".", end token; S positions after the cut). Under the causal mask position j
of layer l depends on positions <= j of layer l - 1 only, so the prefix's hidden states ``h^l[:P]`` are the same
for every class at every layer. Per pre-norm block (open_clip's ``ResidualAttentionBlock``, its own weights):

    u = ln_1(h);  [q, k, v] = u W_in^T + b_in                                   (attn.in_proj)
    prefix:  o_a = softmax(q_a k_a^T / sqrt(d) + causal) v_a                     (once per prefix: G rows x P)
    class:   o_s = softmax(q_s [k_a ; k_s]^T / sqrt(d) + [0 | causal]) [v_a ; v_s]   (G K rows x S)
    h <- h + ls_1(out_proj(o));   h <- h + ls_2(mlp(ln_2(h)))

which is the full sequence's computation with the prefix rows deduplicated (the prefix's keys and values act as
a decoder's KV cache). The feature is ``ln_final`` at the pooled position (an end token, in the class part) times
``text_projection``. The prefix is computed once, with autograd: the gradient that reaches the context is the sum
over the K classes' uses of its keys and values, as in the K copies of the full path. G prefixes: one for a
shared context (CoOp), one per image for CoCoOp's shifted contexts; deep prompts (MaPLe, IVLP, PromptSRC) replace
prefix positions 1..M before their layers. A block with forward hooks (TCP's class tokens, which make the context
positions class-specific) and every later block are run by calling them on the full rows, prefix repeated.

Where it does not apply (bidirectional tower, pooling at the first / last position, a mask other than the causal
one, blocks other than ``ResidualAttentionBlock`` with plain self-attention) :func:`unsupported_reason` says why;
the caller falls back to the full path and :func:`say_once` logs it once per process.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

from ncprompt.backbones.text_encoder import PromptTextEncoder, run_blocks

log = logging.getLogger(__name__)
_said: set[str] = set()


def say_once(message: str) -> None:
    """Log ``message`` (INFO) the first time this process sees it."""
    if message not in _said:
        _said.add(message)
        log.info(message)


def _is_causal_mask(mask: torch.Tensor) -> bool:
    """True for open_clip's additive causal mask: -inf above the diagonal, 0 on and below it."""
    upper = torch.ones(mask.shape, dtype=torch.bool, device=mask.device).triu(1)
    return bool(torch.equal(torch.isneginf(mask), upper) and (mask[~upper] == 0).all())


def block_reason(block: nn.Module) -> str | None:
    """Why ``block`` cannot be run with a shared prefix (None when it can)."""
    if type(block) is not ResidualAttentionBlock:
        return f"its text blocks are {type(block).__name__} (open_clip's ResidualAttentionBlock is supported)"
    attn = block.attn
    if (not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim or attn.in_proj_weight is None
            or attn.bias_k is not None or attn.add_zero_attn or hasattr(block, "ln_1_kv")):
        return "its text blocks' attention is not plain self-attention with one in_proj"
    return None


def unsupported_reason(encoder: PromptTextEncoder) -> str | None:
    """Why shared-prefix encoding does not apply to ``encoder``'s text tower (None when it does)."""
    if not encoder.causal:
        return "its text tower is bidirectional (no causal mask)"
    if encoder.pool_type not in ("argmax", "eos"):
        return f"its text tower pools at the {encoder.pool_type!r} position, not at the end token"
    if not _is_causal_mask(encoder.tower.attn_mask):
        return "its text attention mask is not the plain causal mask"
    for block in encoder.tower.transformer.resblocks:
        reason = block_reason(block)
        if reason:
            return reason
    return None


def _called(block: nn.Module) -> bool:
    """True when ``block`` must be called as a module: hooks on it or its attention, or attention dropout."""
    attn = block.attn
    hooked = any(m._forward_pre_hooks or m._forward_hooks for m in (block, attn))
    return hooked or (attn.training and attn.dropout > 0)


def _attend(block: ResidualAttentionBlock, u: torch.Tensor, gp: int, g: int, k: int, s: int,
            class_mask: torch.Tensor) -> torch.Tensor:
    """Attention output (before out_proj) of the flat normalised tokens ``u`` (G P + G K S, width): the first
    G P rows are the prefixes (causal among themselves), the rest the class rows (prefix keys + causal)."""
    attn = block.attn
    width = u.shape[-1]
    heads = attn.num_heads
    d = width // heads
    p = gp // g
    n = g * k
    qkv = F.linear(u, attn.in_proj_weight, attn.in_proj_bias)
    qa, ka, va = qkv[:gp].view(g, p, 3, heads, d).permute(2, 0, 3, 1, 4)  # each (G, H, P, d)
    qs, ks, vs = qkv[gp:].view(n, s, 3, heads, d).permute(2, 0, 3, 1, 4)  # each (N, H, S, d)
    oa = F.scaled_dot_product_attention(qa, ka, va, is_causal=True)

    def with_prefix(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:  # (N, H, P + S, d)
        return torch.cat([a.unsqueeze(1).expand(g, k, heads, p, d), c.view(g, k, heads, s, d)], dim=3).flatten(0, 1)

    os_ = F.scaled_dot_product_attention(qs, with_prefix(ka, ks), with_prefix(va, vs), attn_mask=class_mask)
    return torch.cat([oa.transpose(1, 2).reshape(gp, width), os_.transpose(1, 2).reshape(n * s, width)])


def _block(block: ResidualAttentionBlock, x: torch.Tensor, gp: int, g: int, k: int, s: int,
           class_mask: torch.Tensor) -> torch.Tensor:
    """One pre-norm block on the flat tokens ``x`` (prefixes, then class rows), from the block's own modules."""
    o = _attend(block, block.ln_1(x), gp, g, k, s, class_mask)
    x = x + block.ls_1(block.attn.out_proj(o))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def encode_shared_prefix(encoder: PromptTextEncoder, prefix: torch.Tensor, suffix: torch.Tensor,
                         pool: torch.Tensor, deep_prompts: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Text features (G K, E) of the prompts ``[prefix_g ; suffix_k]`` (row g K + k), as ``encoder`` computes
    them from the full sequences (to rounding).

    Args:
        prefix: (G, P, width) token embeddings of the G prefixes (start token, context, ...).
        suffix: (K, S, width) the class positions, the same for every prefix, cut after the last end token.
        pool: (K,) each class's pooled position counted from the start of ``suffix`` (end token - P).
        deep_prompts: per-layer prompts (M, width) for positions 1..M before layers 1.. (as
            :meth:`PromptTextEncoder.forward`).
    """
    tower = encoder.tower
    cast = tower.transformer.get_cast_dtype()
    g, p, width = prefix.shape
    k, s, _ = suffix.shape
    pos = tower.positional_embedding.to(cast)
    xa = prefix.to(cast) + pos[:p]
    xs = (suffix.to(cast) + pos[p : p + s]).unsqueeze(0).expand(g, -1, -1, -1)
    x = torch.cat([xa.reshape(g * p, width), xs.reshape(g * k * s, width)])
    gp = g * p
    ones = torch.ones(s, p + s, dtype=torch.bool, device=x.device)
    class_mask = torch.cat([ones[:, :p], ones[:, p:].tril()], dim=1)  # (S, P + S): True = attends
    blocks = tower.transformer.resblocks
    for i, block in enumerate(blocks):
        if _called(block):  # hooks: the remaining blocks see the full rows, prefix repeated per class
            full = torch.cat([x[:gp].view(g, 1, p, width).expand(g, k, p, width).reshape(g * k, p, width),
                              x[gp:].view(g * k, s, width)], dim=1)
            full = run_blocks(tower.transformer, full, tower.attn_mask[: p + s, : p + s], deep_prompts, start=i)
            h = full[:, p:]
            break
        if deep_prompts is not None and 1 <= i <= len(deep_prompts):
            d = deep_prompts[i - 1].to(x.dtype)
            m = d.shape[0]
            xa = x[:gp].view(g, p, width)
            xa = torch.cat([xa[:, :1], d.unsqueeze(0).expand(g, -1, -1), xa[:, 1 + m :]], dim=1)
            x = torch.cat([xa.reshape(gp, width), x[gp:]])
        x = _block(block, x, gp, g, k, s, class_mask)
    else:
        h = x[gp:].view(g * k, s, width)
    rows = torch.arange(g * k, device=h.device)
    return encoder.head(h[rows, pool.to(h.device).repeat(g)])
