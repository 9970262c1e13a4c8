"""Training you can trust (issue 7): a diverging run stops at the first non-finite loss with one line
naming epoch, step and the fix, keeps its last good checkpoint and writes no NaN; a damaged or edited
checkpoint is refused with one line naming the file; the schedule is CoOp/Dassl's exactly."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from ncprompt.data.cache import CachedFeatures
from ncprompt.engine.checkpoint import CheckpointError, load_checkpoint
from ncprompt.engine.trainer import NonFiniteError, TrainConfig, lr_at, train, train_step
from ncprompt.methods import build_method
from ncprompt.utils import read_jsonl

NAMES = ["t-shirt", "trouser", "pullover", "dress"]


@pytest.fixture(scope="module")
def setup(tiny_backbone):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(8, 2, tiny_backbone.embed_dim, generator=g)
    labels = torch.arange(8) % len(NAMES)

    def method():
        return build_method("coop", tiny_backbone, NAMES, {"n_ctx": 2})

    return method, CachedFeatures(feats), labels


def _cfg(**kw):
    return TrainConfig(**{"epochs": 3, "batch_size": 4, "views": 2, "lr": 0.01, "warmup_epochs": 0, "seed": 1, **kw})


@pytest.mark.parametrize("lr", [1e30, 3e38])  # NaN in the loss, or inf in the parameters after the step
def test_diverging_run_stops_keeps_last_good_checkpoint_and_writes_no_nan(setup, tmp_path, lr):
    method, source, labels = setup
    run = tmp_path / "run"
    train(method(), source, labels, _cfg(), run, stop_after=1)  # one good epoch
    good = load_checkpoint(run)
    with pytest.raises(NonFiniteError) as e:
        train(method(), source, labels, _cfg(lr=lr), run)  # resumes at epoch 2 with an absurd lr
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("training diverged at epoch 2/3, step ")
    assert "last good checkpoint (epoch 1) is kept" in msg and "Lower the learning rate (--lr" in msg
    kept = load_checkpoint(run)
    assert kept["epoch"] == 0 and all(torch.equal(kept["prompt"][k], v) for k, v in good["prompt"].items())
    log = read_jsonl(run / "metrics.jsonl")
    assert [r["epoch"] for r in log] == [1] and all(math.isfinite(r["loss"]) for r in log)
    assert "NaN" not in (run / "metrics.jsonl").read_text() and "Infinity" not in (run / "metrics.jsonl").read_text()


def test_non_finite_loss_leaves_the_parameters_untouched(setup):
    method, _, _ = setup
    m = method()
    before = m.prompt_learner.ctx.detach().clone()
    opt = torch.optim.SGD([m.prompt_learner.ctx], lr=0.1)
    feats = torch.full((4, m.backbone.embed_dim), float("nan"))
    with pytest.raises(NonFiniteError, match="the loss is nan .*non-finite terms: ce"):
        train_step(m, feats, torch.arange(4), opt)
    assert torch.equal(m.prompt_learner.ctx.detach(), before)


# --- damaged or edited checkpoints -------------------------------------------------------------

@pytest.fixture(scope="module")
def two_epochs(setup, tmp_path_factory):
    """A run folder after 2 of 3 epochs (copied by each test)."""
    method, source, labels = setup
    run = tmp_path_factory.mktemp("trust") / "run"
    train(method(), source, labels, _cfg(), run, stop_after=2)
    return run


def _finished_run(two_epochs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    return run, run / "checkpoint" / "state.json"


def _edit_state(state_file, fn):
    s = json.loads(state_file.read_text())
    fn(s)
    state_file.write_text(json.dumps(s))


@pytest.mark.parametrize("edit, match", [
    (lambda s: s.update(epoch="1"), r"'epoch' must be an integer >= 1, got '1'"),
    (lambda s: s.update(epoch=0), r"'epoch' must be an integer >= 1"),  # counted from 1
    (lambda s: s.update(epoch=-3, counted_from=None), r"'epoch' must be an integer >= 0"),  # an earlier version's
    (lambda s: s["files"].update(prompt="../../../outside.safetensors"), r"files.prompt = '../../../outside"),
    (lambda s: s["files"].update(optim="/etc/passwd"), r"files.optim = '/etc/passwd' is not a checkpoint file"),
    (lambda s: s.update(files=["prompt-e1.safetensors"]), r"'files' must name the prompt, optim, extra files"),
    (lambda s: s.update(optimizer=[1, 2]), r"'optimizer' must be a JSON object"),
    (lambda s: s["optimizer"]["param_groups"][0].update(lr="fast"), r"group options \['lr'\] differ"),
    (lambda s: s["optimizer"]["param_groups"][0].update(params=[0, 1, 2]), r"group options \['params'\] differ"),
])
def test_edited_state_json_is_refused(setup, two_epochs, tmp_path, edit, match):
    method, source, labels = setup
    run, state_file = _finished_run(two_epochs, tmp_path)
    (tmp_path / "outside.safetensors").write_bytes(b"")
    _edit_state(state_file, edit)
    with pytest.raises(CheckpointError, match=match) as e:
        train(method(), source, labels, _cfg(), run)
    assert "\n" not in str(e.value) and "--no-resume" in str(e.value)


def test_damaged_checkpoint_files_are_refused(setup, two_epochs, tmp_path):
    from safetensors.torch import load_file, save_file

    method, source, labels = setup
    run, state_file = _finished_run(two_epochs, tmp_path)
    good_state = state_file.read_text()
    state_file.write_text('{"epoch": 1, "files": ')
    with pytest.raises(CheckpointError, match="state.json is not valid JSON"):
        train(method(), source, labels, _cfg(), run)
    state_file.write_text(good_state)
    ck = run / "checkpoint"
    optim = ck / "optim-e2.safetensors"
    good = load_file(str(optim))
    optim.write_bytes(optim.read_bytes()[:40])  # truncated
    with pytest.raises(CheckpointError, match="optim-e2.safetensors is damaged"):
        train(method(), source, labels, _cfg(), run)
    save_file({k: torch.zeros(3, 3) for k in good}, str(optim))  # momentum of the wrong shape
    with pytest.raises(CheckpointError, match=r"'0.momentum_buffer' has shape \(3, 3\)"):
        train(method(), source, labels, _cfg(), run)
    save_file({k: torch.full_like(v, float("nan")) for k, v in good.items()}, str(optim))
    with pytest.raises(CheckpointError, match="holds NaN/inf"):
        train(method(), source, labels, _cfg(), run)
    save_file(good, str(optim))
    prompt = ck / "prompt-e2.safetensors"
    p = load_file(str(prompt))
    save_file({k: torch.full_like(v, float("nan")) for k, v in p.items()}, str(prompt))
    with pytest.raises(CheckpointError, match=r"prompt-e2.safetensors holds NaN/inf"):
        train(method(), source, labels, _cfg(), run)
    save_file(p, str(prompt))
    assert len(train(method(), source, labels, _cfg(), run)) == 3  # repaired: resumes and finishes


# --- the learning-rate schedule, against Dassl's own mechanism ----------------------------------

class DasslConstantWarmup(torch.optim.lr_scheduler.LRScheduler):
    """Dassl's ConstantWarmupScheduler (dassl/optim/lr_scheduler.py), re-typed for this test."""

    def __init__(self, optimizer, successor, warmup_epoch, cons_lr):
        self.successor, self.warmup_epoch, self.cons_lr = successor, warmup_epoch, cons_lr
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return [self.cons_lr for _ in self.base_lrs]

    def step(self, epoch=None):
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step(epoch)
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step(epoch)


