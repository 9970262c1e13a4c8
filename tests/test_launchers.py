"""Grids through submitit (its local executor: the same array tasks without a cluster) and Ray give the local grid's
results; `protocol --status` reports a killed cell failed and `--resubmit-failed` finishes it.

The grid: 2 pocket datasets x (zeroshot, coop) x 1 seed, 1 epoch, 1 shot, 2 test images per class. Every launcher
runs the same cell function on the same configs and features (one shared cache), with one torch thread per cell,
so the accuracies are compared for equality.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import time
from pathlib import Path

import pytest

from ncprompt.cli import main

DATASETS = ["emoji_hands_openmoji", "emoji_animals"]
METRICS = ("base", "new", "hm")


def grid_args(out: Path, cache: Path, *extra: str, datasets: list[str] = DATASETS) -> list[str]:
    return ["--no-progress", "protocol", "--datasets", *datasets, "--methods", "zeroshot", "coop", "--seeds", "1",
            "--epochs", "1", "--shots", "1", "--max-test-per-class", "2", "--views", "1", "--cache-dir", str(cache),
            "--output", str(out), *extra]


def table(out: Path) -> dict[tuple[str, str], tuple[float, ...]]:
    with open(out / "runs.csv") as f:
        return {(r["dataset"], r["method"]): tuple(float(r[k]) for k in METRICS) for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def local_grid(tmp_path_factory, cache) -> Path:
    """The reference: the same grid run by `--launcher local` (this process, one thread)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("local")
    try:
        assert main(grid_args(out, cache)) == 0
    finally:
        torch.set_num_threads(before)
    return out


