"""CoCoOp (Zhou et al., 2022): CoOp's context shifted per image by a meta-net.

    pi_i = W_2 ReLU(W_1 f_i/||f_i|| + b_1) + b_2       (Linear(d_img, d_img/16)-ReLU-Linear(., d_txt))
    prompt_{i,k} = [SOS] (v_1 + pi_i) .. (v_M + pi_i) name_k . [EOS]

so text features are per image, (B, K, E), and logits_{ik} = s cos(f_i, t_{ik}). The image
encoder stays frozen, so cached features feed the meta-net. The NPT regularisers average LC over
the B per-image class sets; the diagnostics use the unshifted context (pi = 0) as the classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ncprompt.config.methods import CoCoOpConfig
from ncprompt.methods.base import MethodOutput, PromptMethod, register_method, seeded_linear_init_
from ncprompt.methods.coop import PromptLearner


@register_method
class CoCoOp(PromptMethod):
    """CoCoOp; options in :class:`ncprompt.config.methods.CoCoOpConfig`. Predicts per image (forward)."""

    config_class = CoCoOpConfig

    def __init__(self, context, cfg=None, ctx: nn.Parameter | None = None, meta_net: nn.Module | None = None) -> None:
        super().__init__(context, cfg)
        backbone = self.backbone
        self.prompt_learner = PromptLearner(backbone, self.classnames, self.cfg, ctx=ctx,
                                            shared_prefix=self.context.shared_prefix)
        d_img, d_txt = backbone.embed_dim, backbone.text_width
        hidden = max(1, d_img // self.cfg.meta_reduction)
        if meta_net is None:
            g = torch.Generator().manual_seed(self.cfg.init_seed + 1)
            meta_net = nn.Sequential(nn.Linear(d_img, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, d_txt))
            seeded_linear_init_(meta_net, g)
            meta_net = meta_net.to(backbone.device)
        self.meta_net = meta_net

    def text_features(self) -> torch.Tensor:
        """The unshifted classifier (pi = 0), used for diagnostics."""
        with self.backbone.autocast():
            return self.prompt_learner()

    def conditional_text_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """(B, K, E) text features for each image's shifted context."""
        pl = self.prompt_learner
        bias = self.meta_net(F.normalize(image_features.float(), dim=-1))  # (B, d_txt)
        b, k = bias.shape[0], pl.token_prefix.shape[0]
        ctx = pl.ctx.unsqueeze(0) + bias.unsqueeze(1)  # (B, M, d_txt)
        # the same prompt layout as text_features(); each image's prefix encoded once where it is shared
        with self.backbone.autocast():
            t = pl.encode(ctx).float()
        return t.view(b, k, -1)

    def forward(self, image_features: torch.Tensor) -> MethodOutput:
        if self.training:
            t = self.conditional_text_features(image_features)
            return MethodOutput(self.logits(image_features, t), t)
        logits, texts = [], []
        for i in range(0, len(image_features), self.cfg.eval_chunk):
            f = image_features[i : i + self.cfg.eval_chunk]
            t = self.conditional_text_features(f)
            logits.append(self.logits(f, t))
            texts.append(t)
        return MethodOutput(torch.cat(logits), torch.cat(texts))

    @torch.no_grad()
    def predict(self, features: torch.Tensor, batch: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image logits (forward in chunks of ``eval_chunk``); the unshifted classifier for diagnostics."""
        self.eval()
        t = self.text_features()
        out = [self(features[i : i + batch].to(t.device)).logits.cpu() for i in range(0, len(features), batch)]
        return torch.cat(out) if out else torch.zeros(0, self.num_classes), t

    def fixed_head(self) -> None:
        """None: each image shifts the context through the meta-net, so no fixed classifier exists."""
        return None

    def for_classnames(self, classnames: list[str]) -> CoCoOp:
        return CoCoOp(self.context.with_classnames(classnames), self.cfg, ctx=self.prompt_learner.ctx,
                      meta_net=self.meta_net)
