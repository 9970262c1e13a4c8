"""`ncprompt eval RUN --nproc 2 --data-workers 1` (torchrun, gloo, loader workers on each rank) gives the
1-process evaluation: MaPLe's live evaluation encoding is split over the ranks, the NC sums reduced, and rank 0
alone prints and writes --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ncprompt.cli import main


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="--nproc 2 is refused on fewer than 2 "
                    "usable cores (and no GPU)")
def test_eval_nproc_2_with_workers_equals_one_process(image_folder, tmp_path):
    run = tmp_path / "run"
    assert main(["--no-progress", "train", "--model", "pocket", "--method", "maple", "--dataset", "folder", "--root",
                 str(image_folder), "--shots", "2", "--epochs", "1", "--batch-size", "4", "--views", "2", "--depth",
                 "2", "--output", str(run), "--cache-dir", str(tmp_path / "c0")]) == 0
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert main(["--no-progress", "eval", str(run), "--json", str(one), "--set",
                 f"run.cache_dir={tmp_path / 'c1'}"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "ncprompt.cli", "--no-progress", "eval", str(run), "--json", str(two),
                        "--nproc", "2", "--data-workers", "1", "--set", f"run.cache_dir={tmp_path / 'c2'}"],
                       capture_output=True, text=True, timeout=1800, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert r.stdout.count("top1") == 1  # one summary line: rank 0's
    a, b = json.loads(two.read_text()), json.loads(one.read_text())
    assert a["all"]["n"] == b["all"]["n"] > 0
    assert a["all"]["top1"] == pytest.approx(b["all"]["top1"], abs=1e-6)
    nc_a, nc_b = a["all"].get("nc", {}), b["all"].get("nc", {})
    assert nc_b and nc_a.keys() == nc_b.keys()
    for k in nc_b:
        assert nc_a[k] == pytest.approx(nc_b[k], rel=1e-4, abs=1e-6), k
