"""Simplex ETF, Procrustes anchors and the NPT regularisers (LC, MI)."""

from __future__ import annotations

import warnings

import pytest
import torch

from ncprompt.collapse import (
    ETFApproximationWarning,
    NPTConfig,
    NPTRegularizer,
    aligned_anchors,
    procrustes_rotation,
    simplex_etf,
)


def _random_rotation(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def _off(k: int) -> torch.Tensor:
    return ~torch.eye(k, dtype=torch.bool)


def _reg(k: int, d: int, **kw) -> NPTRegularizer:
    return NPTRegularizer(NPTConfig(enabled=True, **kw), k, d).double()


# ----------------------------------------------------------------------------------------------- simplex ETF


@pytest.mark.parametrize(("k", "d"), [(2, 1), (3, 2), (5, 16), (10, 10), (11, 10), (17, 16)])
def test_simplex_etf_is_exact(k: int, d: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no approximation warning while K <= d + 1
        m = simplex_etf(k, d, seed=3, dtype=torch.float64)
    assert m.shape == (d, k) and m.dtype == torch.float64
    g = m.T @ m
    torch.testing.assert_close(torch.diagonal(g), torch.ones(k, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(g[_off(k)], torch.full((k * (k - 1),), -1.0 / (k - 1), dtype=torch.float64),
                               rtol=0, atol=1e-12)
    assert m.sum(dim=1).abs().max() < 1e-12


def test_simplex_etf_seeded_and_dtype() -> None:
    a, b, c = simplex_etf(6, 8, seed=1), simplex_etf(6, 8, seed=1), simplex_etf(6, 8, seed=2)
    assert a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("k", [0, 1])
def test_simplex_etf_rejects_fewer_than_two_classes(k: int) -> None:
    with pytest.raises(ValueError, match="num_classes >= 2"):
        simplex_etf(k, 4)


def test_simplex_etf_approximation_beyond_d_plus_one() -> None:
    k, d = 30, 6
    with pytest.warns(ETFApproximationWarning, match="no exact simplex ETF"):
        m = simplex_etf(k, d, seed=0, dtype=torch.float64)
    assert m.shape == (d, k)
    torch.testing.assert_close(m.norm(dim=0), torch.ones(k, dtype=torch.float64), rtol=0, atol=1e-12)
    max_cos = (m.T @ m)[_off(k)].max().item()
    random_max = []
    for s in range(5):
        x = torch.randn(d, k, generator=torch.Generator().manual_seed(100 + s), dtype=torch.float64)
        x = x / x.norm(dim=0)
        random_max.append((x.T @ x)[_off(k)].max().item())
    welch = ((k - d) / (d * (k - 1))) ** 0.5  # lower bound on max |cos|, ~0.41 here
    assert max_cos < min(random_max) - 0.2, (max_cos, random_max)
    assert max_cos < 1.35 * welch, (max_cos, welch)


# ------------------------------------------------------------------------------------------ Procrustes / anchors


def test_procrustes_recovers_rotation() -> None:
    d, k = 7, 12
    q = _random_rotation(d, seed=5)
    src = torch.randn(d, k, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    r = procrustes_rotation(src, q @ src)
    torch.testing.assert_close(r, q, rtol=0, atol=1e-10)
    torch.testing.assert_close(r.T @ r, torch.eye(d, dtype=torch.float64), rtol=0, atol=1e-12)
    r32 = procrustes_rotation(src.float(), (q @ src).float())
    assert r32.dtype == torch.float32
    with pytest.raises(ValueError):
        procrustes_rotation(src, src[:, :3])


def test_aligned_anchors_identity_and_procrustes() -> None:
    k, d = 6, 9
    m = simplex_etf(k, d, seed=4, dtype=torch.float64)
    ident = aligned_anchors(None, seed=4, align="identity", num_classes=k, dim=d)
    torch.testing.assert_close(ident, m.T.float())
    q = _random_rotation(d, seed=8)
    target = (q @ m).T  # a rotated ETF as "zero-shot text"
    a = aligned_anchors(2.5 * target, seed=4, align="procrustes")
    assert a.dtype == torch.float64
    torch.testing.assert_close(a, target, rtol=0, atol=1e-10)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(k, dtype=torch.float64))
    with pytest.raises(ValueError, match="procrustes"):
        aligned_anchors(None, align="procrustes", num_classes=k, dim=d)


# ------------------------------------------------------------------------------------------------- LC


@pytest.mark.parametrize(("k", "d"), [(5, 12), (9, 8)])  # (9, 8): the K = d + 1 edge
@pytest.mark.parametrize("centered", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
def test_lc_pairwise_zero_on_exact_etf(k: int, d: int, centered: bool, normalize: bool) -> None:
    m = simplex_etf(k, d, seed=0, dtype=torch.float64)
    reg = _reg(k, d, centered=centered, normalize=normalize)
    img = torch.randn(4, d, dtype=torch.float64)
    out = reg(3.0 * m.T, img, torch.arange(4) % k)
    assert out["lc"].abs().item() < 1e-20
    # per-image text features (CoCoOp): the same ETF for each image
    out_b = reg(m.T.expand(4, k, d), img, torch.arange(4) % k)
    assert out_b["lc"].abs().item() < 1e-20


@pytest.mark.parametrize(("k", "d"), [(5, 12), (9, 8)])
def test_lc_anchored_zero_on_anchor_etf(k: int, d: int) -> None:
    m = simplex_etf(k, d, seed=2, dtype=torch.float64)
    reg = _reg(k, d, lc_form="anchored", anchor_align="identity", etf_seed=2)
    reg.setup()
    out = reg(2.0 * m.T, torch.randn(3, d, dtype=torch.float64), torch.tensor([0, 1, 1]))
    assert abs(out["lc"].item()) < 1e-12
    # procrustes: zero-shot text = a rotated ETF; the aligned anchors are exactly that rotated ETF
    rotated = (_random_rotation(d, seed=1) @ m).T
    reg_p = _reg(k, d, lc_form="anchored", anchor_align="procrustes", etf_seed=2)
    reg_p.setup(zero_shot_text=rotated)
    assert abs(reg_p(rotated, torch.randn(3, d, dtype=torch.float64), torch.tensor([0, 1, 2]))["lc"].item()) < 1e-12
    # an un-rotated ETF is far from the rotated anchors
    assert reg_p(m.T, torch.randn(3, d, dtype=torch.float64), torch.tensor([0, 1, 2]))["lc"].item() > 0.1


@pytest.mark.parametrize("lc_form", ["pairwise", "anchored"])
def test_lc_positive_on_perturbed_etf_and_decreases(lc_form: str) -> None:
    k, d = 6, 10
    m = simplex_etf(k, d, seed=0, dtype=torch.float64)
    reg = _reg(k, d, lc_form=lc_form, anchor_align="identity", lambda_mi=0.0)
    reg.setup()
    noise = torch.randn(k, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = (m.T + 0.4 * noise).requires_grad_(True)
    img, y = torch.randn(8, d, dtype=torch.float64), torch.arange(8) % k
    opt = torch.optim.SGD([t], lr=0.5 if lc_form == "pairwise" else 0.3)
    first = last = None
    for _ in range(50):
        lc = reg(t, img, y)["lc"]
        first = lc.item() if first is None else first
        last = lc.item()
        opt.zero_grad()
        lc.backward()
        opt.step()
    assert first > 1e-3
    assert last < 0.2 * first, (first, last)


def test_lc_pairwise_formula_brute_force() -> None:
    k, d = 4, 5
    t = torch.randn(k, d, dtype=torch.float64)
    for centered in (True, False):
        reg = _reg(k, d, centered=centered, normalize=False)
        c = t - t.mean(0) if centered else t
        terms = [(torch.nn.functional.cosine_similarity(c[a], c[b], dim=0) + 1 / (k - 1)) ** 2
                 for a in range(k) for b in range(k) if a != b]
        got = reg(t, torch.randn(2, d, dtype=torch.float64), torch.tensor([0, 1]))["lc"]
        torch.testing.assert_close(got, torch.stack(terms).mean())


# ------------------------------------------------------------------------------------------------- MI


@pytest.mark.parametrize("mi_form", ["self_duality", "cross_similarity"])
@pytest.mark.parametrize("fixed_means", [True, False])
def test_mi_gradients_reach_text_side(mi_form: str, fixed_means: bool) -> None:
    k, d, b = 5, 8, 10
    reg = _reg(k, d, mi_form=mi_form)
    img = torch.randn(b, d, dtype=torch.float64)  # frozen image encoder: no grad
    y = torch.arange(b) % k
    if fixed_means:
        reg.setup(image_class_means=torch.randn(k, d, dtype=torch.float64))
    t = torch.randn(k, d, dtype=torch.float64, requires_grad=True)
    out = reg(t, img, y)
    assert out["mi"].item() > 0
    (grad,) = torch.autograd.grad(out["loss"], t)
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()
    # LC alone too
    (grad_lc,) = torch.autograd.grad(reg(t, img, y)["lc"], t)
    assert grad_lc.abs().sum() > 0


def test_mi_self_duality_zero_when_text_matches_image_means() -> None:
    k, d = 6, 9
    m = simplex_etf(k, d, seed=1, dtype=torch.float64)
    reg = _reg(k, d)
    offset = torch.randn(1, d, dtype=torch.float64)
    reg.setup(image_class_means=5.0 * m.T + offset)  # image means = text up to scale and a global shift
    out = reg(m.T * 2.0, torch.randn(4, d, dtype=torch.float64), torch.tensor([0, 1, 2, 3]))
    assert abs(out["mi"].item()) < 1e-20
    other = _reg(k, d)
    other.setup(image_class_means=torch.randn(k, d, dtype=torch.float64))
    assert other(m.T, torch.randn(2, d, dtype=torch.float64), torch.tensor([0, 1]))["mi"].item() > 0.1


def test_mi_cross_similarity_brute_force_and_batched_text() -> None:
    k, d, b = 4, 6, 5
    reg = _reg(k, d, mi_form="cross_similarity")
    img = torch.randn(b, d, dtype=torch.float64)
    y = torch.tensor([0, 3, 1, 1, 2])
    tb = torch.randn(b, k, d, dtype=torch.float64)
    terms = []
    for i in range(b):
        t = tb[i] / tb[i].norm(dim=1, keepdim=True)
        c = t - t.mean(0)
        for kk in range(k):
            if kk != y[i]:
                terms.append((torch.nn.functional.cosine_similarity(img[i], c[kk], dim=0) + 1 / (k - 1)) ** 2)
    torch.testing.assert_close(reg(tb, img, y)["mi"], torch.stack(terms).mean())
    # (K, d) text is the same as (B, K, d) with identical sets
    t2 = torch.randn(k, d, dtype=torch.float64)
    torch.testing.assert_close(reg(t2, img, y)["mi"], reg(t2.expand(b, k, d), img, y)["mi"])
    torch.testing.assert_close(reg(t2, img, y)["lc"], reg(t2.expand(b, k, d), img, y)["lc"])


def test_ema_of_class_means_matches_analytic() -> None:
    k, d, mom = 3, 4, 0.8
    reg = _reg(k, d, ema_momentum=mom, normalize=False)
    t = torch.randn(k, d, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    batches = [torch.tensor([0, 0, 1]), torch.tensor([1, 2, 2, 2]), torch.tensor([0, 2])]
    expected = torch.zeros(k, d, dtype=torch.float64)
    seen = [False] * k
    for y in batches:
        f = torch.randn(len(y), d, generator=g, dtype=torch.float64)
        reg(t, f, y)
        for c in range(k):
            if (y == c).any():
                bm = f[y == c].mean(0)
                expected[c] = mom * expected[c] + (1 - mom) * bm if seen[c] else bm
                seen[c] = True
        torch.testing.assert_close(reg.image_means, expected)
        assert reg.image_seen.tolist() == seen
    # eval mode and fixed means do not update the EMA
    reg.eval()
    reg(t, torch.randn(2, d, dtype=torch.float64), torch.tensor([0, 1]))
    torch.testing.assert_close(reg.image_means, expected)


def test_image_anchor_term() -> None:
    k, d = 4, 6
    m = simplex_etf(k, d, seed=0, dtype=torch.float64)
    reg = _reg(k, d, image_anchor=True, anchor_align="identity", normalize=False, ema_momentum=0.5)
    reg.setup()
    y = torch.arange(k)
    out = reg(m.T, (3.0 * m.T).clone(), y)  # image class means exactly on the anchors (up to scale)
    assert abs(out["img_anchor"].item()) < 1e-12
    torch.testing.assert_close(out["loss"], 0.1 * out["lc"] + 0.1 * out["mi"] + 0.1 * out["img_anchor"])
    img = torch.randn(k, d, dtype=torch.float64, requires_grad=True)  # trainable image side (MaPLe)
    out = reg(m.T, img, y)
    assert out["img_anchor"].item() > 0
    (grad,) = torch.autograd.grad(out["img_anchor"], img)
    assert grad.abs().sum() > 0


def test_low_precision_inputs_are_computed_in_float32() -> None:
    k, d = 5, 8
    reg = NPTRegularizer(NPTConfig(enabled=True), k, d)
    t = torch.randn(k, d)
    img, y = torch.randn(6, d), torch.arange(6) % k
    ref = NPTRegularizer(NPTConfig(enabled=True), k, d)(t.bfloat16().float(), img.bfloat16().float(), y)
    out = reg(t.bfloat16(), img.bfloat16(), y)
    for key in ("lc", "mi", "loss"):
        assert out[key].dtype == torch.float32
        torch.testing.assert_close(out[key], ref[key], rtol=1e-5, atol=1e-6)


def test_disabled_regularizer_is_zero_and_setup_errors() -> None:
    k, d = 3, 4
    reg = NPTRegularizer(NPTConfig(enabled=False), k, d)
    out = reg(torch.randn(k, d), torch.randn(2, d), torch.tensor([0, 1]))
    assert all(v.item() == 0 for v in out.values())
    assert not reg.image_seen.any()
    anchored = NPTRegularizer(NPTConfig(enabled=True, lc_form="anchored"), k, d)
    with pytest.raises(RuntimeError, match="setup"):
        anchored(torch.randn(k, d), torch.randn(2, d), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="zero_shot_text"):
        anchored.setup()
    with pytest.raises(ValueError, match="image_class_means"):
        NPTRegularizer(NPTConfig(enabled=True), k, d).setup(image_class_means=torch.randn(k + 1, d))
    # anchors survive a state_dict round trip
    anchored.setup(zero_shot_text=torch.randn(k, d))
    fresh = NPTRegularizer(NPTConfig(enabled=True, lc_form="anchored"), k, d)
    fresh.load_state_dict(anchored.state_dict())
    assert torch.equal(fresh.anchors, anchored.anchors) and bool(fresh.anchors_ready)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"lambda_lc": -0.1}, "lambda_lc"),
        ({"lambda_mi": float("nan")}, "lambda_mi"),
        ({"lc_form": "etf"}, "lc_form"),
        ({"mi_form": "duality"}, "mi_form"),
        ({"anchor_align": "svd"}, "anchor_align"),
        ({"ema_momentum": 1.0}, "ema_momentum"),
        ({"ema_momentum": -0.1}, "ema_momentum"),
    ],
)
def test_config_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        NPTConfig(**kwargs)


def test_config_error_lists_allowed_values() -> None:
    with pytest.raises(ValueError, match="pairwise.*anchored"):
        NPTConfig(lc_form="bad")
