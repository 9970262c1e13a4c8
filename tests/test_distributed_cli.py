"""`ncprompt train --nproc 2` (torchrun, gloo) writes one run folder equal to the 1-process run.

MaPLe (live image encoding: DDP over the ranks, sharded evaluation encoding, NC reduced over the ranks) on
the pocket model and 3 classes x 2 shots of real images; the learned tensors agree to 1e-5, the accuracies
and NC metrics to 1e-6, and only rank 0 wrote (one set of files, one train.log line per epoch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from ncprompt.cli import main


def _args(image_folder, out, cache) -> list[str]:
    return ["--no-progress", "train", "--model", "pocket", "--method", "maple", "--dataset", "folder", "--root",
            str(image_folder), "--shots", "2", "--epochs", "2", "--batch-size", "4", "--views", "2",
            "--output", str(out), "--cache-dir", str(cache), "--seed", "3", "--depth", "2", "--device", "cpu"]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="--nproc 2 is refused on fewer than 2 "
                    "usable cores (and no GPU)")
def test_nproc_2_equals_one_process(image_folder, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = tmp_path / "two"
    r = subprocess.run([sys.executable, "-m", "ncprompt.cli", *_args(image_folder, two, tmp_path / "c2"), "--nproc",
                        "2"], capture_output=True, text=True, timeout=1800, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert r.stdout.count("results:") == 1  # rank 0 alone prints and writes
    assert main(_args(image_folder, tmp_path / "one", tmp_path / "c1")) == 0
    a, b = load_file(str(two / "prompt.safetensors")), load_file(str(tmp_path / "one" / "prompt.safetensors"))
    assert a.keys() == b.keys() and len(a) > 2
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0, msg=k)
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (two, tmp_path / "one"))
    for split in ("all", "train"):
        if split in rb:
            assert ra[split]["top1"] == pytest.approx(rb[split]["top1"], abs=1e-6)
    nc_a, nc_b = ra["all"].get("nc", {}), rb["all"].get("nc", {})
    assert nc_a.keys() == nc_b.keys()
    for k in nc_b:
        assert nc_a[k] == pytest.approx(nc_b[k], rel=1e-4, abs=1e-6), k
    assert len((two / "metrics.jsonl").read_text().splitlines()) == 2
    assert not list(two.glob("**/.*.tmp"))
