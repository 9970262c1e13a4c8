"""ProGrad (Zhu et al., ICCV 2023, "Prompt-aligned gradient"): CoOp whose update never works against the zero-shot
model's "general knowledge".

Two losses on the same logits z_i = s cos(f_i, t) (teacher: zero-shot logits z^0_i = s cos(f_i, t^0), t^0 the
dataset template's features):

    L_ce = mean_i CE(z_i, y_i),    L_kl = T^2 mean_i sum_k -p^0_ik log softmax(z_i / T)_k,  p^0 = softmax(z^0 / T)

(L_kl is the published soft cross-entropy: the KL up to the teacher's entropy, the same gradient). Per learned
tensor p, with g = dL_ce/dp and g_kl = dL_kl/dp, u = g_kl / ||g_kl||:

    g <- g - lambda (g . u) u     if g . u < 0     (else g unchanged)

and the optimiser steps on g (+ the gradients of any other loss terms, e.g. NPT, added unprojected). With no
conflict (g . u >= 0) the step is CoOp's. Published defaults: lambda = 1, T = 1, 16 context tokens whose last
ones start from the template's words (zero-padded in front), SGD lr 0.002, batch 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ncprompt.config.methods import ProGradConfig
from ncprompt.methods.base import MethodConfigError, MethodContext, MethodOutput, register_method
from ncprompt.methods.coop import CoOp
from ncprompt.methods.zeroshot import zero_shot_classifier

_EPS = 1e-12


def project_conflicting(g: torch.Tensor, g_ref: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """g - lam (g . u) u with u = g_ref / ||g_ref|| when g . u < 0; g otherwise (flattened dot products)."""
    u = g_ref / g_ref.norm().clamp_min(_EPS)
    dot = torch.dot(g.flatten(), u.flatten())
    return g - lam * dot * u if dot < 0 else g


@register_method
class ProGrad(CoOp):
    """ProGrad; options in :class:`ncprompt.config.methods.ProGradConfig`."""

    config_class = ProGradConfig

    def __init__(self, context: MethodContext, cfg: ProGradConfig | None = None, ctx=None) -> None:
        super().__init__(context, cfg, ctx=ctx)
        self.register_buffer("zs_text", F.normalize(
            zero_shot_classifier(self.backbone, self.classnames, self.templates[:1]).float(), dim=-1),
            persistent=False)
        if ctx is None and self.cfg.template_init and not self.cfg.ctx_init and not self.cfg.class_specific:
            self._init_from_template(self.templates[0])

    @torch.no_grad()
    def _init_from_template(self, template: str) -> None:
        """ctx = [0, .., 0, e(w_1), .., e(w_m)]: the words before "{}" in the last m positions (m <= n_ctx)."""
        words = template.split("{}")[0].strip()
        if not words:
            return  # nothing before the class name: keep the random initialisation
        pl = self.prompt_learner
        tokens = self.backbone.tokenizer([words]).to(pl.ctx.device)
        m = int(pl.encoder.pool_index(tokens)[0]) - 1
        emb = pl.encoder.token_embeddings(tokens)[0, 1 : 1 + m].to(pl.ctx.dtype)
        m = min(m, pl.n_ctx)
        pl.ctx.zero_()
        pl.ctx[pl.n_ctx - m :] = emb[len(emb) - m :]

    def forward(self, image_features: torch.Tensor) -> MethodOutput:
        out = super().forward(image_features)
        if self.training:
            if getattr(self, "_awaiting_backward", False):  # never silently train without the projection
                raise MethodConfigError("prograd: the previous training step was not back-propagated through "
                                        "method.backward_step, so no projection was applied; the engine must call "
                                        "backward_step (see methods/base.py)")
            self._awaiting_backward = True
            temp = self.cfg.temperature
            with torch.no_grad():
                zs = self.logit_scale * F.normalize(image_features.float(), dim=-1) @ self.zs_text.T
                p0 = F.softmax(zs / temp, dim=-1)
            kl = -(p0 * F.log_softmax(out.logits / temp, dim=-1)).sum(dim=-1).mean() * temp * temp
            out.extra_losses = {"kl": kl}
        return out

    def backward_step(self, parts: dict[str, torch.Tensor], loss: torch.Tensor) -> None:
        """Back-propagates every summed part but "ce" normally, then adds the projected CE gradient."""
        self._awaiting_backward = False
        params = [p for p in self.parameters() if p.requires_grad]
        g_kl = torch.autograd.grad(parts["kl"], params, retain_graph=True, allow_unused=True)
        g_ce = torch.autograd.grad(parts["ce"], params, retain_graph=True, allow_unused=True)
        rest = [v for k, v in parts.items() if k not in ("ce", "kl") and (k == "npt" or not k.startswith("npt_"))]
        rest = [v for v in rest if v.requires_grad]
        if rest:
            sum(rest).backward()
        for p, gc, gk in zip(params, g_ce, g_kl):
            if gc is None:
                continue
            g = project_conflicting(gc, gk, self.cfg.prograd_lambda) if gk is not None else gc
            p.grad = g if p.grad is None else p.grad + g
