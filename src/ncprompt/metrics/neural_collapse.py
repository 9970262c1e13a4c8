"""Neural-collapse (NC1-NC4) diagnostics, streaming in float64, and the pure formulas they share with the regularisers.

Conventions (used everywhere in the project):

* rows are vectors: x is (K, d) (or (..., K, d) for a batch of sets; batched functions average over the batch);
* the "global mean" used to centre class means is the unweighted mean of the class means,
  mu_G = (1/K) sum_k mu_k, so bar-mu_k = mu_k - mu_G. Under class imbalance this is the centre of the ETF the class
  means should form (it equals the sample mean when classes are balanced); text features are centred the same way,
  c_k = t_k - (1/K) sum_j t_j;
* cos(x, y) = <x, y> / (||x|| ||y||) with norms clamped at 1e-12.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "NCAccumulator",
    "centre_rows",
    "equiangularity",
    "equinorm",
    "etf_angle_deviation",
    "pairwise_cosines",
    "self_duality",
]

_EPS = 1e-12


def centre_rows(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """x - (1/K) sum_k x_k over the row dimension (-2). With a boolean ``mask`` (K,), the mean is taken over the masked
    rows only and unmasked rows are set to zero."""
    if mask is None:
        return x - x.mean(dim=-2, keepdim=True)
    w = mask.to(x.dtype).unsqueeze(-1)
    mean = (x * w).sum(dim=-2, keepdim=True) / w.sum().clamp_min(1.0)
    return (x - mean) * w


def pairwise_cosines(x: Tensor) -> Tensor:
    """Cosine matrix G_kj = cos(x_k, x_j), shape (..., K, K)."""
    xn = x / x.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    return xn @ xn.transpose(-1, -2)


def _off_diagonal(g: Tensor) -> Tensor:
    k = g.shape[-1]
    mask = ~torch.eye(k, dtype=torch.bool, device=g.device)
    return g[..., mask]  # (..., K(K-1))


def etf_angle_deviation(x: Tensor, power: float = 1.0) -> Tensor:
    """mean_{k != j} |cos(x_k, x_j) + 1/(K-1)|^power (averaged over leading batch dims).

    power=1 is the NC2 equiangularity-to-ETF metric; power=2 is the pairwise LC loss.
    """
    k = x.shape[-2]
    if k < 2:
        raise ValueError(f"etf_angle_deviation needs K >= 2 rows, got {k}")
    dev = _off_diagonal(pairwise_cosines(x)) + 1.0 / (k - 1)
    if power == 2:
        return dev.square().mean()
    return dev.abs().pow(power).mean()


def equinorm(x: Tensor) -> Tensor:
    """NC2 equinorm: std_k ||x_k|| / mean_k ||x_k|| (population std; averaged over leading batch dims)."""
    norms = x.norm(dim=-1)
    return (norms.std(dim=-1, correction=0) / norms.mean(dim=-1).clamp_min(_EPS)).mean()


def equiangularity(x: Tensor) -> tuple[Tensor, Tensor]:
    """NC2 equiangularity: (std_{k != j} cos(x_k, x_j), mean_{k != j} |cos(x_k, x_j) + 1/(K-1)|).

    Population std over the K(K-1) off-diagonal cosines; both averaged over leading batch dims.
    """
    cos = _off_diagonal(pairwise_cosines(x))
    return cos.std(dim=-1, correction=0).mean(), etf_angle_deviation(x, power=1)


def self_duality(text: Tensor, image_means: Tensor, mask: Tensor | None = None) -> Tensor:
    """NC3 / MI self-duality: || C_T/||C_T||_F - B_I/||B_I||_F ||_F^2, in [0, 4].

    C_T = rows t_k - (1/K) sum_j t_j (centred text features, ``text`` (K, d) or (B, K, d), batch-averaged) and
    B_I = rows mu_k - (1/K) sum_j mu_j (centred image class means, ``image_means`` (K, d)). Zero iff the centred
    configurations agree up to a positive scale. With a boolean ``mask`` (K,), only the masked classes enter (centring
    included). Differentiable in both arguments.
    """
    c = centre_rows(text, mask)
    b = centre_rows(image_means, mask)
    c = c / torch.linalg.matrix_norm(c).clamp_min(_EPS)[..., None, None]
    b = b / torch.linalg.matrix_norm(b).clamp_min(_EPS)[..., None, None]
    return (c - b).square().sum(dim=(-2, -1)).mean()


class NCAccumulator:
    """Streaming NC statistics of image features, float64, without storing the features.

    Accumulates per-class counts n_k, per-class sums S_k = sum_{y_i=k} x_i and the scatter sum_i (x_i - s)(x_i - s)^T
    about a fixed shift s (the first batch's mean, for numerical stability; covariances are shift invariant). Then

        mu_k = S_k / n_k,   mu_G = (1/K) sum_k mu_k,   bar-mu_k = mu_k - mu_G,
        Sigma_W = (1/N) sum_i (x_i - mu_{y_i})(x_i - mu_{y_i})^T
                = (1/N) [ sum_i (x_i - s)(x_i - s)^T - sum_k n_k (mu_k - s)(mu_k - s)^T ],
        Sigma_B = (1/K) sum_k bar-mu_k bar-mu_k^T,
        NC1 = (1/K) tr(Sigma_W Sigma_B^+)   (pseudo-inverse with relative cut-off rcond * sigma_max).

    If ``normalize`` (default) every feature is L2-normalised first (CLIP's logits are cosines), and so are text
    features passed to :meth:`compute`. Every class must have at least one sample: :meth:`compute` and
    :meth:`class_means` raise ValueError naming the empty classes (statistics over a silently smaller K would not be
    comparable between runs).

    NC4 needs the class means first, so it is a second pass: :meth:`update_nc4` counts samples whose nearest class
    mean (Euclidean, over this accumulator's means or ``reference_means``, e.g. the train means on test features)
    differs from the given prediction.

    Statistics of disjoint sample sets combine exactly: :meth:`merge` (two accumulators) and :meth:`reduce_`
    (all-reduce over torch.distributed ranks, each holding a shard of the samples).
    """

    def __init__(self, num_classes: int, dim: int, normalize: bool = True) -> None:
        if num_classes < 2:
            raise ValueError(f"NCAccumulator needs num_classes >= 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.normalize = bool(normalize)
        self.counts = torch.zeros(self.num_classes, dtype=torch.float64)
        self.sums = torch.zeros(self.num_classes, self.dim, dtype=torch.float64)
        self.scatter = torch.zeros(self.dim, self.dim, dtype=torch.float64)
        self.shift: Tensor | None = None
        self.nc4_mismatch = 0
        self.nc4_total = 0

    def _prep(self, features: Tensor) -> Tensor:
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must be (B, {self.dim}), got {tuple(features.shape)}")
        x = features.detach().to("cpu", torch.float64)
        if self.normalize:
            x = x / x.norm(dim=1, keepdim=True).clamp_min(_EPS)
        return x

    def _labels(self, labels: Tensor, n: int, what: str) -> Tensor:
        y = labels.detach().to("cpu", torch.int64).reshape(-1)
        if y.numel() != n:
            raise ValueError(f"{what} has {y.numel()} entries for {n} features")
        if n and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(f"{what} must lie in [0, {self.num_classes}), got range [{int(y.min())}, {int(y.max())}]")
        return y

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor) -> None:
        """Add a batch of features (B, d) with integer labels (B,)."""
        x = self._prep(features)
        y = self._labels(labels, x.shape[0], "labels")
        if x.shape[0] == 0:
            return
        if self.shift is None:
            self.shift = x.mean(dim=0)
        self.counts += torch.bincount(y, minlength=self.num_classes).to(torch.float64)
        self.sums.index_add_(0, y, x)
        xs = x - self.shift
        self.scatter += xs.T @ xs

    @property
    def n_samples(self) -> int:
        return int(self.counts.sum().item())

    def _scatter_about(self, c: Tensor) -> Tensor:
        """sum_i (x_i - c)(x_i - c)^T = M_s + d T^T + T d^T + n d d^T, with d = s - c and T = sum_i (x_i - s)."""
        if self.shift is None:
            return torch.zeros_like(self.scatter)
        n = self.counts.sum()
        d = self.shift - c
        t = self.sums.sum(dim=0) - n * self.shift
        return self.scatter + torch.outer(d, t) + torch.outer(t, d) + n * torch.outer(d, d)

    def _check_compatible(self, other: NCAccumulator) -> None:
        if (other.num_classes, other.dim, other.normalize) != (self.num_classes, self.dim, self.normalize):
            raise ValueError(f"cannot merge NCAccumulator(K={other.num_classes}, d={other.dim}, normalize="
                             f"{other.normalize}) into (K={self.num_classes}, d={self.dim}, "
                             f"normalize={self.normalize})")

    @torch.no_grad()
    def merge(self, other: NCAccumulator) -> NCAccumulator:
        """Add ``other``'s statistics (features of other samples), as if its batches had been passed to
        :meth:`update` here; the scatter is moved to this accumulator's shift. Returns self."""
        self._check_compatible(other)
        if other.shift is not None:
            if self.shift is None:
                self.shift = other.shift.clone()
            self.scatter += other._scatter_about(self.shift)
        self.counts += other.counts
        self.sums += other.sums
        self.nc4_mismatch += other.nc4_mismatch
        self.nc4_total += other.nc4_total
        return self

    @torch.no_grad()
    def reduce_(self, group: object | None = None) -> NCAccumulator:
        """All-reduce over the ranks of ``group`` (default: the whole torch.distributed group): afterwards
        every rank holds the statistics of all ranks' samples, as one process fed everything would.
        Counts, class sums and NC4 tallies are summed; each rank's scatter is first moved to the common shift
        c = (sum of all features) / N, then summed. Returns self; a no-op without a process group."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
            return self
        dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else None

        def summed(t: Tensor) -> Tensor:
            buf = t.to(dev or t.device, copy=True)
            dist.all_reduce(buf, group=group)
            return buf.to(t.device)

        counts, sums = summed(self.counts), summed(self.sums)
        n = counts.sum()
        c = sums.sum(dim=0) / n if n > 0 else torch.zeros(self.dim, dtype=torch.float64)
        scatter = summed(self._scatter_about(c))  # this rank's samples, about the common shift
        self.counts, self.sums = counts, sums
        nc4 = summed(torch.tensor([self.nc4_mismatch, self.nc4_total], dtype=torch.float64))
        self.nc4_mismatch, self.nc4_total = int(nc4[0]), int(nc4[1])
        self.scatter, self.shift = scatter, (c if n > 0 else None)
        return self

    def _check_present(self) -> None:
        missing = torch.nonzero(self.counts == 0).flatten().tolist()
        if missing:
            raise ValueError(f"NCAccumulator: classes without samples: {missing} (every class needs >= 1 sample)")

    def class_means(self) -> Tensor:
        """Per-class means mu_k, (K, d) float64."""
        self._check_present()
        return self.sums / self.counts[:, None]

    @torch.no_grad()
    def update_nc4(self, features: Tensor, predictions: Tensor, reference_means: Tensor | None = None) -> None:
        """Second pass for NC4: count samples where argmin_k ||x_i - mu_k|| != prediction_i.

        ``reference_means`` (K, d) defaults to this accumulator's class means (call after all :meth:`update` calls).
        Features are normalised like in :meth:`update`.
        """
        x = self._prep(features)
        p = self._labels(predictions, x.shape[0], "predictions")
        means = self.class_means() if reference_means is None else reference_means.detach().to("cpu", torch.float64)
        if means.shape != (self.num_classes, self.dim):
            raise ValueError(f"reference_means must be ({self.num_classes}, {self.dim}), got {tuple(means.shape)}")
        nearest = torch.cdist(x, means).argmin(dim=1)
        self.nc4_mismatch += int((nearest != p).sum().item())
        self.nc4_total += int(x.shape[0])

    @torch.no_grad()
    def compute(self, text_features: Tensor | None = None, rcond: float = 1e-6) -> dict[str, float]:
        """NC metrics as floats: nc1, nc2_{equinorm,equiangle_std,equiangle_etf}_img, n_samples; with ``text_features``
        (K, d) also nc2_*_text (on centred text features c_k) and nc3_self_duality; nc4 if :meth:`update_nc4` ran."""
        mu = self.class_means()
        n = self.counts.sum()
        k = self.num_classes
        bar_mu = centre_rows(mu)
        ms = mu - self.shift
        sigma_w = (self.scatter - (ms.T * self.counts) @ ms) / n
        sigma_b = bar_mu.T @ bar_mu / k
        nc1 = torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, rtol=rcond, hermitian=True)) / k
        std_img, etf_img = equiangularity(bar_mu)
        out = {
            "nc1": float(nc1),
            "nc2_equinorm_img": float(equinorm(bar_mu)),
            "nc2_equiangle_std_img": float(std_img),
            "nc2_equiangle_etf_img": float(etf_img),
            "n_samples": float(n),
        }
        if text_features is not None:
            t = text_features.detach().to("cpu", torch.float64)
            if t.shape != (k, self.dim):
                raise ValueError(f"text_features must be ({k}, {self.dim}), got {tuple(t.shape)}")
            if self.normalize:
                t = t / t.norm(dim=1, keepdim=True).clamp_min(_EPS)
            c = centre_rows(t)
            std_t, etf_t = equiangularity(c)
            out["nc2_equinorm_text"] = float(equinorm(c))
            out["nc2_equiangle_std_text"] = float(std_t)
            out["nc2_equiangle_etf_text"] = float(etf_t)
            out["nc3_self_duality"] = float(self_duality(t, mu))
        if self.nc4_total:
            out["nc4"] = self.nc4_mismatch / self.nc4_total
        return out
