"""Plots: zoomed axes, flat frozen-encoder metrics left out, class geometry, no mixing of models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ncprompt.analysis import plots


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    """Content is tested here, not durability: skip the fsync of atomic writes (seconds each on a busy disk)."""
    monkeypatch.setattr("ncprompt.utils._fsync", lambda path: None)


def test_zoomed_limits_hug_the_data():
    lo, hi = plots.zoomed_limits([71.9, 72.5, 75.0], [2.6, 1.9, 0.0])
    assert 60 < lo < 69.3 and 77.0 < hi < 85
    assert plots.zoomed_limits([99.5], None) == (pytest.approx(plots.zoomed_limits([99.5])[0]), 100.0)


def test_centred_cosine_of_a_simplex_etf():
    k = 5
    etf = np.eye(k) - 1.0 / k  # centred one-hot vectors: the simplex ETF
    c = plots.centred_cosine(etf)
    assert np.allclose(c[~np.eye(k, dtype=bool)], -1 / (k - 1)) and np.allclose(np.diag(c), 1)


def _log(epochs=6):
    return [{"epoch": e, "loss": 2.0 / (e + 1), "lr": 0.01, "train_acc": 40.0 + e, "all_acc": 50.0 + e,
             "nc_train": {"nc1": 0.5, "nc2_equiangle_etf_img": 0.3, "nc2_equiangle_etf_text": 0.3 - 0.01 * e,
                          "nc3_self_duality": 1.0 - 0.02 * e, "n_samples": 40.0}} for e in range(epochs)]


def test_training_curves_skip_flat_metrics(tmp_path):
    assert plots.moving_metrics(_log()) == (["nc2_equiangle_etf_text", "nc3_self_duality"],
                                            ["nc1", "nc2_equiangle_etf_img"])
    assert plots.training_curves_plot(_log(), tmp_path / "t.png") is not None
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_plot_run_with_new_classes(tmp_path):
    g = torch.Generator().manual_seed(0)
    save_file({"initial": torch.randn(4, 8, generator=g), "final": torch.randn(4, 8, generator=g),
               "initial_new": torch.randn(3, 8, generator=g), "final_new": torch.randn(3, 8, generator=g)},
              str(tmp_path / "text_features.safetensors"))
    save_file({"train_means": torch.randn(4, 8, generator=g), "test_means_new": torch.randn(3, 8, generator=g)},
              str(tmp_path / "image_means.safetensors"))
    out = plots.plot_run(tmp_path, _log(), ["a", "b", "c", "d"], ["e", "f", "g"], title="coop on toy")
    assert out == ["plots/training.png", "plots/text_cosine_before_after.png", "plots/geometry.png"]
    assert all((tmp_path / p).stat().st_size > 1000 for p in out)


def test_summary_and_correlation_plots(tmp_path):
    s = [{"dataset": d, "method": m, "base": 70.0 + i, "new": 80.0 - i, "hm": 74.0, "base_std": 1.0}
         for i, (d, m) in enumerate([("a", "coop"), ("a", "zeroshot"), ("b", "coop"), ("b", "zeroshot")])]
    assert plots.summary_plot(s, tmp_path / "s.png").stat().st_size > 1000
    rows = [{"model": "pocket", "dataset": "a", "method": "coop", "npt": bool(i % 2), "train_nc1": i / 10,
             "acc_hm": 60.0 + i} for i in range(6)]
    assert plots.correlation_plot(rows, ["train_nc1"], "acc_hm", tmp_path / "c.png") is not None
    with pytest.raises(ValueError, match="several models"):
        plots.correlation_plot(rows + [{**rows[0], "model": "ViT-B-16"}], ["train_nc1"], "acc_hm", tmp_path / "d.png")


def test_untuned_prompts_get_one_heatmap(tmp_path, monkeypatch):
    """Zero-shot (initial == final text features): one panel, not two identical ones."""
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig) or path)
    x = np.random.default_rng(0).normal(size=(4, 8))
    plots.cosine_heatmaps_plot(x, x.copy(), tmp_path / "a.png")
    plots.cosine_heatmaps_plot(x, x + 0.1, tmp_path / "b.png")
    assert [sum(bool(a.images) for a in f.axes) for f in figs] == [1, 2]
    assert "not tuned" in figs[0].axes[0].get_title()
