"""Neural-collapse metrics against a brute-force NumPy computation from all samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncprompt.collapse import simplex_etf
from ncprompt.metrics.neural_collapse import NCAccumulator, equiangularity, equinorm, self_duality


def _brute_force(x: np.ndarray, y: np.ndarray, k: int, text: np.ndarray | None, normalize: bool,
                 rcond: float = 1e-6) -> dict[str, float]:
    """Textbook definitions, explicit covariance over all samples (global mean = mean of class means)."""
    if normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    mu = np.stack([x[y == c].mean(0) for c in range(k)])
    bar = mu - mu.mean(0)
    dev = x - mu[y]
    sigma_w = dev.T @ dev / len(x)
    sigma_b = bar.T @ bar / k
    out = {"nc1": float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=rcond)) / k), "n_samples": float(len(x))}

    def nc2(v: np.ndarray, tag: str) -> None:
        norms = np.linalg.norm(v, axis=1)
        out[f"nc2_equinorm_{tag}"] = float(norms.std() / norms.mean())
        vn = v / norms[:, None]
        cos = (vn @ vn.T)[~np.eye(k, dtype=bool)]
        out[f"nc2_equiangle_std_{tag}"] = float(cos.std())
        out[f"nc2_equiangle_etf_{tag}"] = float(np.abs(cos + 1 / (k - 1)).mean())

    nc2(bar, "img")
    if text is not None:
        t = text / np.linalg.norm(text, axis=1, keepdims=True) if normalize else text
        c = t - t.mean(0)
        nc2(c, "text")
        out["nc3_self_duality"] = float(np.sum((c / np.linalg.norm(c) - bar / np.linalg.norm(bar)) ** 2))
    return out


def _data(k: int = 5, d: int = 8, n: int = 240, seed: int = 0, offset: float = 0.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 2.0
    y = rng.integers(0, k, size=n)
    y[:k] = np.arange(k)  # every class present
    x = centres[y] + rng.normal(size=(n, d)) * rng.uniform(0.3, 1.5, size=(k, 1))[y] + offset
    text = rng.normal(size=(k, d)) * rng.uniform(0.5, 2.0, size=(k, 1))
    return x, y, text


def _feed(acc: NCAccumulator, x: np.ndarray, y: np.ndarray, sizes: list[int] | None) -> None:
    if sizes is None:
        acc.update(torch.from_numpy(x), torch.from_numpy(y))
        return
    i, j = 0, 0
    while i < len(x):
        s = sizes[j % len(sizes)]
        acc.update(torch.from_numpy(x[i : i + s]), torch.from_numpy(y[i : i + s]))
        i, j = i + s, j + 1


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("sizes", [None, [1, 7, 13, 2, 31, 5], [64]])
def test_nc_metrics_match_brute_force(normalize: bool, sizes: list[int] | None) -> None:
    k, d = 5, 8
    x, y, text = _data(k, d)
    acc = NCAccumulator(k, d, normalize=normalize)
    _feed(acc, x, y, sizes)
    got = acc.compute(torch.from_numpy(text))
    want = _brute_force(x, y, k, text, normalize)
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert acc.n_samples == len(x)
    np.testing.assert_allclose(acc.class_means().numpy(), np.stack(
        [(x / np.linalg.norm(x, axis=1, keepdims=True) if normalize else x)[y == c].mean(0) for c in range(k)]))


def test_nc1_stable_with_large_offset_and_float32_input() -> None:
    k, d = 4, 6
    x, y, _ = _data(k, d, n=300, seed=1, offset=1e4)  # tiny spread relative to the mean
    acc = NCAccumulator(k, d, normalize=False)
    _feed(acc, x, y, [17, 40])
    assert acc.compute()["nc1"] == pytest.approx(_brute_force(x, y, k, None, False)["nc1"], rel=1e-6)
    acc32 = NCAccumulator(k, d, normalize=False)
    acc32.update(torch.from_numpy(x[:50]).float(), torch.from_numpy(y[:50]))
    assert acc32.sums.dtype == torch.float64


def test_pinv_cutoff_is_relative_and_explicit() -> None:
    # d > K - 1: Sigma_B is singular; a too-small cut-off blows up on rounding noise, the default does not.
    k, d = 3, 10
    x, y, _ = _data(k, d, n=90, seed=2)
    acc = NCAccumulator(k, d, normalize=False)
    _feed(acc, x, y, None)
    for rcond in (1e-6, 1e-3):
        want = _brute_force(x, y, k, None, False, rcond=rcond)["nc1"]
        assert acc.compute(rcond=rcond)["nc1"] == pytest.approx(want, rel=1e-9)


def test_nc4_against_brute_force_and_reference_means() -> None:
    k, d = 4, 5
    x, y, _ = _data(k, d, n=120, seed=3)
    rng = np.random.default_rng(4)
    preds = np.where(rng.random(len(y)) < 0.7, y, rng.integers(0, k, size=len(y)))
    acc = NCAccumulator(k, d, normalize=False)
    _feed(acc, x, y, [9, 30])
    assert "nc4" not in acc.compute()
    for s in range(0, len(x), 25):
        acc.update_nc4(torch.from_numpy(x[s : s + 25]), torch.from_numpy(preds[s : s + 25]))
    mu = np.stack([x[y == c].mean(0) for c in range(k)])
    nearest = np.argmin(((x[:, None, :] - mu[None]) ** 2).sum(-1), axis=1)
    assert acc.compute()["nc4"] == pytest.approx(float(np.mean(nearest != preds)), abs=1e-15)
    assert 0 < acc.compute()["nc4"] < 1
    # test features against train means
    x_te, y_te, _ = _data(k, d, n=60, seed=5)
    test_acc = NCAccumulator(k, d, normalize=False)
    test_acc.update(torch.from_numpy(x_te), torch.from_numpy(y_te))
    test_acc.update_nc4(torch.from_numpy(x_te), torch.from_numpy(y_te), reference_means=acc.class_means())
    near_te = np.argmin(((x_te[:, None, :] - mu[None]) ** 2).sum(-1), axis=1)
    assert test_acc.compute()["nc4"] == pytest.approx(float(np.mean(near_te != y_te)), abs=1e-15)


@pytest.mark.parametrize(("k", "d"), [(4, 10), (7, 6)])  # (7, 6): K = d + 1
def test_exact_etf_has_zero_nc_errors(k: int, d: int) -> None:
    m = simplex_etf(k, d, seed=0, dtype=torch.float64).T  # (K, d)
    y = torch.arange(3 * k) % k
    acc = NCAccumulator(k, d)
    acc.update(m[y] * 2.0, y)  # every sample on its class's ETF vertex
    out = acc.compute(m * 0.5)
    for key in ("nc1", "nc2_equinorm_img", "nc2_equiangle_std_img", "nc2_equiangle_etf_img", "nc2_equinorm_text",
                "nc2_equiangle_std_text", "nc2_equiangle_etf_text", "nc3_self_duality"):
        assert abs(out[key]) < 1e-12, (key, out[key])
    cos = torch.nn.functional.cosine_similarity(m[:, None], m[None], dim=-1)
    off = ~torch.eye(k, dtype=torch.bool)
    torch.testing.assert_close(cos[off], torch.full((k * (k - 1),), -1 / (k - 1), dtype=torch.float64))


def test_pure_functions() -> None:
    k, d = 5, 7
    mu = torch.randn(k, d, dtype=torch.float64)
    # self-duality: zero up to scale and a common shift, positive otherwise, bounded by 4
    assert self_duality(3.0 * mu + torch.randn(1, d, dtype=torch.float64), mu).item() < 1e-24
    sd = self_duality(torch.randn(k, d, dtype=torch.float64), mu).item()
    assert 0.1 < sd <= 4.0
    assert self_duality(-mu, mu).item() == pytest.approx(4.0)
    # equinorm / equiangularity by hand
    norms = mu.norm(dim=1)
    assert equinorm(mu).item() == pytest.approx((norms.std(correction=0) / norms.mean()).item())
    m = simplex_etf(k, d, dtype=torch.float64).T
    std, etf = equiangularity(m * torch.arange(1, k + 1, dtype=torch.float64)[:, None])  # angles ignore norms
    assert std.item() < 1e-12 and etf.item() < 1e-12


def test_missing_class_raises_and_shape_checks() -> None:
    acc = NCAccumulator(4, 3)
    acc.update(torch.randn(6, 3), torch.tensor([0, 1, 1, 3, 0, 3]))
    with pytest.raises(ValueError, match=r"\[2\]"):
        acc.compute()
    with pytest.raises(ValueError, match="labels"):
        acc.update(torch.randn(2, 3), torch.tensor([0, 4]))
    with pytest.raises(ValueError):
        acc.update(torch.randn(2, 5), torch.tensor([0, 1]))