def test_submitit_array_equals_local_grid(local_grid, cache, tmp_path, capsys):
    pytest.importorskip("submitit", reason="the slurm extra (pip install 'ncprompt[slurm]')")
    out = tmp_path / "sub"
    assert main(grid_args(out, cache, "--launcher", "submitit", "--slurm-cluster", "local", "--cpus-per-cell", "1",
                          "--time-min", "30")) == 0
    printed = capsys.readouterr().out
    assert "submitted 4 cell(s) to local" in printed and "| average | CoOp |" in printed
    assert table(out) == table(local_grid) and len(table(out)) == 4
    assert (out / "summary.md").read_text() == (local_grid / "summary.md").read_text()
    records = [json.loads(x) for x in (out / "jobs.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["job_id"] and r["launcher"] == "submitit" for r in records)
    cells = json.loads((out / "grid.json").read_text())["cells"]
    assert {c["run_dir"] for c in cells} == {r["run_dir"] for r in records}
    assert main(["protocol", "--status", str(out)]) == 0
    assert "4 cell(s): 4 done" in capsys.readouterr().out
    # a second submission finds every cell finished: nothing is submitted, same tables
    assert main(grid_args(out, cache, "--launcher", "submitit", "--slurm-cluster", "local")) == 0
    assert "submitted" not in capsys.readouterr().out and table(out) == table(local_grid)


def _wait_for(predicate, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while not predicate():
        assert time.time() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_killed_cell_is_reported_failed_and_finishes_on_resubmission(local_grid, cache, tmp_path, capsys):
    pytest.importorskip("submitit", reason="the slurm extra (pip install 'ncprompt[slurm]')")
    from ncprompt.protocols.launchers.status import grid_status, run_locked

    out = tmp_path / "kill"
    args = grid_args(out, cache, "--launcher", "submitit", "--slurm-cluster", "local", "--no-wait",
                     datasets=DATASETS[:1])
    assert main(args) == 0
    assert "--status" in capsys.readouterr().out and not (out / "summary.md").exists()
    victim = out / DATASETS[0] / "coop" / "seed1"
    _wait_for(lambda: run_locked(victim), 600, "the coop cell to start")  # its process holds the run folder
    assert next(c.state for c in grid_status(out) if c.job["run_dir"] == str(victim)) == "running"
    os.kill(int((victim / ".lock").read_text().split()[0]), signal.SIGKILL)  # the cell's process, mid-run
    _wait_for(lambda: all(c.state not in ("running", "queued") for c in grid_status(out)), 600, "the array to end")
    assert not (victim / "results.json").exists(), "the cell finished before it could be killed"
    assert main(["protocol", "--status", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "1 done, 1 failed" in shown
    failed = next(line for line in shown.splitlines() if "failed " in line)
    assert "coop seed 1" in failed and "job " in failed
    # only the failed cell goes again (the grid's recorded launcher: submitit local, no wait); it resumes
    assert main(["protocol", "--status", str(out), "--resubmit-failed"]) == 0
    assert "resubmitting 1 failed cell(s) with launcher submitit" in capsys.readouterr().out
    _wait_for(lambda: all(c.state == "done" for c in grid_status(out)), 600, "the resubmitted cell")
    assert main(["protocol", "--status", str(out)]) == 0  # every cell done: the summary is written now
    assert "2 done" in capsys.readouterr().out and (out / "summary.md").is_file()
    expected = {k: v for k, v in table(local_grid).items() if k[0] == DATASETS[0]}
    assert table(out) == expected


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'ncprompt[ray]')")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as e:  # noqa: BLE001  (a sandbox where Ray cannot start its processes)
        pytest.skip(f"a local Ray cannot start here: {type(e).__name__}: {e}")
    yield ray
    ray.shutdown()


def test_ray_tasks_equal_local_grid(local_grid, cache, tmp_path, local_ray, capsys):
    out = tmp_path / "ray"
    assert main(grid_args(out, cache, "--launcher", "ray", "--cpus-per-task", "1")) == 0
    assert "submitted 4 cell(s) as Ray tasks" in capsys.readouterr().out
    assert table(out) == table(local_grid)
    states = [json.loads(x)["state"] for x in (out / "jobs.jsonl").read_text().splitlines()]
    assert states.count("submitted") == 4 and states.count("done") == 4


def test_grid_section_is_typed_and_reaches_the_launcher(tmp_path, monkeypatch):
    from ncprompt.cli import build_parser, layers_from_args
    from ncprompt.config import ConfigError
    from ncprompt.config.grid import pop_grid_section

    a = build_parser().parse_args(["protocol", "--datasets", "x", "--methods", "coop", "--output", "o",
                                   "--launcher", "submitit", "--partition", "gpu", "--cpus-per-cell", "4",
                                   "--no-wait", "--set", "grid.slurm.sbatch.qos=high", "--ray-address", "auto"])
    base, _ = layers_from_args(a)
    section = pop_grid_section(base)
    assert "grid" not in base  # never part of a run's config (nor of its fingerprint)
    assert (section.launcher, section.slurm.partition, section.slurm.cpus_per_cell) == ("submitit", "gpu", 4)
    assert section.slurm.sbatch == {"qos": "high"} and not section.slurm.wait and section.ray.address == "auto"
    with pytest.raises(ConfigError, match=r"grid\.slurm\.time_min"):
        pop_grid_section({"grid": {"slurm": {"time_min": 0}}})
    with pytest.raises(ConfigError, match=r"grid\.slurm\.partitions: unknown key"):
        pop_grid_section({"grid": {"slurm": {"partitions": "gpu"}}})


def test_missing_launcher_package_names_the_extra(monkeypatch):
    import sys

    from ncprompt.protocols.launchers import LaunchError, require

    for module, extra in (("submitit", "slurm"), ("ray", "ray")):
        monkeypatch.setitem(sys.modules, module, None)  # (import fails as when it is not installed)
        with pytest.raises(LaunchError, match=rf"the {module} launcher needs .*pip install 'ncprompt\[{extra}\]'"):
            require(module)


def test_status_without_a_launcher_record(tmp_path, capsys):
    """A local grid's cells: done (results.json), running (lock held), failed (started, nothing runs it: the
    log's last line), missing; a folder that is no grid is one line and exit 2."""
    from ncprompt.engine.run_folder import RunFolder
    from ncprompt.protocols.launchers.records import write_grid_record

    cells = [{"run_dir": str(tmp_path / "g" / name / "seed1"), "dataset": "d", "label": name, "seed": 1, "shots": 1}
             for name in ("a", "b", "c", "e")]
    write_grid_record(tmp_path / "g", cells, {"launcher": "local"})
    (Path(cells[0]["run_dir"])).mkdir(parents=True)
    (Path(cells[0]["run_dir"]) / "results.json").write_text("{}")
    held = RunFolder(cells[1]["run_dir"])
    held.acquire()
    Path(cells[2]["run_dir"]).mkdir(parents=True)
    (Path(cells[2]["run_dir"]) / "config.yaml").write_text("{}")
    (Path(cells[2]["run_dir"]) / "train.log").write_text("epoch 1/3 loss 2.1\nepoch 2/3 loss 1.7\n")
    try:
        assert main(["protocol", "--status", str(tmp_path / "g")]) == 0
    finally:
        held.release()
    shown = capsys.readouterr().out.splitlines()
    assert "4 cell(s): 1 done, 1 running, 1 failed, 1 missing" in shown[0]
    assert [line.split()[0] for line in shown[1:]] == ["done", "running", "failed", "missing"]
    assert shown[3].endswith("epoch 2/3 loss 1.7")
    assert main(["protocol", "--status", str(tmp_path)]) == 2
    assert "not a grid folder" in capsys.readouterr().err
    assert main(["protocol", "--datasets", "x", "--methods", "coop"]) == 2
    assert "protocol needs --output" in capsys.readouterr().err


def test_cells_still_running_are_refused_before_submitting(tmp_path):
    """A cell whose Ray driver (here: this process) is alive counts as running: a new submission is refused."""
    from ncprompt.config.grid import GridSection
    from ncprompt.protocols.launchers import LaunchError, launch_cells
    from ncprompt.protocols.launchers.records import append_records, this_host

    job = {"run_dir": str(tmp_path / "g" / "d" / "coop" / "seed1"), "dataset": "d", "label": "coop", "seed": 1,
           "shots": 1}
    (tmp_path / "g").mkdir()
    append_records(tmp_path / "g", [{"run_dir": job["run_dir"], "launcher": "ray", "state": "submitted",
                                     "job_id": "abc", "host": this_host(), "pid": os.getpid()}])
    submitted = []
    with pytest.raises(LaunchError, match=r"1 cell\(s\) of this grid are still running.*d coop seed 1 \(running, "
                                          r"job abc\)"):
        launch_cells(GridSection(launcher="ray"), [job], tmp_path / "g", lambda j, r: submitted.append(j))
    assert not submitted


def test_slurm_keys_reach_the_sbatch_script(tmp_path, monkeypatch):
    """The grid section's SLURM keys become the array's #SBATCH lines (a stand-in `srun` on PATH; nothing is
    submitted); without SLURM the launcher says so in one line and names the local executor."""
    from ncprompt.config.grid import SlurmSection
    from ncprompt.protocols.launchers import LaunchError
    from ncprompt.protocols.launchers.slurm import executor

    pytest.importorskip("submitit")
    section = SlurmSection(partition="gpu", account="lab", time_min=90, cpus_per_cell=8, gpus_per_cell=1, mem_gb=32,
                           array_parallelism=2, sbatch={"qos": "high"}, setup=["module load cuda"])
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LaunchError, match="srun.*--slurm-cluster local"):
        executor(section, tmp_path / "grid")
    (tmp_path / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "srun").chmod(0o755)
    ex = executor(section, tmp_path / "grid")
    ex._executor.parameters["map_count"] = 4  # (what map_array sets for 4 cells)
    script = ex._executor._make_submission_file_text("python -m submitit.core._submit", "uid")
    for line in ("--partition=gpu", "--account=lab", "--time=90", "--cpus-per-task=8", "--gpus-per-node=1",
                 "--mem=32GB", "--array=0-3%2", "--qos=high"):
        assert f"#SBATCH {line}\n" in script, line
    assert "\nmodule load cuda\n" in script and str(tmp_path / "grid" / "submitit") in script
