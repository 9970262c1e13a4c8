"""PromptSRC (Khattak et al., ICCV 2023): IVLP prompts regulated by the frozen model.

With hat-t_k the normalised prompted text features, hat-f_i the normalised prompted image features, hat-f^0_i the
frozen model's (same view), z_k = normalise( mean_templates encode_text(template(name_k)) ) (the mean of the raw
features over several templates: textual diversity), s the logit scale:

    L = CE + w_t mean_{k,e} |hat-t_ke - z_ke| + w_i mean_{i,e} |hat-f_ie - hat-f^0_ie|
           + w_kl (1/(B K)) sum_i KL( softmax(s hat-f^0_i z^T) || softmax(s hat-f_i hat-t^T) )

Gaussian prompt aggregation (GPA): after epoch e = 1..E the prompts theta_e enter a running sum with weight
g_e = N(e; mu, sigma) / sum_{e'} N(e'; mu, sigma); after the last epoch the prompts are set to sum_e g_e theta_e.
Published defaults (base-to-new, ViT-B/16): IVLP's (4 + 4 tokens, depth 9), w_t = 25, w_i = 10, w_kl = 1,
GPA mu = 15, sigma = 1, 20 epochs, lr 0.0025, batch 4; templates: PromptSRC's 60 of CLIP's 80 ImageNet templates
(``templates: promptsrc``; class names with underscores as spaces, as in its code).
With w_t = w_i = w_kl = 0 and GPA off it is IVLP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ncprompt.config.methods import PromptSRCConfig
from ncprompt.methods.base import MethodConfigError, MethodContext, MethodOutput, register_method
from ncprompt.methods.ivlp import IVLP
from ncprompt.methods.templates import resolve_templates
from ncprompt.methods.zeroshot import template_features


def gpa_weights(epochs: int, mean: float, std: float) -> torch.Tensor:
    """g_e = N(e; mean, std) / sum_{e'=1..E} N(e'; mean, std) for e = 1..E (float64)."""
    e = torch.arange(1, epochs + 1, dtype=torch.float64)
    logp = -0.5 * ((e - mean) / std) ** 2
    w = torch.exp(logp - logp.max())  # the Gaussian's constant cancels in the ratio
    return w / w.sum()


@torch.no_grad()
def mean_template_features(backbone, classnames: list[str], templates: list[str], batch: int = 256) -> torch.Tensor:
    """normalise( mean_templates encode_text(template(name_k)) ), the raw features averaged (PromptSRC's z); class
    names and the overflow check as every prompt path (:func:`template_features`)."""
    return F.normalize(template_features(backbone, classnames, templates, batch).float().mean(dim=1), dim=-1)


@register_method
class PromptSRC(IVLP):
    config_class = PromptSRCConfig

    def __init__(self, context: MethodContext, cfg: PromptSRCConfig | None = None, shared=None) -> None:
        super().__init__(context, cfg, shared=shared)
        templates = resolve_templates(self.cfg.templates, self.templates)
        self.register_buffer("frozen_text", mean_template_features(self.backbone, self.classnames, templates),
                             persistent=False)
        self._gpa_sum: dict[str, torch.Tensor] | None = None

    def forward(self, inputs: torch.Tensor) -> MethodOutput:
        out = super().forward(inputs)
        if not self.training:
            return out
        self._steps_since_epoch = getattr(self, "_steps_since_epoch", 0) + 1
        cfg = self.cfg
        cached = self.image_input == "cached"
        f_img = inputs if cached else out.image_features
        with torch.no_grad():
            f0 = F.normalize((inputs if cached else self.backbone.encode_images(inputs)).float(), dim=-1)
            zs_logits = self.logit_scale * f0 @ self.frozen_text.T
        t_hat = F.normalize(out.text_features, dim=-1)
        f_hat = F.normalize(f_img.float(), dim=-1)
        kl = F.kl_div(F.log_softmax(out.logits, dim=1), F.log_softmax(zs_logits, dim=1), reduction="sum",
                      log_target=True) / out.logits.numel()
        out.extra_losses = {
            "scl_text": cfg.text_loss_weight * (t_hat - self.frozen_text).abs().mean(),
            "scl_image": cfg.image_loss_weight * (f_hat - f0).abs().mean(),
            "scl_logits": cfg.logit_loss_weight * kl,
        }
        return out

    # --- Gaussian prompt aggregation --------------------------------------------------------------------------
    def end_epoch(self, epoch: int, epochs: int) -> None:
        """Add the prompts after 0-based ``epoch`` to the GPA sum; after the last one, load the aggregate."""
        self._steps_since_epoch = 0
        if not self.cfg.gpa:
            return
        w = float(gpa_weights(epochs, self.cfg.gpa_mean, self.cfg.gpa_std)[epoch])
        params = {k: p for k, p in self.named_parameters() if p.requires_grad}
        with torch.no_grad():
            if self._gpa_sum is None or epoch == 0:
                self._gpa_sum = {k: torch.zeros_like(p) for k, p in params.items()}
            for k, p in params.items():
                self._gpa_sum[k].add_(p.detach(), alpha=w)
            if epoch + 1 == epochs:
                for k, p in params.items():
                    p.copy_(self._gpa_sum[k])

    def predict(self, features: torch.Tensor, batch: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.gpa and getattr(self, "_steps_since_epoch", 0):  # never silently skip the aggregation
            raise MethodConfigError("promptsrc: trained steps were not closed by method.end_epoch, so Gaussian "
                                    "prompt aggregation was not applied; the engine must call end_epoch after each "
                                    "epoch (or set gpa: false)")
        return super().predict(features, batch)

    def prompt_state(self) -> dict[str, torch.Tensor]:
        """The prompts and, during training, the GPA running sum (``gpa.<name>``) so a resumed run continues it."""
        state = super().prompt_state()
        if self._gpa_sum is not None:
            state.update({f"gpa.{k}": v.detach().cpu().contiguous() for k, v in self._gpa_sum.items()})
        return state

    def load_prompt_state(self, state: dict[str, torch.Tensor]) -> None:
        gpa = {k[4:]: v for k, v in state.items() if k.startswith("gpa.")}
        super().load_prompt_state({k: v for k, v in state.items() if not k.startswith("gpa.")})
        if gpa:
            own = dict(self.named_parameters())
            self._gpa_sum = {k: v.to(own[k].device, own[k].dtype).clone() for k, v in gpa.items() if k in own}


__all__ = ["PromptSRC", "PromptSRCConfig", "gpa_weights", "mean_template_features"]
