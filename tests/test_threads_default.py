"""The default thread count under a competing load (cli.default_threads): torch's default on an idle
machine, the cores other running processes leave otherwise, and never over a user's choice."""

from __future__ import annotations

import os
import subprocess
import sys

from ncprompt import cli
from ncprompt.cli import busy_cores, default_threads


def test_busy_cores_reads_the_fewest_runnable_tasks_minus_this_one(tmp_path):
    f = tmp_path / "loadavg"
    f.write_text("1.58 1.28 1.65 3/78 667\n")
    assert busy_cores(samples=2, gap_s=0, loadavg=str(f)) == 2
    f.write_text("0.01 0.01 0.01 1/78 667\n")
    assert busy_cores(samples=1, loadavg=str(f)) == 0
    assert busy_cores(loadavg=str(tmp_path / "missing")) is None
    f.write_text("garbage\n")
    assert busy_cores(samples=1, loadavg=str(f)) is None


def _env_after(env: dict[str, str], busy: int | None, cores: int) -> dict[str, str]:
    env = dict(env)
    modules = sys.modules.pop("torch", None)  # as before torch is imported
    try:
        default_threads(env, busy=busy, cores=cores)
    finally:
        if modules is not None:
            sys.modules["torch"] = modules
    return env


def test_default_threads_rule(monkeypatch):
    assert "OMP_NUM_THREADS" not in _env_after({}, busy=0, cores=2)  # idle: torch's own default
    monkeypatch.setattr(cli, "busy_cores", lambda: None)  # no /proc/loadavg: torch's own default
    assert "OMP_NUM_THREADS" not in _env_after({}, busy=None, cores=2)
    assert _env_after({}, busy=1, cores=2)["OMP_NUM_THREADS"] == "1"
    assert _env_after({}, busy=5, cores=2)["OMP_NUM_THREADS"] == "1"  # never below 1
    assert _env_after({}, busy=2, cores=16)["OMP_NUM_THREADS"] == "14"
    assert _env_after({"OMP_NUM_THREADS": "2"}, busy=1, cores=2)["OMP_NUM_THREADS"] == "2"  # the user's choice
    assert "OMP_NUM_THREADS" not in _env_after({"WORLD_SIZE": "2"}, busy=1, cores=2)  # torchrun sets its own


def test_a_cli_process_next_to_a_busy_one_uses_fewer_threads():
    code = "import time\nend = time.time() + 20\nwhile time.time() < end: pass"
    spin = subprocess.Popen([sys.executable, "-c", code])
    try:
        code = ("import os, sys; from ncprompt.cli import default_threads, busy_cores; b = busy_cores(samples=20); "
                "default_threads(); print(b, os.environ.get('OMP_NUM_THREADS'))")
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "WORLD_SIZE")}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        busy, threads = out.stdout.split()
        assert int(busy) >= 1 and threads != "None"
        assert int(threads) <= max(1, len(os.sched_getaffinity(0)) - 1)
    finally:
        spin.kill()
        spin.wait()
