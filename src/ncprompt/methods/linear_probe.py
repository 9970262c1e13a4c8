"""Linear probe (CoOp's ``lpclip`` baseline; Radford et al., 2021): logistic regression on frozen image features, no
text, parametrised as scikit-learn's ``LogisticRegression(penalty="l2", C=C)``.

For features x_i (N, E) (raw ``encode_image`` outputs, as lpclip uses them; L2-normalised with ``normalize``) and
labels y_i, K > 2 classes: the classifier (W, b) minimises the multinomial objective

    J(W, b) = sum_i CE(W x_i + b, y_i) + ||W||_F^2 / (2 C)          (b not penalised)

and K = 2 classes: one weight vector w and intercept b (scikit-learn's binary model), with s_i = +1 for class 1 and
-1 for class 0,

    J(w, b) = sum_i log(1 + exp(-s_i (w . x_i + b))) + ||w||^2 / (2 C)

stored as the two rows W = [-w/2, w/2], b = [-b/2, b/2], whose softmax is (1 - sigma, sigma) with
sigma = sigmoid(w . x + b), scikit-learn's ``predict_proba`` (a 2-row multinomial fit would penalise ||W||^2 =
||w||^2 / 2 at its optimum: C twice scikit-learn's). Solved in float64 with full-batch L-BFGS (strong-Wolfe line
search) from zero to a gradient tolerance, on J/N (same minimiser).

C is searched as lpclip does: each of C in {1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6}; the best validation accuracy
(first on ties) gives C*; then ``search_steps`` bisection steps in log10 C starting from [C*/10, 10 C*]: score both
ends, keep the better (the left one on ties), and halve the interval towards it; C is the last kept one.
**Deviation** (named in docs/method.md): lpclip scores C on min(shots, 4) images per class drawn from the dataset's
validation split, trained on all shots; the method is given only the run's few-shot training images, so the
validation accuracy of C is F-fold cross-validated on them (F = ``cv_folds``, 4): per class, in a seeded order,
image j goes to fold j mod F; fold f is predicted by the probe fitted on the other folds, and the accuracy counts
every held-out image once. At 4 shots each fit sees 3 images per class (a single 4-image hold-out would leave 1),
at 16 shots 12. A class with one image is never held out (it stays in every fit); with no class to hold out
(1 shot), C = 1. The probe is then refit on all training images with the chosen C. ``val_shots: N`` (> 0) keeps the
earlier recipe (one seeded held-out part of min(N, n_k - 1) images per class; run folders that record it keep it).
Predictions use the image features only: NPT (a regulariser on text features) does not apply and is refused
(``conflicts`` of its config), and so is base-to-new (no weights for new classes).
"""

from __future__ import annotations

