"""ProGrad (Zhu et al., ICCV 2023, "Prompt-aligned gradient"): CoOp whose update never works against the zero-shot
model's "general knowledge".

Two losses on the same logits z_i = s cos(f_i, t) (teacher: zero-shot logits z^0_i = s cos(f_i, t^0), t^0 the
dataset template's features):

    L_ce = mean_i CE(z_i, y_i),    L_kl = T^2 mean_i sum_k -p^0_ik log softmax(z_i / T)_k,  p^0 = softmax(z^0 / T)

(L_kl is the published soft cross-entropy: the KL up to the teacher's entropy, the same gradient). Per learned
tensor p, with g = dL_ce/dp and g_kl = dL_kl/dp, u = g_kl / ||g_kl||:

    g <- g - lambda (g . u) u     if g . u < 0     (else g unchanged)

and the optimiser steps on g (+ the gradients of any other loss terms, e.g. NPT, added unprojected). With no
conflict (g . u >= 0) the step is CoOp's. Published defaults: lambda = 1, T = 1, SGD lr 0.002, batch 32, and the
teacher template and context initialisation from ProGrad's own template table (``templates: prograd``:
:data:`ncprompt.data.templates.PROGRAD_TEMPLATES` for the datasets it lists, else the dataset's template).
Initialisation as its code: with w_1 .. w_m the m space-separated words before "{}" (e.g. "a type of pet, a photo of
a", m = 8), the prompt text is "X .. X w_1 .. w_m name." with n - m placeholders; the n context vectors are
[0, .., 0, e_1, .., e_m], e_1 .. e_m the embeddings of the first m BPE tokens of the words, and the words' further
tokens (here the last "a", after the comma's own token) stay frozen text.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ncprompt.config.methods import CoOpConfig, ProGradConfig
from ncprompt.data.templates import PROGRAD_TEMPLATES
from ncprompt.methods.base import MethodConfigError, MethodContext, MethodOutput, register_method
from ncprompt.methods.coop import CoOp
from ncprompt.methods.templates import resolve_templates
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
            zero_shot_classifier(self.backbone, self.classnames, [self.template]).float(), dim=-1),
            persistent=False)
        words = self._init_words()
        n_zero = self.prompt_learner.n_ctx - len(words.split(" ")) if words else 0
        if ctx is None and n_zero > 0:
            with torch.no_grad():
                self.prompt_learner.ctx[:n_zero] = 0.0  # ProGrad's zero vectors before the template's words

    @property
    def template(self) -> str:
        """The teacher's template: ProGrad's for the dataset (``templates: prograd``), the dataset's own, or given."""
        spec = self.cfg.templates
        if spec == "prograd":
            return PROGRAD_TEMPLATES.get(self.context.dataset, self.templates[0])
        return resolve_templates(spec, self.templates)[0]

    def _init_words(self) -> str:
        """The template's words before "{}" when the context starts from them (template_init), else ""."""
        cfg = self.cfg
        if not cfg.template_init or cfg.ctx_init or cfg.class_specific:
            return ""
        return self.template.split("{}")[0].strip()

    def learner_config(self) -> CoOpConfig:
        """CoOp's options with ctx_init "X .. X w_1 .. w_m" (n - m placeholders) whose first n tokens are learned."""
        words = self._init_words()
        if not words:
            return self.cfg  # nothing before the class name: the random initialisation
        m, n = len(words.split(" ")), self.cfg.n_ctx
        if m > n:
            raise MethodConfigError(f"prograd: the template {self.template!r} starts with {m} words but n_ctx is {n}; "
                                    f"set n_ctx >= {m} (published: 16), or template_init false")
        return self.cfg.model_copy(update={"ctx_init": " ".join(["X"] * (n - m) + [words]), "ctx_init_length": "n_ctx"})

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
