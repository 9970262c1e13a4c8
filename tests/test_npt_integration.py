"""NPT through CoOp: gradients reach the context vectors with a frozen image encoder; K > d+1 runs."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from ncprompt.collapse.etf import ETFApproximationWarning
from ncprompt.collapse.regularizers import NPTConfig, NPTRegularizer
from ncprompt.config import RunConfig
from ncprompt.data.base import DatasetSplits
from ncprompt.methods import build_method
from ncprompt.protocols.experiment import Experiment

NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal"]


@pytest.mark.parametrize("lc_form,mi_form", [("pairwise", "self_duality"), ("anchored", "cross_similarity")])
def test_lc_and_mi_reach_coop_context(tiny_backbone, lc_form, mi_form):
    torch.manual_seed(0)
    method = build_method("coop", tiny_backbone, NAMES, {"n_ctx": 4})
    e = tiny_backbone.embed_dim
    images = torch.randn(12, e)  # frozen encoder: plain tensors, no grad
    labels = torch.arange(12) % len(NAMES)
    zs = tiny_backbone.encode_texts([f"a photo of a {n}." for n in NAMES])
    for part in ("lc", "mi"):
        cfg = NPTConfig(enabled=True, lc_form=lc_form, mi_form=mi_form,
                        lambda_lc=1.0 if part == "lc" else 0.0, lambda_mi=1.0 if part == "mi" else 0.0)
        reg = NPTRegularizer(cfg, len(NAMES), e)
        reg.setup(zero_shot_text=zs, image_class_means=torch.randn(len(NAMES), e))
        method.zero_grad()
        out = reg(method.text_features(), images, labels)
        assert out[part] > 0
        out["loss"].backward()
        g = method.prompt_learner.ctx.grad
        assert g is not None and g.abs().sum() > 0, part
        assert all(p.grad is None for p in tiny_backbone.model.parameters())


def test_npt_changes_training_and_is_logged(tiny_backbone, fmnist_small, tmp_path):
    base = dict(model="tiny-clip", method="coop", shots=4, cache_dir=str(tmp_path / "c"),
                method_options={"n_ctx": 4}, train={"epochs": 3, "views": 1, "batch_size": 8})
    runs = {}
    for npt in (False, True):
        cfg = RunConfig.from_dict({**base, "npt": {"enabled": npt, "lambda_lc": 1.0, "lambda_mi": 1.0}})
        Experiment(cfg, backbone=tiny_backbone, dataset=fmnist_small).run(tmp_path / str(npt))
        runs[npt] = [json.loads(x) for x in (tmp_path / str(npt) / "metrics.jsonl").read_text().splitlines()]
    assert "npt_lc" in runs[True][0] and "npt_mi" in runs[True][0] and "npt_lc" not in runs[False][0]
    assert runs[True][-1]["nc_train"]["nc2_equiangle_etf_text"] != runs[False][-1]["nc_train"]["nc2_equiangle_etf_text"]
    assert "nc3_self_duality" in runs[True][-1]["nc_train"]


def test_more_classes_than_dims_plus_one_runs_with_warning(tiny_backbone, fmnist_arrays, tmp_path):
    from ncprompt.data.base import ArrayImages

    k = tiny_backbone.embed_dim + 8  # 40 classes in 32 dims: no exact simplex ETF
    a = fmnist_arrays
    x = a["train_x"][: 4 * k]
    y = torch.arange(4 * k).numpy() % k
    ds = DatasetSplits("many", [f"class number {i}" for i in range(k)], ArrayImages(x, y), ArrayImages(x, y))
    cfg = RunConfig.from_dict(dict(model="tiny-clip", method="coop", shots=2, cache_dir=str(tmp_path),
                                   method_options={"n_ctx": 2}, train={"epochs": 1, "views": 1, "warmup_epochs": 0},
                                   npt={"enabled": True, "lc_form": "anchored"}))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = Experiment(cfg, backbone=tiny_backbone, dataset=ds).run(None)
    assert any(issubclass(x.category, ETFApproximationWarning) for x in w)
    assert res["epochs_run"] == 1 and res["all"]["n"] == 4 * k
