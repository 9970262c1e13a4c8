"""What `analyze`, `report`, `protocol` and `tables` write: the new classes' geometry saved and plotted,
correlations per model (never pooled), the grid's paper tables under the grid's dataset names."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from scipy.stats import pearsonr, spearmanr

from ncprompt.analysis import plots
from ncprompt.analysis.correlation import collect_runs, correlation_table, write_report
from ncprompt.cli import main
from ncprompt.config import RunConfig
from ncprompt.engine.results import RunResult, SplitResult, write_results
from ncprompt.protocols.experiment import Experiment


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    """Content is tested here, not durability: skip the fsync of atomic writes."""
    monkeypatch.setattr("ncprompt.utils._fsync", lambda path: None)


def _cfg(tmp_path, method="coop", epochs=2, protocol="base2new"):
    return RunConfig.from_dict({"run": {"model": "tiny-clip", "cache_dir": str(tmp_path / "cache")},
                                "data": {"protocol": protocol, "shots": 2, "max_test_per_class": 4},
                                "method": {"name": method, **({"n_ctx": 4} if method == "coop" else {})},
                                "train": {"epochs": epochs, "views": 1, "batch_size": 4, "lr": 0.05}})


def test_run_folder_keeps_new_class_text_and_means(tiny_backbone, fmnist_small, tmp_path, one_thread, monkeypatch):
    cfg = _cfg(tmp_path)
    exp = Experiment(cfg, backbone=tiny_backbone, dataset=fmnist_small)
    run = tmp_path / "run"
    exp.run(run)
    tf = load_file(str(run / "text_features.safetensors"))
    im = load_file(str(run / "image_means.safetensors"))
    fresh = exp.build()  # the same seeded initial context as the run started from
    new_names = list(exp.eval_sets_ds["new"].classnames)
    with torch.no_grad():
        initial_new = fresh.for_classnames(new_names).text_features()
        fresh.load_prompt_state(load_file(str(run / "prompt.safetensors")))
        final_new = fresh.for_classnames(new_names).text_features()
    assert torch.allclose(tf["initial_new"], initial_new, atol=1e-6)
    assert torch.allclose(tf["final_new"], final_new, atol=1e-6)
    assert not torch.allclose(tf["initial_new"], tf["final_new"], atol=1e-4)  # the prompts were tuned
    # brute force: mean of the L2-normalised test features of each new class, in the new split's order
    ev = exp.eval_sets()["new"]
    feats = F.normalize(fresh.for_classnames(new_names).image_features(ev.images, exp.cache).double(), dim=-1)
    ref = torch.stack([feats[torch.as_tensor(ev.labels) == k].mean(0) for k in range(len(new_names))])
    assert im["test_means_new"].shape == (5, tiny_backbone.embed_dim)
    assert torch.allclose(im["test_means_new"].double(), ref, atol=1e-5)

    # analyze plots base + new classes: names in base-then-new order, the line after the 5 base classes
    seen = {}
    real = plots.cosine_heatmaps_plot

    def spy(before, after, path, classnames=None, n_base=None, title=""):
        seen.update(k=before.shape[0], names=classnames, n_base=n_base)
        return real(before, after, path, classnames, n_base, title)

    monkeypatch.setattr(plots, "cosine_heatmaps_plot", spy)
    assert main(["analyze", str(run)]) == 0
    assert seen == {"k": 10, "names": list(exp.eval_sets_ds["base"].classnames) + new_names, "n_base": 5}
    rep = json.loads((run / "analysis.json").read_text())
    assert rep["plots"] == ["plots/training.png", "plots/text_cosine_before_after.png", "plots/geometry.png"]
    assert rep["model"] == tiny_backbone.name
    md = (run / "analysis.md").read_text()
    assert "NC3: text-image self-duality gap" in md and "training images, tuned prompts" in md


def test_all_class_run_has_no_new_class_text(tiny_backbone, fmnist_small, tmp_path, one_thread):
    """Without new classes (protocol all; the linear probe allows nothing else) only the training classes' geometry."""
    cfg = _cfg(tmp_path, "linear_probe", protocol="all")
    Experiment(cfg, backbone=tiny_backbone, dataset=fmnist_small).run(tmp_path / "lp")
    assert set(load_file(str(tmp_path / "lp" / "text_features.safetensors"))) == {"initial", "final"}
    assert set(load_file(str(tmp_path / "lp" / "image_means.safetensors"))) == {"train_means"}


def _result(model, method, nc1, hm, trained=True, train_nc=True, seed=0):
    split = SplitResult(top1=hm, classnames=["a", "b"], nc={"nc1": nc1 + 5.0})
    return RunResult(method=method, npt=False, dataset="d", model=model, protocol="base2new", shots=4, seed=seed,
                     epochs_run=3 if trained else 0, splits={"base": split, "new": SplitResult(top1=hm)},
                     train=SplitResult(top1=hm, nc={"nc1": nc1}) if train_nc else None)


