"""The engine calls the methods' own hooks: ``backward_step`` every step (ProGrad's projected gradient),
``end_epoch`` after every epoch (PromptSRC's Gaussian prompt aggregation), and a method that fits itself in
``training_source`` (the linear probe) runs end to end through ``Experiment`` without the SGD loop."""

from __future__ import annotations

import json

import pytest
import torch

from ncprompt.config import RunConfig
from ncprompt.engine.trainer import train_step
from ncprompt.methods import build_method
from ncprompt.protocols.experiment import Experiment

torch.set_num_threads(1)


def _run(method, options, tiny_backbone, fmnist_small, tmp_path, epochs=2):
    cfg = RunConfig.from_dict(dict(model="tiny-clip", method={"name": method, **options}, shots=2,
                                   cache_dir=str(tmp_path / "c"),
                                   train={"epochs": epochs, "views": 1, "batch_size": 8, "warmup_epochs": 0}))
    Experiment(cfg, backbone=tiny_backbone, dataset=fmnist_small).run(tmp_path / method)
    return json.loads((tmp_path / method / "results.json").read_text())


def test_train_step_calls_backward_step(tiny_backbone):
    m = build_method("coop", tiny_backbone, ["cat", "dog", "bird"], {"n_ctx": 2, "ctx_init": ""})
    calls = []
    orig = m.backward_step
    m.backward_step = lambda parts, loss: (calls.append(sorted(parts)), orig(parts, loss))
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(4, tiny_backbone.embed_dim)
    train_step(m, x, torch.tensor([0, 1, 2, 0]), opt)
    assert calls == [["ce"]]
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


@pytest.mark.parametrize("method,options", [
    ("prograd", {"n_ctx": 4}),  # ProGrad asserts n_ctx >= the template's words ("a photo of a": 4)
    ("promptsrc", {"gpa": True, "depth_text": 1, "depth_vision": 1}),
])
def test_hooked_methods_train_end_to_end(method, options, tiny_backbone, fmnist_small, tmp_path):
    res = _run(method, options, tiny_backbone, fmnist_small, tmp_path)
    assert res["epochs_run"] == 2
    metrics = [json.loads(x) for x in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in metrics)


def test_linear_probe_fits_without_the_sgd_loop(tiny_backbone, fmnist_small, tmp_path):
    res = _run("linear_probe", {}, tiny_backbone, fmnist_small, tmp_path)
    assert res["epochs_run"] == 0
    assert not (tmp_path / "linear_probe" / "metrics.jsonl").exists() or \
        (tmp_path / "linear_probe" / "metrics.jsonl").read_text() == ""


def test_train_step_with_an_enabled_grad_scaler_equals_the_plain_step(tiny_backbone):
    """fp16's loss scaling (here a CPU GradScaler, scale 2^10) changes nothing but the gradients' range."""
    x, y = torch.randn(6, tiny_backbone.embed_dim), torch.tensor([0, 1, 2, 0, 1, 2])
    ctx = {}
    for name, scaler in (("plain", None), ("scaled", torch.amp.GradScaler("cpu", init_scale=2.0**10))):
        m = build_method("coop", tiny_backbone, ["cat", "dog", "bird"], {"n_ctx": 2, "ctx_init": ""})
        opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
        train_step(m, x, y, opt, max_grad_norm=10.0, scaler=scaler)
        ctx[name] = m.prompt_learner.ctx.detach().clone()
    assert torch.allclose(ctx["plain"], ctx["scaled"], rtol=0, atol=1e-7)
    assert not torch.equal(ctx["plain"], build_method("coop", tiny_backbone, ["cat", "dog", "bird"],
                                                      {"n_ctx": 2, "ctx_init": ""}).prompt_learner.ctx)


def test_base_classes_by_name_and_results_record_names_and_model(tiny_backbone, fmnist_small, tmp_path):
    """data.base_classes picks the base classes; results.json's info names them, the groups and the model."""
    base = ["trouser", "coat", "bag"]
    cfg = RunConfig.from_dict(dict(model="ViT-B-16", method="zeroshot", shots=2, protocol="base2new",
                                   cache_dir=str(tmp_path / "c"), data={"base_classes": base}))
    Experiment(cfg, backbone=tiny_backbone, dataset=fmnist_small).run(tmp_path / "zs")
    res = json.loads((tmp_path / "zs" / "results.json").read_text())
    info = res["info"]
    assert info["classes"]["base"] == base and len(info["classes"]["new"]) == 7 and "coat" not in info["classes"]["new"]
    assert info["model"]["name"] == tiny_backbone.name and info["model"]["requested"] == "ViT-B-16"
    assert info["sizes"]
