"""Files you can trust (issue 7): atomic, durable writes with the user's umask; one-line errors for
a full disk, a read-only folder or a file in the way, the previous file left intact; JSONL appends
of whole lines and a torn last line tolerated; stray temporary files swept; no NaN written."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ncprompt.utils import (
    FileError,
    append_jsonl,
    atomic_write,
    read_jsonl,
    save_safetensors,
    sweep_tmp,
    write_json,
    write_jsonl,
)


def _disk_full(p):
    """A write callback that hits a real ENOSPC (the kernel's /dev/full) halfway through."""
    p.write_text("half a file")
    with open("/dev/full", "w") as f:
        f.write("x")


def _tmp_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_is_one_line_and_keeps_the_previous_file(tmp_path):
    f = tmp_path / "results.json"
    write_json(f, {"top1": 50.0})
    with pytest.raises(FileError, match=r"cannot write .*results.json: the disk is full; free some space") as e:
        atomic_write(f, _disk_full)
    assert "\n" not in str(e.value)
    assert json.loads(f.read_text()) == {"top1": 50.0} and _tmp_files(tmp_path) == []
    with pytest.raises(FileError, match="the disk is full"):
        append_jsonl("/dev/full", {"epoch": 0})


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_users_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        save_safetensors(tmp_path / "b.safetensors", {})
        append_jsonl(tmp_path / "c.jsonl", {"x": 1})
    finally:
        os.umask(old)
    for name in ("a.json", "b.safetensors", "c.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_read_only_folder_and_a_file_in_the_way(tmp_path):
    if os.access("/sys", os.W_OK) and os.geteuid() != 0:
        pytest.skip("no read-only folder available")
    target = "/sys/ncprompt-test/results.json"
    with pytest.raises(FileError, match=r"cannot write /sys/.*permission denied .*choose a writable --output"):
        write_json(target, {"x": 1})
    (tmp_path / "out").write_text("a file, not a folder")
    with pytest.raises(FileError, match=r"a file stands where a folder is needed.*choose another --output"):
        write_json(tmp_path / "out" / "results.json", {"x": 1})


def test_non_finite_numbers_are_never_written(tmp_path):
    f = tmp_path / "results.json"
    write_json(f, {"all": {"top1": 50.0}})
    with pytest.raises(FileError, match=r"NaN/inf.*results.json at key 'all.nc.1'"):
        write_json(f, {"all": {"top1": 50.0, "nc": [0.1, float("nan")]}})
    assert json.loads(f.read_text()) == {"all": {"top1": 50.0}}
    with pytest.raises(FileError, match="at key 'loss'"):
        append_jsonl(tmp_path / "m.jsonl", {"epoch": 0, "loss": float("inf")})
    assert not (tmp_path / "m.jsonl").exists() or (tmp_path / "m.jsonl").read_text() == ""


def test_torn_last_line_is_dropped_and_appends_continue(tmp_path):
    f = tmp_path / "metrics.jsonl"
    write_jsonl(f, [{"epoch": 0}, {"epoch": 1}])
    with open(f, "a") as fh:  # a process killed in the middle of an append
        fh.write('{"epoch": 2, "lo')
    assert read_jsonl(f) == [{"epoch": 0}, {"epoch": 1}]
    write_jsonl(f, read_jsonl(f))  # what the trainer does on resume
    append_jsonl(f, {"epoch": 2})
    assert read_jsonl(f) == [{"epoch": 0}, {"epoch": 1}, {"epoch": 2}]
    f.write_text('{"epoch": 0}\nnot json\n{"epoch": 2}\n')
    with pytest.raises(FileError, match="metrics.jsonl: line 2 is not a JSON record"):
        read_jsonl(f)


def test_stray_tmp_files_are_swept(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    stray = [tmp_path / ".results.json.k2j3.tmp", tmp_path / "checkpoint" / ".state.json.a8f1.tmp"]
    for p in stray:
        p.write_text("killed mid-write")
    keep = tmp_path / "notes.tmp"  # not one of ours (no leading dot): kept
    keep.write_text("x")
    assert sweep_tmp(tmp_path, older_than_s=3600) == []
    assert sorted(sweep_tmp(tmp_path)) == sorted(stray)
    assert not any(p.exists() for p in stray) and keep.exists()


def test_library_dependencies_are_ranges_not_pins():
    """A library pins nothing exactly (issue 8's trap); the set-up script pins the tested set."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    assert deps and not [d for d in deps if "==" in d]
    assert "torch==" in (root / "scripts" / "setup.sh").read_text()