import math
from collections.abc import Callable

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
    """(W (K, E), b (K,)) of scikit-learn's L2 logistic regression at C (module docstring: multinomial for K > 2,
    binary for K = 2, stored as two opposite half rows), in float64 (L-BFGS from zero)."""
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features must be (N, E) with labels (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if not c > 0:
        raise ValueError(f"C must be > 0, got {c}")
    x64 = x.detach().to(torch.float64)
    y = y.to(x64.device, torch.long)
    n, e = x64.shape
    rows = 1 if num_classes == 2 else num_classes
    w = torch.zeros(rows, e, dtype=torch.float64, device=x64.device, requires_grad=True)
    b = torch.zeros(rows, dtype=torch.float64, device=x64.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-15,
                            history_size=20, line_search_fn="strong_wolfe")
    sign = 2.0 * y.to(torch.float64) - 1.0  # binary: +1 for class 1, -1 for class 0

    def closure() -> torch.Tensor:
        opt.zero_grad()
        z = x64 @ w.T + b
        data = F.softplus(-sign * z[:, 0]).sum() if rows == 1 else F.cross_entropy(z, y, reduction="sum")
        loss = data / n + w.square().sum() / (2.0 * c * n)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w, b = w.detach(), b.detach()
    if rows == 1:  # softmax over (-z/2, z/2) = (1 - sigmoid(z), sigmoid(z))
        return torch.cat([-w / 2, w / 2]), torch.cat([-b / 2, b / 2])
    return w, b


def cv_folds(labels: torch.Tensor, folds: int, seed: int) -> torch.Tensor:
    """Fold (N,) of each image: per class, in a seeded order, image j gets fold j mod ``folds``; -1 (never held
    out) for the images of a class with a single image."""
    g = torch.Generator().manual_seed(int(seed) + 104729)
    fold = torch.full((len(labels),), -1, dtype=torch.long)
    for k in labels.unique().tolist():
        idx = (labels == k).nonzero().squeeze(1)
        if len(idx) > 1:
            fold[idx[torch.randperm(len(idx), generator=g)]] = torch.arange(len(idx)) % folds
    return fold


def held_out_folds(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Fold (N,) of the single held-out part (``val_shots``): 0 for min(per_class, n_k - 1) seeded images of each
    class k, -1 (always trained on) for the rest; the same draw as :func:`cv_folds`' order."""
    g = torch.Generator().manual_seed(int(seed) + 104729)
    fold = torch.full((len(labels),), -1, dtype=torch.long)
    for k in labels.unique().tolist():
        idx = (labels == k).nonzero().squeeze(1)
        if len(idx) > 1:
            fold[idx[torch.randperm(len(idx), generator=g)[: min(per_class, len(idx) - 1)]]] = 0
    return fold


def _accuracy(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(((x.to(w.dtype) @ w.T + b).argmax(-1) == y.to(w.device)).double().mean())


def cv_accuracy(x: torch.Tensor, y: torch.Tensor, fold: torch.Tensor, num_classes: int, c: float,
                max_iter: int = 1000, tol: float = 1e-4) -> float:
    """Share of the held-out images (fold >= 0) predicted right, each by the probe fitted at C without its fold."""
    right = 0.0
    for f in fold[fold >= 0].unique().tolist():
        out = fold == f
        w, b = fit_logistic_regression(x[~out], y[~out], num_classes, c, max_iter, tol)
        right += _accuracy(w, b, x[out], y[out]) * int(out.sum())
    return right / max(int((fold >= 0).sum()), 1)


def search_c(score: Callable[[float], float], grid: list[float] | tuple[float, ...] = LPCLIP_C_GRID,
             steps: int = 8) -> tuple[float, list[tuple[float, float]]]:
    """lpclip's search of C on the validation accuracy ``score(C)`` (module docstring); returns (C, [(C, acc), ...])
    in the order scored (each C scored once)."""
    trace: dict[float, float] = {}

    def acc(c: float) -> float:
        if c not in trace:
            trace[c] = score(c)
        return trace[c]

    accs = [acc(c) for c in grid]
    chosen = grid[max(range(len(grid)), key=lambda i: (accs[i], -i))]
    lo, hi = math.log10(chosen) - 1.0, math.log10(chosen) + 1.0
    for _ in range(steps):
        c_lo, c_hi = 10.0**lo, 10.0**hi
        a_lo, a_hi = acc(c_lo), acc(c_hi)
        mid = 0.5 * (lo + hi)
        if a_lo < a_hi:
            chosen, lo = c_hi, mid
        else:
            chosen, hi = c_lo, mid
    return chosen, list(trace.items())


def holdout_score(x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, num_classes: int,
                  max_iter: int = 1000, tol: float = 1e-4) -> Callable[[float], float]:
    """lpclip's score of C: the accuracy on a separate validation set of the probe fitted on (x, y)."""
    return lambda c: _accuracy(*fit_logistic_regression(x, y, num_classes, c, max_iter, tol), x_val, y_val)


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
        """Fits the probe on the centre-view features of ``images`` (C cross-validated on them); nothing is left for
        the SGD trainer, so returns None."""
        feats = self.image_features(images, cache, desc="train")
        labels = torch.as_tensor(np.asarray(images.labels), dtype=torch.long)
        self.fit(feats, labels, seed)
        return None

    def _prep(self, f: torch.Tensor) -> torch.Tensor:
        f = f.float()
        return F.normalize(f, dim=-1) if self.cfg.normalize else f

    def fit(self, features: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> float:
        """Search C by cross-validation on ``features`` (folds seeded by ``seed``; with ``val_shots`` one held-out
        part), refit W, b on all of them with it; returns the chosen C."""
        cfg, x = self.cfg, self._prep(features)
        fold = held_out_folds(labels, cfg.val_shots, seed) if cfg.val_shots else cv_folds(labels, cfg.cv_folds, seed)
        self.search_trace = []
        c = 1.0
        if (fold >= 0).any():
            c, self.search_trace = search_c(
                lambda c: cv_accuracy(x, labels, fold, self.num_classes, c, cfg.max_iter, cfg.tol),
                cfg.c_grid, cfg.search_steps)
        w, b = fit_logistic_regression(x, labels, self.num_classes, c, cfg.max_iter, cfg.tol)
        self.weight.copy_(w.float().to(self.weight.device))
        self.bias.copy_(b.float().to(self.bias.device))
        self.chosen_c = c
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


__all__ = ["LPCLIP_C_GRID", "LinearProbe", "cv_accuracy", "cv_folds", "fit_logistic_regression", "held_out_folds",
           "holdout_score", "search_c"]
