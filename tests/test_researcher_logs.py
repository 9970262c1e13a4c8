"""What a run says: per-epoch lines on a piped stderr and in train.log, resume and Ctrl-C lines,
few-shot batches that are not dropped, the too-few-steps warning, and a warm-up longer than the run."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ncprompt.engine.progress import ProgressLog, epoch_line, format_duration, quiet
from ncprompt.engine.trainer import (
    FEW_STEPS,
    TrainConfig,
    effective_warmup,
    epoch_order,
    few_steps_warning,
    lr_at,
    steps_per_epoch,
)

ASSETS = Path(__file__).parent / "assets"

SCRIPT = textwrap.dedent(f"""
    import signal, sys
    from pathlib import Path
    import open_clip, torch
    # a shell's background job (`cmd &`) starts with SIGINT ignored; this test is about Ctrl-C's handling
    signal.signal(signal.SIGINT, signal.default_int_handler)
    open_clip.add_model_config({str(ASSETS / "tiny-clip.json")!r})
    torch.set_num_threads(1)
    from ncprompt.backbones import load_backbone
    from ncprompt.data.cache import CachedFeatures
    from ncprompt.engine.trainer import TrainConfig, train
    from ncprompt.methods import build_method

    run_dir, epochs, stop_after = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    torch.manual_seed(0)
    bb = load_backbone("tiny-clip", device="cpu")
    feats = torch.randn(12, 1, bb.embed_dim)
    labels = torch.arange(12) % 3
    cfg = TrainConfig(epochs=epochs, batch_size=4, views=1, lr=0.01)
    try:
        for _ in range(2):  # an interrupted run, then the same command again
            m = build_method("coop", bb, ["cat", "dog", "bird"], {{"n_ctx": 2}})
            train(m, CachedFeatures(feats), labels, cfg, run_dir, stop_after=stop_after or None)
            print("--- second call", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        sys.exit(130)
""")

EPOCH = re.compile(r"^\d\d:\d\d:\d\d \[train coop\] epoch (\d+)/(\d+)  loss \d+\.\d{4}  lr \d\.\d\de-\d\d  "
                   r"train acc \d+\.\d  \d+\.\d\d s/epoch")


def _script(tmp_path: Path) -> Path:
    p = tmp_path / "run_train.py"
    p.write_text(SCRIPT)
    return p


def test_epoch_lines_on_piped_stderr_and_in_train_log_then_resume(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([sys.executable, str(_script(tmp_path)), str(run), "3", "2"], capture_output=True, text=True,
                       timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    first, second = lines[: lines.index("--- second call")], lines[lines.index("--- second call") + 1:]
    epochs_first = [EPOCH.match(x).group(1, 2) for x in first if EPOCH.match(x)]
    assert epochs_first == [("1", "3"), ("2", "3")]
    assert any("warning: this run takes only 9 optimiser steps" in x and "--epochs" in x and "--batch-size" in x
               for x in first)  # 12 images at batch 4: 3 steps/epoch kept (no drop), 3 epochs
    assert any(x.endswith("[train coop] resuming from epoch 3/3 (2 epochs done, checkpoint in " + str(run) + ")")
               for x in second)
    assert [EPOCH.match(x).group(1) for x in second if EPOCH.match(x)] == ["3"]
    assert "ETA" in first[-2] or "ETA" in [x for x in first if EPOCH.match(x)][0]
    # train.log holds the same lines as stderr (timestamps and all)
    log = (run / "train.log").read_text().splitlines()
    shown = [x for x in lines if x.startswith(tuple("0123456789"))]
    assert log == shown
    assert len([x for x in log if EPOCH.match(x)]) == 3


def test_ctrl_c_prints_one_line_and_keeps_state(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(_script(tmp_path)), str(run), "100000", "0"], stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line.rstrip("\n"))
            m = EPOCH.match(seen[-1])
            if m and int(m.group(1)) >= 2:
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.communicate(timeout=120)[1].splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    notes = [x for x in rest if "interrupted (Ctrl-C)" in x]
    assert len(notes) == 1 and "Traceback" not in "\n".join(rest)
    assert re.search(r"interrupted \(Ctrl-C\): \d+ epochs saved in .*; run the same command again to resume", notes[0])
    assert (run / "checkpoint" / "state.json").is_file() or any((run / "checkpoint").glob("*"))


def test_few_shot_batches_kept_and_step_count():
    # 48 images at batch 32 (the textile folder): 2 steps per epoch, not 1
    assert steps_per_epoch(48, 32) == 2
    order, _ = epoch_order(48, 1, 32, seed=1, epoch=0)
    assert len(order) == 48
    # >= 4 full batches: the partial one is dropped as in Dassl
    assert steps_per_epoch(4 * 32 + 5, 32) == 4
    assert len(epoch_order(4 * 32 + 5, 1, 32, 1, 0)[0]) == 128
    assert steps_per_epoch(3, 32) == 1


def test_too_few_steps_warning_names_the_options():
    w = few_steps_warning(48, TrainConfig(epochs=10, batch_size=32))
    assert w is not None and "20 optimiser steps" in w and "--epochs" in w and "--batch-size" in w
    assert few_steps_warning(48, TrainConfig(epochs=25, batch_size=32)) is None  # 50 steps
    assert FEW_STEPS == 50


@pytest.mark.parametrize("warmup", [0, 1, 3])
def test_one_epoch_with_warmup_runs_at_the_real_lr(warmup):
    cfg = TrainConfig(epochs=1, warmup_epochs=warmup, lr=0.002, warmup_lr=1e-5)
    assert effective_warmup(cfg) == 0
    assert lr_at(cfg, 0) == pytest.approx(0.002)
    cfg = TrainConfig(epochs=3, warmup_epochs=5, lr=0.002, warmup_lr=1e-5)
    assert effective_warmup(cfg) == 2 and lr_at(cfg, 1) == 1e-5 and lr_at(cfg, 2) == pytest.approx(0.002)


def test_warmup_clip_note_in_the_log(tiny_backbone, tmp_path):
    from ncprompt.data.cache import CachedFeatures
    from ncprompt.engine.trainer import train
    from ncprompt.methods import build_method

    m = build_method("coop", tiny_backbone, ["a", "b"], {"n_ctx": 2})
    feats, labels = torch.randn(4, 1, tiny_backbone.embed_dim), torch.tensor([0, 1, 0, 1])
    with quiet():
        train(m, CachedFeatures(feats), labels, TrainConfig(epochs=1, batch_size=2, views=1), tmp_path)
    log = (tmp_path / "train.log").read_text()
    assert "warm-up clipped to 0 epoch(s)" in log and "epoch 1/1" in log


def test_progress_log_bars_on_a_terminal_and_lines_elsewhere(tmp_path):
    buf = io.StringIO()
    with ProgressLog("grid", 3, tmp_path / "g.log", unit="run", bars=False, stream=buf) as p:
        p.step("run 1/3 done", ran=False)  # reused: not in the rate
        p.step("run 2/3 done")
        p.step("run 3/3 done")
    out = buf.getvalue().splitlines()
    assert out[0].endswith("run 1/3 done  ETA ?") and "ETA" in out[1] and out[2].endswith("run 3/3 done")
    assert (tmp_path / "g.log").read_text().splitlines() == out
    buf = io.StringIO()
    with ProgressLog("train coop", 2, tmp_path / "t.log", bars=True, stream=buf) as p:
        p.step("epoch 1/2  loss 1.0000")
        p.note("a note")
    assert "a note" in buf.getvalue() and "epoch 1/2" not in buf.getvalue()  # a bar, not lines
    assert "epoch 1/2" in (tmp_path / "t.log").read_text()


def test_formatting():
    assert format_duration(4.24) == "4.2s" and format_duration(75) == "1m15s" and format_duration(3725) == "1h02m"
    line = epoch_line({"epoch": 0, "loss": 1.23456, "lr": 0.002, "train_acc": 50.0, "base_acc": 61.25,
                       "epoch_time_s": 0.5}, 10)
    assert line == "epoch 1/10  loss 1.2346  lr 2.00e-03  train acc 50.0  base acc 61.2  0.50 s/epoch"
