"""CoOp (Zhou et al., 2022): learned context vectors in place of a hand-written prompt.

Prompt for class k (class token at the end):  [SOS] v_1 ... v_M  w_k^1 .. w_k^{L_k}  "."  [EOS]
with v the learned context (shared by all classes, or one set per class), w_k the frozen token
embeddings of the class name. "middle" puts the name between v_1..v_{M/2} and the rest, "front"
puts it before the context. Features: the frozen text tower at the end token.
"""

from __future__ import annotations

import torch
from torch import nn

from ncprompt.backbones.openclip import Backbone
from ncprompt.backbones.shared_prefix import encode_shared_prefix, say_once, unsupported_reason
from ncprompt.backbones.text_encoder import PromptTextEncoder
from ncprompt.config.methods import CoOpConfig
from ncprompt.methods.base import MethodConfigError, MethodContext, PromptMethod, register_method
from ncprompt.methods.templates import PromptOverflowError, longest_prompt, prompt_classname


class PromptLearner(nn.Module):
    """Holds the learned context and builds the K token-embedding sequences.

    The prompt text of class k is "<prefix> <name_k>." with prefix = ``ctx_init`` (or n_ctx "X"
    placeholders); the M token positions after the start token hold the learned context. With
    ``ctx_init``, M is set by ``ctx_init_length`` ("words": one per word, CoOp's ``n_ctx =
    len(ctx_init.split())``; "n_ctx": MaPLe's; "tokens": all its BPE tokens), the context starts from
    the first M token embeddings of ctx_init, and ctx_init's further tokens stay frozen text, as in
    the published code. A prompt longer than the text context is a :class:`PromptOverflowError`.

    With ``shared_prefix`` (and the class token at the end, one shared context, a causal text tower) the
    prompts' common start, [SOS] + context + frozen ctx_init words (``prefix_len`` positions), is encoded once
    and only the class positions per class (:mod:`ncprompt.backbones.shared_prefix`; equal to the full path
    to rounding); otherwise ``prefix_len`` is 0 and every prompt is encoded in full.
    """

    def __init__(self, backbone: Backbone, classnames: list[str], cfg: CoOpConfig,
                 ctx: nn.Parameter | None = None, shared_prefix: bool = True) -> None:
        super().__init__()
        self.encoder = PromptTextEncoder(backbone.model)
        self.cfg = cfg
        tok = backbone.tokenizer
        device = backbone.device
        names = [prompt_classname(c) for c in classnames]
        with torch.no_grad():
            if cfg.ctx_init:
                ctx_init = prompt_classname(cfg.ctx_init).strip()
                init_tokens = tok([ctx_init]).to(device)
                n_init = int(self.encoder.pool_index(init_tokens)[0].item()) - 1
                how = getattr(cfg, "ctx_init_length", "tokens")
                n_ctx = {"words": len(ctx_init.split()), "n_ctx": cfg.n_ctx, "tokens": n_init}[how]
                if n_ctx > n_init:
                    raise MethodConfigError(
                        f"ctx_init {ctx_init!r} has {n_init} tokens, fewer than the {n_ctx} context vectors asked "
                        f"for (ctx_init_length {how!r}): lower n_ctx or lengthen ctx_init")
                init = self.encoder.token_embeddings(init_tokens)[0, 1 : 1 + n_ctx].float()
                prefix_text = ctx_init
                self.n_frozen = n_init - n_ctx  # tokens of ctx_init after the learned ones: frozen text
            else:
                n_ctx = cfg.n_ctx
                g = torch.Generator().manual_seed(cfg.init_seed)
                shape = (len(classnames), n_ctx, backbone.text_width) if cfg.class_specific else (
                    n_ctx, backbone.text_width)
                init = (torch.randn(shape, generator=g) * 0.02).to(device)
                prefix_text = " ".join(["X"] * n_ctx)
                self.n_frozen = 0
            if cfg.ctx_init and cfg.class_specific:
                init = init.unsqueeze(0).repeat(len(classnames), 1, 1)
        if self.n_frozen and cfg.class_token_position != "end":
            raise MethodConfigError(
                f"class_token_position {cfg.class_token_position!r} needs every token of ctx_init {cfg.ctx_init!r} "
                "learned: set ctx_init_length to 'tokens', or put the class token at the end")
        self.n_ctx = n_ctx
        if ctx is not None:
            if tuple(ctx.shape) != tuple(init.shape):
                raise MethodConfigError(f"context shape {tuple(ctx.shape)} does not fit {tuple(init.shape)}")
            if cfg.class_specific and len(classnames) != ctx.shape[0]:
                raise MethodConfigError("class-specific context cannot be applied to other classes")
            self.ctx = ctx
        else:
            self.ctx = nn.Parameter(init)
        prompts = [f"{prefix_text} {name}." for name in names]
        _check_fit(backbone, prompts, names, n_ctx, cfg.ctx_init, self.n_frozen)
        tokens = tok(prompts).to(device)
        self.register_buffer("tokens", tokens, persistent=False)
        with torch.no_grad():
            emb = self.encoder.token_embeddings(tokens).float()
        self.register_buffer("token_prefix", emb[:, :1], persistent=False)  # SOS
        self.register_buffer("token_suffix", emb[:, 1 + n_ctx :], persistent=False)  # name, ".", EOS, pad
        self.register_buffer("pool_idx", self.encoder.pool_index(tokens), persistent=False)
        #: positions up to the last end token: under the causal mask nothing later matters
        self.length = int(self.pool_idx.max()) + 1 if self.encoder.cut_exact else tokens.shape[1]
        # class-name length in tokens: the tokens between the context and "." + EOS
        name_tokens = tok(names).to(device)
        self.name_lens = (self.encoder.pool_index(name_tokens) - 1).tolist()
        reason = None if not shared_prefix else (
            f"the class token is at the {cfg.class_token_position}, not the end" if cfg.class_token_position != "end"
            else "the context is class-specific" if cfg.class_specific else unsupported_reason(self.encoder))
        #: why the shared-prefix encoding is off although asked for (the trainer puts it in the run's log)
        self.encoding_note = (f"note: shared-prefix prompt encoding is off for {backbone.name}: {reason}; every "
                              "prompt is encoded in full") if reason else None
        if reason:
            say_once(self.encoding_note)
        #: positions every prompt shares ([SOS], context, frozen ctx_init words); 0: encode the full prompts
        self.prefix_len = 1 + n_ctx + self.n_frozen if shared_prefix and reason is None else 0

    def suffix(self, full: bool = False) -> torch.Tensor:
        """Class-name, "." and end-token embeddings (and padding when ``full``)."""
        return self.token_suffix if full else self.token_suffix[:, : self.length - 1 - self.n_ctx]

    def sequences(self, full: bool = False, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """Prompt sequences (N K, L, width), cut after the last end token unless ``full``, for the
        context ``ctx``: (M, width) shared, (K, M, width) per class, or (N, K, M, width) for N
        context sets (CoCoOp's per-image contexts); default the learned one (N = 1). The class
        token goes at ``class_token_position`` in every case."""
        k = self.token_prefix.shape[0]
        ctx = self.ctx if ctx is None else ctx
        if ctx.ndim == 2:
            ctx = ctx.unsqueeze(0).expand(k, -1, -1)
        if ctx.ndim == 3:
            ctx = ctx.unsqueeze(0)
        n = ctx.shape[0]
        ctx = ctx.to(self.token_prefix.dtype)
        prefix = self.token_prefix.unsqueeze(0).expand(n, -1, -1, -1)
        suffix = self.suffix(full).unsqueeze(0).expand(n, -1, -1, -1)
        pos = self.cfg.class_token_position
        if pos == "end":
            return torch.cat([prefix, ctx, suffix], dim=2).flatten(0, 1)
        rows = []
        half = self.n_ctx // 2
        for i, m in enumerate(self.name_lens):
            name, rest, c, p = suffix[:, i, :m], suffix[:, i, m:], ctx[:, i], prefix[:, i]
            parts = [p, c[:, :half], name, c[:, half:], rest] if pos == "middle" else [p, name, c, rest]
            rows.append(torch.cat(parts, dim=1))
        return torch.stack(rows, dim=1).flatten(0, 1)

    def encode(self, ctx: torch.Tensor | None = None, deep_prompts: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Text features (G K, E) (row g K + k, the tower's dtype) of the K prompts for G contexts: ``ctx``
        (G, M, width), e.g. CoCoOp's per-image ones, or None: the learned context (G = 1). ``deep_prompts`` as in
        :meth:`PromptTextEncoder.forward`. Shared prefix encoded once where ``prefix_len``, else full prompts."""
        if not self.prefix_len:
            n, k = (1 if ctx is None else ctx.shape[0]), self.token_prefix.shape[0]
            seq = self.sequences(ctx=None if ctx is None else ctx.unsqueeze(1).expand(-1, k, -1, -1))
            return self.encoder(seq, self.pool_idx.repeat(n), deep_prompts=deep_prompts)
        ctx = self.ctx if ctx is None else ctx
        ctx = ctx.unsqueeze(0) if ctx.ndim == 2 else ctx
        g = ctx.shape[0]
        sos = self.token_prefix[:1].expand(g, -1, -1)
        frozen = self.token_suffix[:1, : self.n_frozen].expand(g, -1, -1)
        prefix = torch.cat([sos, ctx.to(sos.dtype), frozen], dim=1)
        suffix = self.suffix()[:, self.n_frozen :]  # positions prefix_len .. length - 1
        return encode_shared_prefix(self.encoder, prefix, suffix, self.pool_idx - self.prefix_len, deep_prompts)

    def forward(self) -> torch.Tensor:
        return self.encode().float()


def _check_fit(backbone: Backbone, prompts: list[str], names: list[str], n_ctx: int, ctx_init: str,
               n_frozen: int) -> None:
    """A :class:`PromptOverflowError` when a prompt would be cut by the tokenizer (class name lost)."""
    length = min(backbone.context_length, int(getattr(backbone.tokenizer, "context_length", 10**9)))
    i, need = longest_prompt(backbone.tokenizer, prompts, length)
    if need <= length:
        return
    fit = n_ctx - (need - length)  # the context is the only part that can shrink
    how = (f"the largest n_ctx that fits is {fit}" if fit >= 1 else
           f"no n_ctx fits: shorten the class name {names[i]!r}")
    if ctx_init:
        how += f"; ctx_init {ctx_init!r} takes {n_ctx + n_frozen} tokens: shorten it"
    raise PromptOverflowError(
        f"prompt overflow: n_ctx {n_ctx} + the longest class name {names[i]!r} need {need} tokens "
        f"(start, context, name, '.', end) but {backbone.name} reads {length}: the class name would be cut off "
        f"(chance accuracy); {how}")


@register_method
class CoOp(PromptMethod):
    """CoOp; options in :class:`ncprompt.config.methods.CoOpConfig`."""

    config_class = CoOpConfig

    def __init__(self, context: MethodContext, cfg: CoOpConfig | None = None, ctx: nn.Parameter | None = None) -> None:
        super().__init__(context, cfg)
        self.prompt_learner = PromptLearner(self.backbone, self.classnames, self.learner_config(), ctx=ctx,
                                            shared_prefix=context.shared_prefix)

    def learner_config(self) -> CoOpConfig:
        """The options the prompt learner is built from: the method's own (ProGrad: its template as ctx_init)."""
        return self.cfg

    def text_features(self) -> torch.Tensor:
        with self.backbone.autocast():
            return self.prompt_learner()

    def for_classnames(self, classnames: list[str]) -> CoOp:
        if self.cfg.class_specific:
            raise MethodConfigError("class-specific CoOp context cannot be applied to new classes; use a unified one")
        return type(self)(self.context.with_classnames(classnames), self.cfg, ctx=self.prompt_learner.ctx)
