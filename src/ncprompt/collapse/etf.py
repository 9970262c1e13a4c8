"""Simplex equiangular tight frames (ETF) and their alignment to CLIP's zero-shot text features.

A simplex ETF of K unit vectors in R^d is

    M = sqrt(K/(K-1)) * U * (I_K - 1 1^T / K),    U in R^{d x K},  U^T U = I_K,

so that ||m_k|| = 1, <m_k, m_j> = -1/(K-1) (k != j) and sum_k m_k = 0. It exists iff K <= d + 1.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "ETFApproximationWarning",
    "aligned_anchors",
    "approximate_equiangular_frame",
    "procrustes_rotation",
    "simplex_etf",
]


class ETFApproximationWarning(UserWarning):
    """Issued when K > d + 1, where no exact simplex ETF exists and an approximation is returned."""


def _seeded_gaussian(rows: int, cols: int, seed: int) -> Tensor:
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(rows, cols, generator=gen, dtype=torch.float64)


def _orthonormal_columns(x: Tensor) -> Tensor:
    """Q factor of ``x`` with a deterministic sign convention (diag(R) >= 0)."""
    q, r = torch.linalg.qr(x, mode="reduced")
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0
    return q * signs


def approximate_equiangular_frame(num_classes: int, dim: int, seed: int = 0, steps: int = 200) -> Tensor:
    """Near-equiangular unit frame for K > d + 1 (where no simplex ETF exists), shape (d, K), float64.

    Start from a seeded Gaussian d x K matrix with centred (sum-zero) unit columns, then run ``steps`` deterministic
    float64 Adam steps (lr 0.03/sqrt(d)) on the soft maximum of the off-diagonal cosines,

        L(X) = (1/beta) log sum_{k != j} exp(beta * cos(x_k, x_j)),

    with beta annealed geometrically from 10 to 200, re-normalising the columns after each step. This pushes the largest
    pairwise cosine far below a random frame's (about the Welch level sqrt((K-d)/(d(K-1))); for K <= 2d, where an
    orthoplex reaches 0, below it). The columns are unit-norm, but not exactly equiangular: the exact target -1/(K-1)
    cannot be met. Cost: ``steps`` K x K x d Gram products (tens of seconds on CPU for K=1000, d=512), paid once.
    """
    x = _seeded_gaussian(dim, num_classes, seed)
    x = x - x.mean(dim=1, keepdim=True)
    x = x / x.norm(dim=0, keepdim=True)
    x.requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.03 / math.sqrt(dim))
    off = ~torch.eye(num_classes, dtype=torch.bool)
    with torch.enable_grad():
        for step in range(steps):
            beta = 10.0 * (20.0 ** (step / max(steps - 1, 1)))
            xn = x / x.norm(dim=0, keepdim=True)
            cos = (xn.T @ xn)[off]
            loss = torch.logsumexp(beta * cos, dim=0) / beta
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                x /= x.norm(dim=0, keepdim=True)
    return x.detach()


def simplex_etf(num_classes: int, dim: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    """Seeded simplex ETF, shape (dim, K): unit columns with pairwise cosines -1/(K-1). Deterministic on CPU.

    * K <= d:     M = sqrt(K/(K-1)) U (I - 1 1^T / K), U the Q factor of a seeded Gaussian d x K matrix.
    * K == d + 1: U only has d = K - 1 orthonormal columns, so the centred frame is built in a (K-1)-dim subspace:
                  M = sqrt(K/(K-1)) U V^T with U (d x (K-1)) orthonormal and V (K x (K-1)) an orthonormal basis of
                  the complement of the ones vector (V V^T = I - 1 1^T / K, hence M^T M is the same Gram matrix).
    * K > d + 1:  no exact ETF exists; returns :func:`approximate_equiangular_frame` and warns with
                  :class:`ETFApproximationWarning`.

    Raises ValueError for K < 2 or dim < 1.
    """
    if num_classes < 2:
        raise ValueError(f"simplex_etf needs num_classes >= 2 (a simplex ETF of {num_classes} vector(s) is undefined)")
    if dim < 1:
        raise ValueError(f"simplex_etf needs dim >= 1, got {dim}")
    k = num_classes
    if k > dim + 1:
        warnings.warn(
            f"no exact simplex ETF of {k} vectors exists in {dim} dims (needs K <= d + 1); using a seeded "
            "near-equiangular approximation (soft-max of pairwise cosines minimised), whose cosines are not all "
            f"-1/(K-1) = {-1.0 / (k - 1):.4g}",
            ETFApproximationWarning,
            stacklevel=2,
        )
        return approximate_equiangular_frame(k, dim, seed).to(dtype)
    scale = math.sqrt(k / (k - 1))
    if k <= dim:
        u = _orthonormal_columns(_seeded_gaussian(dim, k, seed))
        centring = torch.eye(k, dtype=torch.float64) - 1.0 / k
        m = scale * u @ centring
    else:  # k == dim + 1
        u = _orthonormal_columns(_seeded_gaussian(dim, k - 1, seed))
        centring = torch.eye(k, dtype=torch.float64) - 1.0 / k
        v = _orthonormal_columns(centring[:, : k - 1])  # spans the complement of the ones vector
        m = scale * u @ v.T
    m = m / m.norm(dim=0, keepdim=True)  # exact already; removes rounding drift
    return m.to(dtype)


def procrustes_rotation(source: Tensor, target: Tensor) -> Tensor:
    """Orthogonal R (d x d) minimising ||R source - target||_F for source, target of shape (d, K).

    With target source^T = U S V^T (SVD), R = U V^T. Computed in float64; returned in ``source``'s floating dtype
    (float32 for half precision inputs) on ``source``'s device.
    """
    if source.ndim != 2 or source.shape != target.shape:
        raise ValueError(f"procrustes_rotation needs two (dim, K) matrices of equal shape, got {tuple(source.shape)} "
                         f"and {tuple(target.shape)}")
    s = source.detach().to("cpu", torch.float64)
    t = target.detach().to("cpu", torch.float64)
    u, _, vh = torch.linalg.svd(t @ s.T)
    r = u @ vh
    out_dtype = source.dtype if source.dtype in (torch.float32, torch.float64) else torch.float32
    return r.to(device=source.device, dtype=out_dtype)


def aligned_anchors(
    zero_shot_text: Tensor | None,
    seed: int = 0,
    align: Literal["procrustes", "identity"] = "procrustes",
    num_classes: int | None = None,
    dim: int | None = None,
) -> Tensor:
    """Class anchors A (K, d): rows a_k of the simplex ETF M = simplex_etf(K, d, seed), optionally rotated.

    * ``"procrustes"``: A^T = R M with R = procrustes_rotation(M, Z^T), where Z has rows
      z_k = hat t_k - (1/K) sum_j hat t_j, the centred L2-normalised zero-shot text features (K, d). The ETF keeps its
      angles but takes CLIP's own layout of the classes, fixing the otherwise arbitrary rotation.
    * ``"identity"``: A^T = M (a random fixed ETF); ``zero_shot_text`` may then be None if ``num_classes`` and
      ``dim`` are given.

    Rows are unit-norm. Returned as float32 (float64 if ``zero_shot_text`` is float64) on its device (CPU if None).
    """
    if align not in ("procrustes", "identity"):
        raise ValueError(f"align must be one of 'procrustes', 'identity'; got {align!r}")
    if zero_shot_text is not None:
        if zero_shot_text.ndim != 2:
            raise ValueError(f"zero_shot_text must be (K, d), got shape {tuple(zero_shot_text.shape)}")
        k, d = zero_shot_text.shape
        if (num_classes is not None and num_classes != k) or (dim is not None and dim != d):
            raise ValueError(f"zero_shot_text has shape {(k, d)}, expected ({num_classes}, {dim})")
        device = zero_shot_text.device
        out_dtype = torch.float64 if zero_shot_text.dtype == torch.float64 else torch.float32
    else:
        if align == "procrustes":
            raise ValueError("align='procrustes' needs zero_shot_text (K, d)")
        if num_classes is None or dim is None:
            raise ValueError("aligned_anchors without zero_shot_text needs num_classes and dim")
        k, d = num_classes, dim
        device, out_dtype = torch.device("cpu"), torch.float32
    m = simplex_etf(k, d, seed=seed, dtype=torch.float64)
    if align == "procrustes":
        z = zero_shot_text.detach().to("cpu", torch.float64)
        z = z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)
        z = z - z.mean(dim=0, keepdim=True)
        m = procrustes_rotation(m, z.T) @ m
    a = m.T
    a = a / a.norm(dim=1, keepdim=True)
    return a.to(device=device, dtype=out_dtype)
