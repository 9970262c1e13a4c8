"""Cluster-aware NPT (lc_form="cluster"): k-means, the within-cluster LC against brute force, the reduction to the
global pairwise LC with one cluster, and the two extra terms."""

from __future__ import annotations

import pytest
import torch

from ncprompt.collapse import NPTConfig, NPTRegularizer, simplex_etf
from ncprompt.collapse.cluster import (
    class_convergence,
    cluster_pairwise_lc,
    kmeans,
    rotation_stabilisation,
)
from ncprompt.metrics.neural_collapse import etf_angle_deviation


def _blobs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(16)[:3] * 5
    truth = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1, 0, 0])
    return centres[truth] + 0.1 * torch.randn(10, 16, generator=g), truth


def test_kmeans_recovers_separated_groups_deterministically():
    x, truth = _blobs()
    a = kmeans(x, 3, seed=0)
    b = kmeans(x, 3, seed=0)
    assert torch.equal(a, b)
    assert a[0] == 0  # renumbered by first appearance
    # same partition as the truth (up to renaming)
    assert all((a[i] == a[j]) == (truth[i] == truth[j]) for i in range(10) for j in range(10))
    assert torch.equal(kmeans(x, 3, seed=5), a)  # well-separated: any seeding finds it
    assert torch.equal(kmeans(x, 1), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="clusters"):
        kmeans(x, 11)


def _brute_cluster_lc(t: torch.Tensor, assign: torch.Tensor) -> torch.Tensor:
    num = torch.zeros((), dtype=t.dtype)
    pairs = 0
    for c in assign.unique():
        rows = t[assign == c]
        n = rows.shape[0]
        if n < 2:
            continue
        num = num + etf_angle_deviation(rows - rows.mean(0), power=2) * n * (n - 1)
        pairs += n * (n - 1)
    return num / pairs


def test_within_cluster_lc_equals_brute_force_and_is_zero_on_cluster_etfs():
    torch.manual_seed(0)
    t = torch.randn(9, 12, dtype=torch.float64)
    assign = torch.tensor([0, 1, 0, 2, 1, 0, 0, 1, 3])  # cluster 3 is a singleton
    assert torch.allclose(cluster_pairwise_lc(t, assign), _brute_cluster_lc(t, assign), atol=1e-12)
    # batched (B, K, d): the mean over the sets
    tb = torch.randn(3, 9, 12, dtype=torch.float64)
    ref = torch.stack([_brute_cluster_lc(tb[i], assign) for i in range(3)]).mean()
    assert torch.allclose(cluster_pairwise_lc(tb, assign), ref, atol=1e-12)
    # each cluster an ETF around its own (arbitrary) centre -> zero loss
    etf = torch.randn(9, 12, dtype=torch.float64)  # singletons 3 and 8 stay random
    for c, shift in zip(range(2), (3.0, -2.0)):
        idx = (assign == c).nonzero().squeeze(1)
        etf[idx] = simplex_etf(len(idx), 12, seed=c, dtype=torch.float64).T + shift
    assert float(cluster_pairwise_lc(etf, assign)) < 1e-20
    # all singletons: no pairs, zero, still differentiable
    x = torch.randn(4, 5, requires_grad=True)
    z = cluster_pairwise_lc(x, torch.arange(4))
    z.backward()
    assert float(z.detach()) == 0 and x.grad is not None


def _reg(form: str, k: int, d: int, zs: torch.Tensor, **kw) -> NPTRegularizer:
    reg = NPTRegularizer(NPTConfig(enabled=True, lc_form=form, **kw), k, d)
    reg.setup(zero_shot_text=zs, image_class_means=torch.randn(k, d, generator=torch.Generator().manual_seed(3)))
    return reg


def test_one_cluster_equals_global_pairwise_lc_values_and_gradients():
    torch.manual_seed(1)
    k, d = 7, 16
    zs = torch.randn(k, d)
    f, y = torch.randn(12, d), torch.arange(12) % k
    t1 = torch.randn(k, d, requires_grad=True)
    t2 = t1.detach().clone().requires_grad_(True)
    out_c = _reg("cluster", k, d, zs, clusters=1, lambda_conv=0.0, lambda_rot=0.0)(t1, f, y)
    out_p = _reg("pairwise", k, d, zs)(t2, f, y)
    assert torch.allclose(out_c["lc"], out_p["lc"], atol=1e-7) and torch.allclose(out_c["mi"], out_p["mi"])
    assert torch.allclose(out_c["loss"], out_p["loss"], atol=1e-7)
    out_c["loss"].backward()
    out_p["loss"].backward()
    assert torch.allclose(t1.grad, t2.grad, atol=1e-7)
    # per-image text features too
    tb = torch.randn(12, k, d)
    assert torch.allclose(_reg("cluster", k, d, zs, clusters=1)(tb, f, y)["lc"],
                          _reg("pairwise", k, d, zs)(tb, f, y)["lc"], atol=1e-7)


def test_cluster_terms_and_total():
    torch.manual_seed(2)
    k, d = 8, 16
    zs = torch.randn(k, d)
    reg = _reg("cluster", k, d, zs, clusters=3, lambda_conv=0.3, lambda_rot=0.7, lambda_lc=0.2, lambda_mi=0.1)
    assert torch.equal(reg.cluster_assign, kmeans(zs, 3, seed=0))
    t, f, y = torch.randn(k, d), torch.randn(10, d), torch.arange(10) % k
    out = reg(t, f, y)
    tn = torch.nn.functional.normalize(t, dim=-1)
    conv = torch.stack([1 - torch.cosine_similarity(f[i], t[y[i]], dim=0) for i in range(10)]).mean()
    rot = torch.stack([1 - torch.cosine_similarity(t[j], zs[j], dim=0) for j in range(k)]).mean()
    assert torch.allclose(out["conv"], conv, atol=1e-6) and torch.allclose(out["rot"], rot, atol=1e-6)
    assert torch.allclose(out["lc"], cluster_pairwise_lc(tn, reg.cluster_assign), atol=1e-7)
    assert torch.allclose(out["loss"], 0.2 * out["lc"] + 0.1 * out["mi"] + 0.3 * conv + 0.7 * rot, atol=1e-6)
    assert float(rotation_stabilisation(zs, zs)) < 1e-6
    assert float(class_convergence(zs, zs[:3] * 2, torch.arange(3))) < 1e-6


def test_cluster_form_input_errors():
    with pytest.raises(ValueError, match="clusters"):
        NPTConfig(lc_form="cluster", clusters=-1)
    with pytest.raises(ValueError, match="exceeds the 4 classes"):
        NPTRegularizer(NPTConfig(enabled=True, lc_form="cluster", clusters=5), 4, 8)
    reg = NPTRegularizer(NPTConfig(enabled=True, lc_form="cluster"), 4, 8)
    with pytest.raises(ValueError, match="needs zero_shot_text"):
        reg.setup()
    with pytest.raises(RuntimeError, match="setup"):
        reg(torch.randn(4, 8), torch.randn(2, 8), torch.tensor([0, 1]))
