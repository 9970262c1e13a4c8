"""NPT regularisers: language-modality collapse (LC) and multi-modality isomorphism (MI).

Inputs are raw text-encoder outputs t_k and image features f_i. Everything is computed in float32 (float64 if the
inputs are float64). With ``cfg.normalize`` (default) the text features and image features are first L2-normalised,
t_k <- t_k/||t_k||, f_i <- f_i/||f_i|| (CLIP's logits are cosines, so only directions matter). Then

    c_k   = t_k - (1/K) sum_j t_j            (centred text features; c_k = t_k if not cfg.centered, LC only)
    LC pairwise:  mean_{k != j} ( cos(c_k, c_j) + 1/(K-1) )^2
    LC anchored:  mean_k ( 1 - cos(c_k, a_k) ),   anchors A from :func:`ncprompt.collapse.etf.aligned_anchors`
    LC cluster:   within-cluster pairwise LC + lambda_conv L_conv + lambda_rot L_rot (:mod:`ncprompt.collapse.cluster`)
    MI self-duality:    || C_T/||C_T||_F - B_I/||B_I||_F ||_F^2,
                        C_T rows c_k (always centred), B_I rows bar-mu_k = mu_k - (1/K) sum_j mu_j
    MI cross-similarity: mean_i mean_{k != y_i} ( cos(f_i, c_k) + 1/(K-1) )^2
    image anchor (optional, MaPLe): mean_k ( 1 - cos(bar-mu_k, a_k) )
    loss = lambda_lc * LC + lambda_mi * (MI + image anchor)

The image class means mu_k are either fixed (``setup(image_class_means=...)``, e.g. from a frozen encoder's feature
cache) or a running EMA over batches: for a class present in the batch with batch mean m_k,
mu_k <- momentum * mu_k + (1 - momentum) * m_k (first sighting: mu_k <- m_k); absent classes keep their value. The
EMA is stored detached, but the value used in the current step keeps the graph through m_k, so trainable image
encoders also receive a (1 - momentum)-scaled gradient. Classes never seen yet are left out of the image terms.
For text features of shape (B, K, d) (CoCoOp, one set per image), LC and MI are computed per set and averaged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ncprompt.collapse.cluster import (
    auto_cluster_count,
    class_convergence,
    cluster_pairwise_lc,
    kmeans,
    rotation_stabilisation,
)
from ncprompt.collapse.etf import aligned_anchors
from ncprompt.config.run import NPTConfig  # the typed config tree (pydantic, light)
from ncprompt.metrics.neural_collapse import centre_rows, etf_angle_deviation, self_duality

__all__ = ["NPTConfig", "NPTRegularizer"]

_EPS = 1e-12


class NPTRegularizer(nn.Module):
    """LC + MI regulariser for K classes in a d-dim joint embedding (formulas in the module docstring).

    Buffers: ``anchors`` (K, d), ``image_means`` (K, d), ``image_seen`` (K,) bool, ``image_fixed`` () bool.
    Call :meth:`setup` once before training; the EMA is updated only in training mode.
    """

    anchors: Tensor
    image_means: Tensor
    image_seen: Tensor
    image_fixed: Tensor
    anchors_ready: Tensor

    def __init__(self, cfg: NPTConfig, num_classes: int, dim: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"NPTRegularizer needs num_classes >= 2, got {num_classes}")
        self.cfg = cfg
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.register_buffer("anchors", torch.zeros(num_classes, dim))
        self.register_buffer("anchors_ready", torch.tensor(False))
        self.register_buffer("image_means", torch.zeros(num_classes, dim))
        self.register_buffer("image_seen", torch.zeros(num_classes, dtype=torch.bool))
        self.register_buffer("image_fixed", torch.tensor(False))
        #: data-parallel training sets this to a differentiable sum over ranks, so the EMA sees the global batch
        self.batch_sum: Callable[[Tensor], Tensor] | None = None
        if cfg.lc_form == "cluster":
            if cfg.clusters > num_classes:
                raise ValueError(f"NPTConfig.clusters ({cfg.clusters}) exceeds the {num_classes} classes")
            self.register_buffer("cluster_assign", torch.zeros(num_classes, dtype=torch.long))
            self.register_buffer("frozen_text", torch.zeros(num_classes, dim))

    def _check(self, x: Tensor, name: str) -> None:
        if x.shape != (self.num_classes, self.dim):
            raise ValueError(f"{name} must be ({self.num_classes}, {self.dim}), got {tuple(x.shape)}")

    @torch.no_grad()
    def setup(self, zero_shot_text: Tensor | None = None, image_class_means: Tensor | None = None) -> None:
        """Fix the anchors (needed for lc_form="anchored" or image_anchor; "procrustes" alignment needs the zero-shot
        text features (K, d)) and, optionally, fixed image class means (K, d) (means of the normalised image features
        when cfg.normalize, e.g. :meth:`ncprompt.metrics.NCAccumulator.class_means`) that replace the EMA."""
        cfg = self.cfg
        if zero_shot_text is not None:
            self._check(zero_shot_text, "zero_shot_text")
        if cfg.needs_anchors:
            if cfg.anchor_align == "procrustes" and zero_shot_text is None:
                raise ValueError("NPTRegularizer.setup: anchor_align='procrustes' needs zero_shot_text (K, d)")
            a = aligned_anchors(zero_shot_text, seed=cfg.etf_seed, align=cfg.anchor_align,
                                num_classes=self.num_classes, dim=self.dim)
            self.anchors.copy_(a)
            self.anchors_ready.fill_(True)
        if cfg.lc_form == "cluster":
            if zero_shot_text is None:
                raise ValueError("NPTRegularizer.setup: lc_form='cluster' needs zero_shot_text (K, d)")
            n_clusters = cfg.clusters or auto_cluster_count(self.num_classes)
            self.cluster_assign.copy_(kmeans(zero_shot_text, n_clusters, seed=cfg.etf_seed))
            self.frozen_text.copy_(zero_shot_text.float() / zero_shot_text.float().norm(dim=-1, keepdim=True))
            self.anchors_ready.fill_(True)
        if image_class_means is not None:
            self._check(image_class_means, "image_class_means")
            self.image_means.copy_(image_class_means.detach())
            self.image_seen.fill_(True)
            self.image_fixed.fill_(True)

    def _current_image_means(self, image_features: Tensor, labels: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Image class means for this step (K, d) and the mask of classes that have a value; updates the EMA."""
        stored = self.image_means.to(dtype, copy=True)  # copies: the buffers are updated in place below
        prev_seen = self.image_seen.clone()
        if bool(self.image_fixed):
            return stored, prev_seen
        k = self.num_classes
        f = image_features.to(dtype)
        if self.cfg.normalize:
            f = f / f.norm(dim=-1, keepdim=True).clamp_min(_EPS)
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros(k, f.shape[-1], dtype=dtype, device=f.device).index_add(0, labels, f)
        if self.batch_sum is not None:
            counts, sums = self.batch_sum(counts), self.batch_sum(sums)
        present = counts > 0
        batch_means = sums / counts.clamp_min(1).to(dtype).unsqueeze(1)
        m = self.cfg.ema_momentum
        blended = torch.where(prev_seen.unsqueeze(1), m * stored + (1.0 - m) * batch_means, batch_means)
        current = torch.where(present.unsqueeze(1), blended, stored)
        seen = prev_seen | present
        if self.training:
            with torch.no_grad():
                self.image_means.copy_(current.detach())
                self.image_seen.copy_(seen)
        return current, seen

    def forward(self, text_features: Tensor, image_features: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Regulariser terms for text features (K, d) or (B, K, d), image features (B, d) and labels (B,).

        Returns {"lc", "mi", "loss"} (+ "img_anchor" if cfg.image_anchor), scalar tensors; all zeros (and no EMA
        update) when cfg.enabled is False.
        """
        cfg = self.cfg
        k = self.num_classes
        if text_features.ndim not in (2, 3) or tuple(text_features.shape[-2:]) != (k, self.dim):
            raise ValueError(f"text_features must be ({k}, {self.dim}) or (B, {k}, {self.dim}), "
                             f"got {tuple(text_features.shape)}")
        dtype = torch.promote_types(text_features.dtype, torch.float32)
        if not cfg.enabled:
            zero = text_features.new_zeros((), dtype=dtype)
            out = {"lc": zero, "mi": zero, "loss": zero}
            if cfg.image_anchor:
                out["img_anchor"] = zero
            return out
        if image_features.ndim != 2 or image_features.shape[-1] != self.dim:
            raise ValueError(f"image_features must be (B, {self.dim}), got {tuple(image_features.shape)}")
        labels = labels.reshape(-1).to(device=image_features.device, dtype=torch.long)
        if labels.numel() != image_features.shape[0]:
            raise ValueError(f"labels has {labels.numel()} entries for {image_features.shape[0]} image features")
        if text_features.ndim == 3 and text_features.shape[0] != image_features.shape[0]:
            raise ValueError("per-image text_features (B, K, d) need the same B as image_features")
        if (cfg.needs_anchors or cfg.lc_form == "cluster") and not bool(self.anchors_ready):
            raise RuntimeError("NPTRegularizer.setup() must be called before forward() with anchored forms")

        t = text_features.to(dtype)
        if cfg.normalize:
            t = t / t.norm(dim=-1, keepdim=True).clamp_min(_EPS)
        c = centre_rows(t)
        c_lc = c if cfg.centered else t
        anchors = self.anchors.to(dtype)

        cluster_terms: dict[str, Tensor] = {}
        if cfg.lc_form == "pairwise":
            lc = etf_angle_deviation(c_lc, power=2)
        elif cfg.lc_form == "cluster":
            lc = cluster_pairwise_lc(t, self.cluster_assign, centered=cfg.centered)
            cluster_terms = {"conv": class_convergence(t, image_features.to(dtype), labels),
                             "rot": rotation_stabilisation(t, self.frozen_text.to(dtype))}
        else:
            lc = (1.0 - nn.functional.cosine_similarity(c_lc, anchors.expand_as(c_lc), dim=-1, eps=_EPS)).mean()

        need_means = cfg.mi_form == "self_duality" or cfg.image_anchor
        means, seen = self._current_image_means(image_features, labels, dtype) if need_means else (None, None)

        if cfg.mi_form == "self_duality":
            mi = self_duality(t, means, mask=seen)
        else:
            f = image_features.to(dtype)
            fn = f / f.norm(dim=-1, keepdim=True).clamp_min(_EPS)
            cn = c / c.norm(dim=-1, keepdim=True).clamp_min(_EPS)
            cos = fn @ cn.T if cn.ndim == 2 else torch.einsum("bd,bkd->bk", fn, cn)  # (B, K)
            other = torch.ones_like(cos, dtype=torch.bool).scatter(1, labels.unsqueeze(1), False)
            mi = ((cos + 1.0 / (k - 1)).square() * other).sum() / other.sum().clamp_min(1)

        loss = cfg.lambda_lc * lc + cfg.lambda_mi * mi
        out = {"lc": lc, "mi": mi}
        if cluster_terms:
            out.update(cluster_terms)
            loss = loss + cfg.lambda_conv * cluster_terms["conv"] + cfg.lambda_rot * cluster_terms["rot"]
        if cfg.image_anchor:
            bar_mu = centre_rows(means, seen)
            cos_a = nn.functional.cosine_similarity(bar_mu, anchors, dim=-1, eps=_EPS)
            w = seen.to(dtype)
            img_anchor = ((1.0 - cos_a) * w).sum() / w.sum().clamp_min(1.0)
            out["img_anchor"] = img_anchor
            loss = loss + cfg.lambda_mi * img_anchor
        out["loss"] = loss
        return out
