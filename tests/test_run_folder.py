"""Run-folder identity (config fingerprint) and ownership (exclusive lock), and grid workers that die
with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ncprompt.config import RunConfig
from ncprompt.engine.run_folder import RunFolder, RunFolderError

ROOT = Path(__file__).parents[1]
TINY = ROOT / "tests" / "assets" / "tiny-clip.json"


def _cfg(**over) -> RunConfig:
    base = {"run": {"model": "tiny-clip", "diagnostics": False}, "data": {"shots": 2},
            "method": {"name": "coop", "n_ctx": 2}, "train": {"epochs": 3, "views": 1, "batch_size": 8}}
    for k, v in over.items():
        section, key = k.split("__")
        base.setdefault(section, {})[key] = v
    return RunConfig.from_dict(base)


def test_changed_config_is_refused_naming_the_keys(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert folder.prepare(_cfg()) == "new"
    before = (folder.path / "config.yaml").read_text()
    assert folder.check(_cfg(run__output="elsewhere", run__cache_dir=str(tmp_path))) == "resume"
    with pytest.raises(RunFolderError) as e:
        folder.prepare(_cfg(train__lr=0.01, method__n_ctx=4, train__seed=2))
    msg = str(e.value)
    assert "method.n_ctx 2 -> 4" in msg and "train.lr 0.002 -> 0.01" in msg and "train.seed 1 -> 2" in msg
    assert "--no-resume" in msg and "--output" in msg and "\n" not in msg
    assert (folder.path / "config.yaml").read_text() == before  # nothing overwritten
    (folder.path / "results.json").write_text("{}")
    assert folder.prepare(_cfg(train__lr=0.01), resume=False) == "restart"  # --no-resume clears the old run
    assert not (folder.path / "results.json").exists() and "lr: 0.01" in (folder.path / "config.yaml").read_text()


def test_foreign_folders_and_files_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not a run folder"):
        RunFolder(tmp_path).check(_cfg())
    with pytest.raises(RunFolderError, match="existing file"):
        RunFolder(tmp_path / "notes.txt").check(_cfg())
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "metrics.jsonl").write_text("")
    with pytest.raises(RunFolderError, match="no config.yaml"):
        RunFolder(tmp_path / "half").check(_cfg())


def test_folder_of_an_earlier_version_is_not_reused(tmp_path):
    """Flat config.yaml files predate the typed tree: their defaults may differ, so no silent reuse."""
    (tmp_path / "config.yaml").write_text("model: pocket\nmethod: kgcoop\nmethod_options: {}\n")
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(RunFolderError, match="earlier ncprompt.*--no-resume"):
        RunFolder(tmp_path).check(_cfg())
    assert RunFolder(tmp_path).check(_cfg(), resume=False) == "restart"


def test_same_config_resumes(tiny_backbone, fmnist_small, tmp_path):
    from ncprompt.protocols.experiment import Experiment

    cfg = _cfg(run__cache_dir=str(tmp_path / "c"))
    assert Experiment(cfg, tiny_backbone, fmnist_small).run(tmp_path / "run", stop_after=1) == \
        {"interrupted_at_epoch": 1}
    res = Experiment(cfg, tiny_backbone, fmnist_small).run(tmp_path / "run")
    assert res.epochs_run == 3 and res.fingerprint == cfg.fingerprint()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3
    with pytest.raises(RunFolderError, match="train.epochs 3 -> 4"):
        Experiment(_cfg(train__epochs=4, run__cache_dir=str(tmp_path / "c")), tiny_backbone, fmnist_small).run(
            tmp_path / "run")


HOLD = textwrap.dedent("""
    import sys, time
    from ncprompt.engine.run_folder import RunFolder
    RunFolder(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(60)
""")


def test_second_process_on_a_folder_is_refused_and_a_crash_releases_the_lock(tmp_path, capsys):
    from ncprompt.cli import main

    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train", "--model", "tiny-clip", "--output", str(run)]) == 2
        err = capsys.readouterr().err
        assert f"in use by another ncprompt process (pid {holder.pid})" in err and err.count("\n") == 1
    finally:
        holder.kill()  # SIGKILL: the kernel releases the flock
        holder.wait()
    folder = RunFolder(run)
    folder.acquire()
    folder.release()


GRID = textwrap.dedent("""
    import sys, open_clip
    open_clip.add_model_config(sys.argv[1])
    from ncprompt.cli import main
    sys.exit(main(["--no-progress", "protocol", "--model", "tiny-clip", "--datasets", "folder", "--root", sys.argv[2],
                   "--methods", "coop", "coop+npt", "--seeds", "1", "2", "--shots", "2", "--epochs", "400",
                   "--views", "1", "--batch-size", "2", "--cache-dir", sys.argv[3], "--workers", "2",
                   "--output", sys.argv[4]]))
""")


def _children(pid: int) -> set[int]:
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir() or sys.platform != "linux", reason="reads /proc")
def test_killed_protocol_leaves_no_worker_writing(image_folder, tmp_path):
    out = tmp_path / "grid"
    p = subprocess.Popen([sys.executable, "-c", GRID, str(TINY), str(image_folder), str(tmp_path / "c"), str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    workers: set[int] = set()
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not list(out.rglob("metrics.jsonl")):
            time.sleep(0.5)
        assert list(out.rglob("metrics.jsonl")), "the grid never started training"
        workers = _children(p.pid)
        assert workers
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "a grid worker outlived its parent"
        sizes = {f: f.stat().st_size for f in out.rglob("*") if f.is_file()}
        time.sleep(2)
        assert sizes == {f: f.stat().st_size for f in out.rglob("*") if f.is_file()}  # nobody writes
    finally:
        if p.poll() is None:
            p.kill()
        for w in workers | _children(p.pid):
            if _alive(w):
                os.kill(w, signal.SIGKILL)
