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
from ncprompt.backbones.text_encoder import PromptTextEncoder
from ncprompt.config.methods import CoOpConfig
from ncprompt.methods.base import MethodConfigError, MethodContext, PromptMethod, register_method


class PromptLearner(nn.Module):
    """Holds the learned context and builds the K token-embedding sequences."""

    def __init__(self, backbone: Backbone, classnames: list[str], cfg: CoOpConfig,
                 ctx: nn.Parameter | None = None) -> None:
        super().__init__()
        self.encoder = PromptTextEncoder(backbone.model)
        self.cfg = cfg
        tok = backbone.tokenizer
        device = backbone.device
        with torch.no_grad():
            if cfg.ctx_init:
                init_tokens = tok([cfg.ctx_init]).to(device)
                n_ctx = int(self.encoder.pool_index(init_tokens)[0].item()) - 1
                init = self.encoder.token_embeddings(init_tokens)[0, 1 : 1 + n_ctx].float()
                prefix_text = cfg.ctx_init
            else:
                n_ctx = cfg.n_ctx
                g = torch.Generator().manual_seed(cfg.init_seed)
                shape = (len(classnames), n_ctx, backbone.text_width) if cfg.class_specific else (
                    n_ctx, backbone.text_width)
                init = (torch.randn(shape, generator=g) * 0.02).to(device)
                prefix_text = " ".join(["X"] * n_ctx)
            if cfg.ctx_init and cfg.class_specific:
                init = init.unsqueeze(0).repeat(len(classnames), 1, 1)
        self.n_ctx = n_ctx
        if ctx is not None:
            if tuple(ctx.shape) != tuple(init.shape):
                raise MethodConfigError(f"context shape {tuple(ctx.shape)} does not fit {tuple(init.shape)}")
            if cfg.class_specific and len(classnames) != ctx.shape[0]:
                raise MethodConfigError("class-specific context cannot be applied to other classes")
            self.ctx = ctx
        else:
            self.ctx = nn.Parameter(init)
        prompts = [f"{prefix_text} {name}." for name in classnames]
        tokens = tok(prompts).to(device)
        self.register_buffer("tokens", tokens, persistent=False)
        with torch.no_grad():
            emb = self.encoder.token_embeddings(tokens).float()
        self.register_buffer("token_prefix", emb[:, :1], persistent=False)  # SOS
        self.register_buffer("token_suffix", emb[:, 1 + n_ctx :], persistent=False)  # name, ".", EOS, pad
        self.register_buffer("pool_idx", self.encoder.pool_index(tokens), persistent=False)
        #: positions up to the last end token: under the causal mask nothing later matters
        self.length = int(self.pool_idx.max()) + 1 if self.encoder.causal else tokens.shape[1]
        # class-name length in tokens: the tokens between the context and "." + EOS
        name_tokens = tok(list(classnames)).to(device)
        self.name_lens = (self.encoder.pool_index(name_tokens) - 1).tolist()

    def suffix(self, full: bool = False) -> torch.Tensor:
        """Class-name, "." and end-token embeddings (and padding when ``full``)."""
        return self.token_suffix if full else self.token_suffix[:, : self.length - 1 - self.n_ctx]

    def sequences(self, full: bool = False) -> torch.Tensor:
        """The K prompt sequences (K, L, width), cut after the last end token unless ``full``."""
        k = self.token_prefix.shape[0]
        suffix = self.suffix(full)
        ctx = self.ctx if self.ctx.ndim == 3 else self.ctx.unsqueeze(0).expand(k, -1, -1)
        ctx = ctx.to(self.token_prefix.dtype)
        pos = self.cfg.class_token_position
        if pos == "end":
            return torch.cat([self.token_prefix, ctx, suffix], dim=1)
        rows = []
        half = self.n_ctx // 2
        for i, n in enumerate(self.name_lens):
            name = suffix[i : i + 1, :n]
            rest = suffix[i : i + 1, n:]
            c = ctx[i : i + 1]
            if pos == "middle":
                rows.append(torch.cat([self.token_prefix[i : i + 1], c[:, :half], name, c[:, half:], rest], dim=1))
            else:
                rows.append(torch.cat([self.token_prefix[i : i + 1], name, c, rest], dim=1))
        return torch.cat(rows, dim=0)

    def forward(self) -> torch.Tensor:
        return self.encoder(self.sequences(), self.pool_idx).float()


@register_method
class CoOp(PromptMethod):
    """CoOp; options in :class:`ncprompt.config.methods.CoOpConfig`."""

    config_class = CoOpConfig

    def __init__(self, context: MethodContext, cfg: CoOpConfig | None = None, ctx: nn.Parameter | None = None) -> None:
        super().__init__(context, cfg)
        self.prompt_learner = PromptLearner(self.backbone, self.classnames, self.cfg, ctx=ctx)

    def text_features(self) -> torch.Tensor:
        with self.backbone.autocast():
            return self.prompt_learner()

    def for_classnames(self, classnames: list[str]) -> CoOp:
        if self.cfg.class_specific:
            raise MethodConfigError("class-specific CoOp context cannot be applied to new classes; use a unified one")
        return type(self)(self.context.with_classnames(classnames), self.cfg, ctx=self.prompt_learner.ctx)
