"""Multi-node torchrun: two "nodes" on this machine (two agents, static rendezvous on localhost, 1 process each)
train to the result of `--nproc 2` on one node.

MaPLe on the pocket model (live image encoding: DDP over the ranks) with the arguments of
tests/test_distributed_cli.py; tolerance as the DDP tests: 1e-5 on the learned tensors (the two launches place
the same 2 ranks on the same slices, so only the float32 summation order may differ), 1e-6 on accuracies.
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
from ncprompt.engine.distributed import DistributedError, free_port, node_options, torchrun_command
from test_distributed_cli import _args

CLI = [sys.executable, "-m", "ncprompt.cli"]


def test_two_nodes_equal_nproc_2_on_one_node(image_folder, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one_node", tmp_path / "two_nodes"
    endpoint = f"127.0.0.1:{free_port()}"
    agents = [subprocess.Popen([*CLI, *_args(image_folder, two, tmp_path / "c2"), "--nproc", "1", "--nnodes", "2",
                                "--node-rank", str(r), "--rdzv-endpoint", endpoint],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for r in (0, 1)]
    outputs = [p.communicate(timeout=1800) for p in agents]
    for p, (out, err) in zip(agents, outputs):
        assert p.returncode == 0, out[-2000:] + err[-4000:]
    assert sum(out.count("results:") for out, _ in outputs) == 1  # global rank 0 alone prints and writes
    r = subprocess.run([*CLI, *_args(image_folder, one, tmp_path / "c1"), "--nproc", "2"], capture_output=True,
                       text=True, timeout=1800, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    a, b = load_file(str(two / "prompt.safetensors")), load_file(str(one / "prompt.safetensors"))
    assert a.keys() == b.keys() and len(a) > 2
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0, msg=k)
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (two, one))
    for split in ("all", "train"):
        if split in rb:
            assert ra[split]["top1"] == pytest.approx(rb[split]["top1"], abs=1e-6)
    assert len((two / "metrics.jsonl").read_text().splitlines()) == 2


def test_node_options_and_slurm_defaults():
    assert node_options(1) == ["--standalone"]
    assert node_options(2, 1, "10.0.0.1:29400") == ["--nnodes", "2", "--node_rank", "1", "--rdzv_endpoint",
                                                     "10.0.0.1:29400"]
    slurm = {"SLURM_NODEID": "3", "MASTER_ADDR": "node17"}
    assert node_options(4, env=slurm)[1:] == ["4", "--node_rank", "3", "--rdzv_endpoint", "node17:29500"]
    with pytest.raises(DistributedError, match="--node-rank in 0..1"):
        node_options(2, None, "h:1", env={})
    with pytest.raises(DistributedError, match="--node-rank in 0..1.*got 2"):
        node_options(2, 2, "h:1", env={})
    with pytest.raises(DistributedError, match="--rdzv-endpoint HOST:PORT"):
        node_options(2, 0, "localhost", env={})
    cmd = torchrun_command(1, ["train", "--nproc", "1", "--nnodes=2", "--node-rank", "0", "--rdzv-endpoint", "h:1",
                               "--epochs", "2"], nodes=node_options(2, 0, "h:1"))
    assert cmd[3:9] == ["--nnodes", "2", "--node_rank", "0", "--rdzv_endpoint", "h:1"]
    assert cmd[-4:] == ["ncprompt.cli", "train", "--epochs", "2"]


def test_node_rank_without_nnodes_is_one_line(capsys):
    assert main(["train", "--node-rank", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--node-rank and --rdzv-endpoint go with --nnodes" in err