def _dassl_lrs(lr, warmup_lr, epochs, warmup):
    """The lr each epoch trains at under Dassl's build_lr_scheduler (cosine, constant warm-up,
    WARMUP_RECOUNT True) stepped once per epoch, as its trainers do."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, float(epochs))
    if warmup > 0:
        sched = DasslConstantWarmup(opt, sched, warmup, warmup_lr)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("epochs, warmup", [(10, 1), (50, 1), (5, 1), (7, 2), (6, 0), (2, 1)])
def test_schedule_equals_dassl(epochs, warmup):
    cfg = TrainConfig(epochs=epochs, lr=0.002, warmup_epochs=warmup, warmup_lr=1e-5)
    ours = [lr_at(cfg, e) for e in range(epochs)]
    ref = _dassl_lrs(0.002, 1e-5, epochs, warmup)
    assert ours == pytest.approx(ref, rel=1e-12, abs=1e-15)
    if warmup:
        assert ours[warmup] == 0.002  # the first epoch after the warm-up trains at the full lr


def test_cli_diverging_run_is_one_line_exit_2_and_no_results(image_folder, tmp_path, capsys):
    from ncprompt.cli import main

    out = tmp_path / "run"
    args = ["--no-progress", "train", "--model", "tiny-clip", "--dataset", "folder", "--root", str(image_folder),
            "--shots", "2", "--epochs", "2", "--output", str(out), "--cache-dir", str(tmp_path / "cache"),
            "--lr", "1e30", "--set", "train.views=1", "--set", "train.warmup_epochs=0"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (a warning about few steps may come before)
    assert err.startswith("ncprompt: error: training diverged at epoch ") and "Lower the learning rate" in err
    assert not (out / "results.json").exists() and not (out / "prompt.safetensors").exists()
    assert "NaN" not in (out / "metrics.jsonl").read_text() if (out / "metrics.jsonl").exists() else True
