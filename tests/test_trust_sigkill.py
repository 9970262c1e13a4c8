"""A real SIGKILL of a running training process: rerunning the same command resumes from the last checkpoint
and ends bitwise equal to an uninterrupted run (prompts and metrics)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

ASSETS = Path(__file__).parent / "assets"
SCRIPT = f"""
import sys, open_clip, torch
torch.set_num_threads(1)
open_clip.add_model_config({str(ASSETS / "tiny-clip.json")!r})
from ncprompt.config import RunConfig
from ncprompt.protocols.experiment import run_experiment
cfg = RunConfig.from_dict(dict(model="tiny-clip", dataset="fashion_mnist", method="coop", shots=2,
                               max_test_per_class=5, method_options={{"n_ctx": 2, "ctx_init": ""}},
                               cache_dir=sys.argv[2],
                               train={{"epochs": 120, "views": 1, "batch_size": 4, "warmup_epochs": 0, "seed": 3}}))
run_experiment(cfg, sys.argv[1])
"""


def _start(out: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), str(cache)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").exists(), reason="needs dataset-fashion-mnist")
def test_sigkill_during_training_then_rerun_equals_an_uninterrupted_run(tmp_path):
    cache = tmp_path / "cache"
    full = _start(tmp_path / "full", cache)
    _, err = full.communicate(timeout=600)
    assert full.returncode == 0, err[-2000:]

    killed = tmp_path / "killed"
    p = _start(killed, cache)
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.01)
    assert p.poll() is None, "the run ended before it could be killed: raise its epochs"
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    assert not (killed / "results.json").exists()
    done = len(metrics.read_text().splitlines())
    assert 3 <= done < 120

    again = _start(killed, cache)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    assert "resuming from epoch" in err

    a, b = load_file(str(tmp_path / "full" / "prompt.safetensors")), load_file(str(killed / "prompt.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    la = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in metrics.read_text().splitlines()]
    strip = ("epoch_time_s",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in la] == \
        [{k: v for k, v in r.items() if k not in strip} for r in lb]