def test_report_is_per_model_and_names_its_runs(tmp_path):
    rng = np.random.default_rng(0)
    runs = tmp_path / "runs"
    for i in range(5):
        for model, slope in (("pocket", 1.0), ("ViT-B-16", -1.0)):
            x = float(rng.uniform(0, 1))
            write_results(runs / f"{model}-{i}" / "results.json",
                          _result(model, "coop", x, 50 + slope * 10 * x + float(rng.normal(0, 0.5)), seed=i))
    write_results(runs / "zs" / "results.json", _result("pocket", "zeroshot", 0.5, 40.0, trained=False))
    write_results(runs / "zs0" / "results.json", _result("pocket", "zeroshot", 0.5, 41.0, trained=False,
                                                         train_nc=False, seed=1))
    rows = collect_runs([runs])
    zs0 = next(r for r in rows if r["run"].endswith("zs0"))
    assert "train_nc1" not in zs0 and zs0["test_nc1"] == 5.5  # test-split NC is never labelled "train"
    table = correlation_table(rows)
    assert {e["model"] for e in table} == {"pocket", "ViT-B-16"}
    for model in ("pocket", "ViT-B-16"):
        mine = [r for r in rows if r["model"] == model and r.get("trained") and "train_nc1" in r]
        x, y = np.array([r["train_nc1"] for r in mine]), np.array([r["acc_hm"] for r in mine])
        scope = "trained runs" if model == "pocket" else "all runs"  # pocket mixes in a zero-shot run
        e = next(e for e in table if e["model"] == model and e["scope"] == scope and e["accuracy"] == "acc_hm")
        assert e["n"] == 5 and e["pearson"] == pytest.approx(pearsonr(x, y)[0])
        assert e["spearman"] == pytest.approx(spearmanr(x, y)[0])
    pooled = pearsonr([r["train_nc1"] for r in rows if "train_nc1" in r], [r["acc_hm"] for r in rows
                                                                           if "train_nc1" in r])[0]
    assert all(e["pearson"] != pytest.approx(pooled) for e in table if e["pearson"] is not None)
    assert next(e for e in table if e["model"] == "pocket" and e["scope"] == "all runs"
                and e["accuracy"] == "acc_hm")["n"] == 6  # the zero-shot run with training NC counts there

    out = write_report(rows, tmp_path / "report")
    assert sorted(out["plots"]) == sorted(f"correlations_{m}_d_base2new_4_shots_{a}.png"
                                          for m in ("pocket", "ViT-B-16") for a in ("base", "hm", "new"))
    assert all((tmp_path / "report" / p).stat().st_size > 1000 for p in out["plots"])
    md = (tmp_path / "report" / "correlations.md").read_text()
    assert "## pocket" in md and "## ViT-B-16" in md and "2 untrained" in md and "1 without training images" in md
    assert "| ViT-B-16 | d | CoOp |" in (tmp_path / "report" / "nc_by_method.md").read_text()


def test_grid_names_datasets_and_writes_paper_tables(image_folder, tmp_path, one_thread, capsys):
    from ncprompt.protocols.grid import MethodSpec, run_grid

    base = {"run": {"model": "tiny-clip", "cache_dir": str(tmp_path / "cache")},
            "data": {"protocol": "base2new", "shots": 2, "options": {"test_fraction": 0.5}}}
    out = tmp_path / "grid"
    rows = run_grid(base, [f"clothes={image_folder}"], [MethodSpec.parse("zeroshot")], [1], out, log=lambda s: None)
    assert [r["dataset"] for r in rows] == ["clothes"]
    res = json.loads((out / "clothes" / "zeroshot" / "seed1" / "results.json").read_text())
    assert res["dataset"] == "clothes"
    b2n = (out / "tables" / "base_to_new.md").read_text()
    assert "clothes" in b2n and "| CLIP |" in b2n  # zero-shot under its display name
    assert (out / "tables" / "base_to_new.tex").read_text().count("\\toprule") == 1
    # `ncprompt tables` on the grid folder writes the same table
    assert main(["tables", str(out), "--output", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "base_to_new.md").read_text() == b2n


def test_frozen_image_metrics_are_named_not_plotted(tmp_path, monkeypatch):
    """A metric constant within each dataset (frozen image encoder) only varies between datasets: it is
    named in correlations.md and the figure's footnote, not drawn as a panel."""
    from ncprompt.analysis import correlation

    rows = [{"model": "pocket", "method": "coop", "npt": bool(i % 2), "dataset": ds, "trained": True,
             "train_nc1": {"a": 0.4, "b": 0.7}[ds], "train_nc3_self_duality": 0.1 * i + (ds == "b"),
             "acc_all": 50.0 + i} for i, ds in enumerate("aabbab")]
    assert correlation.between_datasets_only(rows, "train_nc1")
    assert not correlation.between_datasets_only(rows, "train_nc3_self_duality")
    drawn = []
    real = correlation.correlation_plot
    monkeypatch.setattr(correlation, "correlation_plot",
                        lambda rows, metrics, *a, **k: drawn.append((list(metrics), k["footnote"])) or real(
                            rows, metrics, *a, **k))
    out = write_report(rows, tmp_path / "r", pool=True)  # pooled over datasets: the dataset effect shows
    assert drawn == [(["train_nc3_self_duality"], "not plotted, constant within each dataset (frozen image "
                                                  "features): NC1: within-class variability")]
    assert out["plots"] == ["correlations_pocket_pooled_all.png"]
    assert "only a dataset effect: NC1: within-class variability" in (tmp_path / "r" / "correlations.md").read_text()
