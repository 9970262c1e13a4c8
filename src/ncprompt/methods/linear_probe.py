"""Linear probe (CoOp's ``lpclip`` baseline; Radford et al., 2021): multinomial logistic regression on frozen
image features, no text.

For features x_i (N, E) (raw ``encode_image`` outputs, as lpclip uses them; L2-normalised with ``normalize``) and
labels y_i, the classifier (W, b) minimises

    J(W, b) = sum_i CE(W x_i + b, y_i) + ||W||_F^2 / (2 C)          (b not penalised)

which is scikit-learn's ``LogisticRegression(penalty="l2", C=C)`` objective (multinomial). It is solved in float64
with full-batch L-BFGS (strong-Wolfe line search) to a gradient tolerance, on J/N (same minimiser).

C is chosen on validation features as lpclip does: each of C in {1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6}; the best
validation accuracy (first on ties) gives C*; then ``search_steps`` bisection steps in log10 C starting from
[C*/10, 10 C*]: fit both ends, keep the better (the left one on ties), and halve the interval towards it.
The final classifier is the last kept one. Validation images: ``val_shots`` per class held out (seeded) from the
training images (lpclip draws min(shots, 4) per class from the dataset's validation split; the run's few-shot
training set is what the method is given here), and after the search the probe is refit on all training images
with the chosen C. Classes with a single image are not held out; if no class can be, C = 1.
Predictions use the image features only: NPT (a regulariser on text features) does not apply and is refused
(``conflicts`` of its config), and so is base-to-new (no weights for new classes).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ncprompt.config.methods import LinearProbeConfig
from ncprompt.data.base import LabeledImages
from ncprompt.data.cache import FeatureCache, FeatureSource
from ncprompt.methods.base import MethodConfigError, MethodContext, MethodOutput, PromptMethod, register_method

#: lpclip's initial grid of inverse L2 strengths
LPCLIP_C_GRID: tuple[float, ...] = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)


def fit_logistic_regression(x: torch.Tensor, y: torch.Tensor, num_classes: int, c: float, max_iter: int = 1000,
                            tol: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (K, E), b (K,)) minimising sum_i CE(W x_i + b, y_i) + ||W||^2 / (2C), in float64 (L-BFGS from zero)."""
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features must be (N, E) with labels (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if not c > 0:
        raise ValueError(f"C must be > 0, got {c}")
    x64 = x.detach().to(torch.float64)
    y = y.to(x64.device, torch.long)
    n, e = x64.shape
    w = torch.zeros(num_classes, e, dtype=torch.float64, device=x64.device, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, device=x64.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-15,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x64 @ w.T + b, y, reduction="sum") / n + w.square().sum() / (2.0 * c * n)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def held_out_split(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Boolean mask (N,) of min(per_class, n_k - 1) seeded images per class k (none for single-image classes)."""
    g = torch.Generator().manual_seed(int(seed) + 104729)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for k in labels.unique().tolist():
        idx = (labels == k).nonzero().squeeze(1)
        take = min(per_class, len(idx) - 1)
        if take > 0:
            mask[idx[torch.randperm(len(idx), generator=g)[:take]]] = True
    return mask


def _accuracy(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(((x.to(w.dtype) @ w.T + b).argmax(-1) == y.to(w.device)).double().mean())


def search_c(x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, num_classes: int,
             grid: list[float] | tuple[float, ...] = LPCLIP_C_GRID, steps: int = 8, max_iter: int = 1000,
             tol: float = 1e-4) -> tuple[float, torch.Tensor, torch.Tensor, list[tuple[float, float]]]:
    """lpclip's search of C on validation accuracy (module docstring); returns (C, W, b, [(C, val acc), ...])."""
    fits = {}
    trace: list[tuple[float, float]] = []

    def fit(c: float) -> float:
        if c not in fits:
            fits[c] = fit_logistic_regression(x, y, num_classes, c, max_iter, tol)
            trace.append((c, _accuracy(*fits[c], x_val, y_val)))
        return next(a for cc, a in trace if cc == c)

    accs = [fit(c) for c in grid]
    best = grid[max(range(len(grid)), key=lambda i: (accs[i], -i))]
    chosen = best
    lo, hi = math.log10(best) - 1.0, math.log10(best) + 1.0
    for _ in range(steps):
        c_lo, c_hi = 10.0**lo, 10.0**hi
        a_lo, a_hi = fit(c_lo), fit(c_hi)
        mid = 0.5 * (lo + hi)
        if a_lo < a_hi:
            chosen, lo = c_hi, mid
        else:
            chosen, hi = c_lo, mid
    w, b = fits[chosen]
    return chosen, w, b, trace


@register_method
class LinearProbe(PromptMethod):
    """Logits W f + b from the image features alone. ``text_features`` returns the rows of W (the classifier in the
    feature space) so NC diagnostics can still be computed; it cannot be applied to other classes."""

    config_class = LinearProbeConfig
    image_input = "cached"
    trainable = True  # fitted in closed form by :meth:`training_source` (no SGD steps)

    def __init__(self, context: MethodContext, cfg: LinearProbeConfig | None = None) -> None:
        super().__init__(context, cfg)
        k, e = self.num_classes, self.backbone.embed_dim
        self.register_buffer("weight", torch.zeros(k, e, device=self.backbone.device))
        self.register_buffer("bias", torch.zeros(k, device=self.backbone.device))
        self.chosen_c: float | None = None
        self.search_trace: list[tuple[float, float]] = []

    def training_source(self, images: LabeledImages, views: int, seed: int,
                        cache: FeatureCache | None = None) -> FeatureSource | None:
        """Fits the probe on the centre-view features of ``images`` (C chosen on a held-out part); nothing is
        left for the SGD trainer, so returns None."""
        feats = self.image_features(images, cache, desc="train")
        labels = torch.as_tensor(np.asarray(images.labels), dtype=torch.long)
        val = held_out_split(labels, self.cfg.val_shots, seed)
        if val.any():
            c = self.fit(feats[~val], labels[~val], feats[val], labels[val])
        else:
            c = 1.0
        w, b = fit_logistic_regression(self._prep(feats), labels, self.num_classes, c, self.cfg.max_iter,
                                       self.cfg.tol)
        self._store(w, b, c)
        return None

    def _store(self, w: torch.Tensor, b: torch.Tensor, c: float) -> None:
        self.weight.copy_(w.float().to(self.weight.device))
        self.bias.copy_(b.float().to(self.bias.device))
        self.chosen_c = c

    def _prep(self, f: torch.Tensor) -> torch.Tensor:
        f = f.float()
        return F.normalize(f, dim=-1) if self.cfg.normalize else f

    def fit(self, features: torch.Tensor, labels: torch.Tensor, val_features: torch.Tensor,
            val_labels: torch.Tensor) -> float:
        """Fit W, b with C searched on the validation features; returns the chosen C."""
        cfg = self.cfg
        c, w, b, trace = search_c(self._prep(features), labels, self._prep(val_features), val_labels,
                                  self.num_classes, cfg.c_grid, cfg.search_steps, cfg.max_iter, cfg.tol)
        self._store(w, b, c)
        self.search_trace = trace
        return c

    def text_features(self) -> torch.Tensor:
        return self.weight

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor | None = None) -> torch.Tensor:
        return self._prep(image_features) @ self.weight.T + self.bias

    def forward(self, image_features: torch.Tensor) -> MethodOutput:
        return MethodOutput(self.logits(image_features), self.weight)

    @torch.no_grad()
    def fixed_head(self) -> dict[str, torch.Tensor] | None:
        """W and b with logit scale 1 (on normalised features; None when ``normalize`` is off: raw features)."""
        if not self.cfg.normalize:
            return None
        return {"weight": self.weight.detach().float().cpu().contiguous(),
                "bias": self.bias.detach().float().cpu().contiguous(), "logit_scale": torch.tensor(1.0)}

    def for_classnames(self, classnames: list[str]) -> LinearProbe:
        if list(classnames) == self.classnames:
            return self
        raise MethodConfigError("a linear probe has one weight row per training class and cannot score new classes; "
                                "use --protocol all (or a prompt method for base-to-new)")

    def prompt_state(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight.detach().cpu().contiguous(), "bias": self.bias.detach().cpu().contiguous()}

    def load_prompt_state(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != {"weight", "bias"} or state["weight"].shape != self.weight.shape:
            raise MethodConfigError(f"prompt file does not fit linear_probe over {self.num_classes} classes")
        with torch.no_grad():
            self.weight.copy_(state["weight"])
            self.bias.copy_(state["bias"])


__all__ = ["LPCLIP_C_GRID", "LinearProbe", "fit_logistic_regression", "held_out_split", "search_c"]
