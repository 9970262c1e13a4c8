"""Cluster-aware neural collapse: the NPT variant ``lc_form="cluster"`` (a reconstruction of the idea of CPT,
arXiv 2605.11939, from its abstract only; the paper's exact formulas are not public).

Classes are grouped into C semantic clusters by k-means on the frozen zero-shot text features z_k (L2-normalised,
float64, k-means++ seeding from a seeded generator, Lloyd iterations to a fixed point), g(k) in {0..C-1}. Then, with
t_k the (normalised) learned text features:

    within-cluster LC:  c_k = t_k - mean_{j: g(j)=g(k)} t_j          (centring inside the cluster)
                        L_clu = sum_c sum_{k != j in c} (cos(c_k, c_j) + 1/(n_c - 1))^2 / sum_c n_c (n_c - 1)
    class convergence:  L_conv = mean_i (1 - cos(f_i, t_{y_i}))      (each image feature to its class prototype)
    rotation stabilisation: L_rot = mean_k (1 - cos(t_k, z_k))       (learned prototypes tied to the frozen ones)

Clusters with one class have no pairs and add nothing to L_clu. With C = 1, c_k is the global centring and L_clu is
exactly the global pairwise LC (``etf_angle_deviation(c, power=2)``). Per-image text features (B, K, d) are handled
by averaging over the B sets, as the other LC forms.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["auto_cluster_count", "class_convergence", "cluster_pairwise_lc", "kmeans", "rotation_stabilisation"]

_EPS = 1e-12


def auto_cluster_count(num_classes: int) -> int:
    """Default cluster count C = max(1, round(sqrt(K / 2))) (a rule of thumb; set it explicitly to tune)."""
    return max(1, round(math.sqrt(num_classes / 2)))


def kmeans(x: Tensor, k: int, seed: int = 0, iters: int = 100) -> Tensor:
    """Cluster labels (N,) of the rows of ``x`` (N, d) into ``k`` clusters; deterministic under ``seed``.

    Rows are L2-normalised and clustered in float64 on the CPU: k-means++ seeding (each new centre drawn with
    probability proportional to the squared distance to the nearest chosen centre, from a seeded generator), then
    Lloyd steps until the assignment stops changing (at most ``iters``). An empty cluster takes the point farthest
    from its centre. Labels are renumbered by first appearance (cluster 0 holds row 0), so they do not depend on the
    order in which centres were drawn.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= clusters <= number of classes ({n}), got {k}")
    z = x.detach().to("cpu", torch.float64)
    z = z / z.norm(dim=1, keepdim=True).clamp_min(_EPS)
    g = torch.Generator().manual_seed(int(seed))
    centres = [int(torch.randint(n, (1,), generator=g))]
    for _ in range(1, k):
        d2 = torch.cdist(z, z[centres]).square().min(dim=1).values
        if float(d2.sum()) <= 0:  # fewer distinct points than clusters: take the first unused rows
            centres.append(next(i for i in range(n) if i not in centres))
            continue
        centres.append(int(torch.multinomial(d2 / d2.sum(), 1, generator=g)))
    mu = z[centres].clone()
    labels = torch.full((n,), -1, dtype=torch.long)
    for _ in range(iters):
        dist = torch.cdist(z, mu)
        new = dist.argmin(dim=1)
        for c in range(k):
            if not bool((new == c).any()):  # empty: re-seed with the worst-served point
                far = int(dist.gather(1, new.unsqueeze(1)).squeeze(1).argmax())
                new[far] = c
        if torch.equal(new, labels):
            break
        labels = new
        mu = torch.stack([z[labels == c].mean(dim=0) for c in range(k)])
    order: dict[int, int] = {}
    for c in labels.tolist():
        order.setdefault(c, len(order))
    return torch.tensor([order[c] for c in labels.tolist()], dtype=torch.long)


def cluster_pairwise_lc(t: Tensor, assign: Tensor, centered: bool = True) -> Tensor:
    """Within-cluster pairwise LC of text features ``t`` (K, d) or (B, K, d) for cluster labels ``assign`` (K,).

    L = sum over clusters c and ordered pairs k != j in c of (cos(c_k, c_j) + 1/(n_c - 1))^2, divided by the number
    of such pairs, with c_k = t_k - (cluster mean) when ``centered`` (else c_k = t_k). Averaged over a leading batch.
    Zero (with a graph) when every cluster is a singleton.
    """
    assign = assign.to(t.device)
    k = t.shape[-2]
    if assign.shape != (k,):
        raise ValueError(f"cluster labels must be ({k},), got {tuple(assign.shape)}")
    onehot = torch.nn.functional.one_hot(assign, int(assign.max()) + 1).to(t.dtype)  # (K, C)
    sizes = onehot.sum(dim=0)  # (C,)
    if centered:
        means = (onehot.T @ t) / sizes.unsqueeze(-1)  # (..., C, d)
        t = t - onehot @ means
    tn = t / t.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    cos = tn @ tn.transpose(-1, -2)  # (..., K, K)
    same = assign.unsqueeze(0) == assign.unsqueeze(1)
    pair = same & ~torch.eye(k, dtype=torch.bool, device=t.device)
    n_pairs = int(pair.sum())
    if n_pairs == 0:
        return (t * 0).sum()
    target = (-1.0 / (sizes[assign] - 1).clamp_min(1)).unsqueeze(-1).expand(k, k)  # -1/(n_c - 1) per row's cluster
    dev = (cos - target).square() * pair.to(t.dtype)
    return (dev.sum(dim=(-2, -1)) / n_pairs).mean()


def class_convergence(t: Tensor, f: Tensor, labels: Tensor) -> Tensor:
    """mean_i (1 - cos(f_i, t_{y_i})) for text (K, d) or per-image (B, K, d), image features (B, d), labels (B,)."""
    proto = t[labels] if t.ndim == 2 else t[torch.arange(t.shape[0], device=t.device), labels]
    return (1.0 - torch.nn.functional.cosine_similarity(f, proto, dim=-1, eps=_EPS)).mean()


def rotation_stabilisation(t: Tensor, z: Tensor) -> Tensor:
    """mean_k (1 - cos(t_k, z_k)) for text (K, d) or (B, K, d) against the frozen zero-shot features z (K, d)."""
    return (1.0 - torch.nn.functional.cosine_similarity(t, z.expand_as(t), dim=-1, eps=_EPS)).mean()
