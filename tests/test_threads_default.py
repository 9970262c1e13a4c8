"""The default thread count under a competing load (cli.default_threads): torch's default on an idle
machine, the cores other processes leave idle otherwise (measured on this process's own CPUs), and
never over a user's choice."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ncprompt import cli
from ncprompt.cli import busy_between, busy_cores, cpu_snapshot, default_threads

STAT = "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 {u0} 0 0 {i0} 0 0 0 {s0} 0 0\ncpu1 {u1} 0 0 {i1} 0 0 0 0 0 0\nintr 1 2\n"


def test_busy_between_counts_the_non_idle_share_of_the_usable_cpus(tmp_path):
    f = tmp_path / "stat"
    f.write_text(STAT.format(u0=100, i0=100, s0=0, u1=100, i1=100))
    a = cpu_snapshot(str(f))
    assert a == {0: (200, 100), 1: (200, 100)}
    # cpu0: 90 busy + 10 stolen of 100 jiffies; cpu1: 25 busy of 100
    f.write_text(STAT.format(u0=190, i0=100, s0=10, u1=125, i1=175))
    b = cpu_snapshot(str(f))
    assert busy_between(a, b, {0, 1}) == pytest.approx(1.25)
    assert busy_between(a, b, {1}) == pytest.approx(0.25)  # another cpuset: only its CPUs count
    assert busy_between(a, a, {0, 1}) == 0.0
    assert busy_cores(interval_s=0, stat=str(tmp_path / "missing")) is None


def _env_after(env: dict[str, str], busy: float | None, cores: int) -> dict[str, str]:
    env = dict(env)
    modules = sys.modules.pop("torch", None)  # as before torch is imported
    try:
        default_threads(env, busy=busy, cores=cores)
    finally:
        if modules is not None:
            sys.modules["torch"] = modules
    return env


def test_default_threads_rule(monkeypatch):
    assert "OMP_NUM_THREADS" not in _env_after({}, busy=0.1, cores=2)  # idle: torch's own default
    assert _env_after({}, busy=0.9, cores=2)["OMP_NUM_THREADS"] == "1"
    assert _env_after({}, busy=1.8, cores=2)["OMP_NUM_THREADS"] == "1"  # never below 1
    assert _env_after({}, busy=5.0, cores=2)["OMP_NUM_THREADS"] == "1"
    assert _env_after({}, busy=2.0, cores=16)["OMP_NUM_THREADS"] == "14"
    assert _env_after({"OMP_NUM_THREADS": "2"}, busy=1.0, cores=2)["OMP_NUM_THREADS"] == "2"  # the user's choice
    assert "OMP_NUM_THREADS" not in _env_after({"WORLD_SIZE": "2"}, busy=1.0, cores=2)  # torchrun sets its own
    monkeypatch.setattr(cli, "busy_cores", lambda: None)  # no /proc/stat: torch's own default
    assert "OMP_NUM_THREADS" not in _env_after({}, busy=None, cores=2)


@pytest.mark.skipif(not os.path.exists("/proc/stat") or len(os.sched_getaffinity(0)) < 2, reason="needs /proc/stat")
def test_a_cli_process_beside_busy_ones_uses_fewer_threads():
    cpus = sorted(os.sched_getaffinity(0))
    code = "import time\nend = time.time() + 20\nwhile time.time() < end: pass"
    spin = [subprocess.Popen([sys.executable, "-c", code]) for _ in cpus]  # every usable CPU kept busy
    try:
        probe = ("import os; from ncprompt.cli import busy_cores, default_threads; b = busy_cores(0.3); "
                 "default_threads(); print(b, os.environ.get('OMP_NUM_THREADS'))")
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "WORLD_SIZE")}
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
        busy, threads = out.stdout.split()
        assert float(busy) >= 0.5 and threads != "None" and int(threads) < len(cpus)
    finally:
        for p in spin:
            p.kill()
            p.wait()


@pytest.mark.parametrize("args, want", [
    (["train", "--threads", "3"], "3"),
    (["train", "--set", "run.threads=1"], "1"),
    (["protocol", "--threads", "2", "--datasets", "x", "--methods", "coop", "--output", "g"], "2"),
    (["train"], None),
])
def test_run_threads_pins_omp_before_torch_loads(args, want):
    env: dict[str, str] = {}
    cli.pin_threads(cli.build_parser().parse_args(args), env)
    assert env.get("OMP_NUM_THREADS") == want
    # a pinned count is the user's choice: the load-aware default leaves it alone
    _env = _env_after(env, busy=1.9, cores=2)
    assert _env.get("OMP_NUM_THREADS") == (want or "1")


def test_run_threads_is_validated_and_not_in_the_fingerprint():
    from ncprompt.config import ConfigError, RunConfig

    a, b = RunConfig.from_dict({"run": {"threads": 1}}), RunConfig.from_dict({})
    assert a.run.threads == 1 and a.fingerprint() == b.fingerprint()  # rounding only: a resumed run may pin it
    with pytest.raises(ConfigError, match="run.threads"):
        RunConfig.from_dict({"run": {"threads": 0}})


def test_a_run_records_its_thread_count_and_kernels(tmp_path):
    import torch

    from ncprompt.config import RunConfig
    from ncprompt.protocols.experiment import run_experiment

    before = torch.get_num_threads()
    try:
        cfg = RunConfig.from_dict({"run": {"model": "pocket", "threads": 1},
                                   "data": {"dataset": "emoji_hands_openmoji", "protocol": "base2new", "shots": 1,
                                            "max_test_per_class": 2},
                                   "method": {"name": "zeroshot"}})
        res = run_experiment(cfg, tmp_path / "run")
    finally:
        torch.set_num_threads(before)
    env = res.environment
    assert env["threads"] == 1 and env["versions"]["torch"] == torch.__version__
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
