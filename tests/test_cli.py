"""The command line: help and parsing without models, one-line errors, one small end-to-end run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from ncprompt.cli import build_parser, main

COMMANDS = ("models", "datasets", "methods", "presets", "zeroshot", "train", "eval", "demo", "protocol", "analyze",
            "report", "tables", "evidence")


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_every_command_has_help_with_defaults(capsys):
    assert all(c in _help(capsys) for c in COMMANDS)
    for c in COMMANDS:
        _help(capsys, c)
    out = _help(capsys, "train")
    for flag in ("--n-ctx", "--kg-weight", "--depth", "--meta-reduction", "--warmup-epochs", "--lambda-lc", "--set",
                 "--preset", "--no-resume"):
        assert flag in out, flag
    assert "default 0.002" in out and "cocoop 4" in out  # defaults shown, per method where they differ


def test_help_loads_nothing_heavy():
    code = ("import sys; from ncprompt.cli import main\n"
            "for argv in (['--help'], ['train', '--help'], ['protocol', '--help']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'open_clip', 'numpy', 'matplotlib') if m in sys.modules]\n"
            "assert not heavy, heavy")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def _run(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ncprompt.cli", *argv], capture_output=True, text=True,
                          timeout=300, **kw)


def test_cli_errors_are_one_line_with_nonzero_exit(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: 5\n")
    cases = [(["train", "--seed", "-1"], "train.seed"),
             (["train", "--config", str(bad)], "train: Input should be a valid dictionary"),
             (["train", "--output", str(tmp_path / "file")], "run.output"),
             (["zeroshot", "--cache-dir", str(tmp_path / "file")], "run.cache_dir"),
             (["train", "--method", "zeroshot", "--npt"], "npt.enabled"),
             (["train", "--csc", "--protocol", "base2new"], "method.class_specific"),
             (["train", "--protocol", "sideways"], "--protocol"),
             (["train", "--config", str(tmp_path / "none.yaml")], "does not exist")]
    for i, (argv, needle) in enumerate(cases):
        if i < 2:  # as a user sees it: a process, its exit status and stderr
            r = _run(*argv)
            code, out, err = r.returncode, r.stdout, r.stderr
        else:
            try:
                code = main(argv)
            except SystemExit as e:  # argparse's usage errors
                code = e.code
            out, err = capsys.readouterr()
        assert code == 2, (argv, err)
        assert err.count("\n") == 1 and needle in err and "Traceback" not in err, (argv, err)
        assert not out


def test_broken_pipe_is_quiet(monkeypatch, capsys):
    """`ncprompt ... | head -1`: the reader left; no traceback, no message."""
    import io

    read, write = os.pipe()
    os.close(read)
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(os.fdopen(write, "wb", buffering=0), write_through=True))
    assert main(["presets", "--show"]) == 141
    assert capsys.readouterr().err == ""


def test_runtime_errors_and_interrupts_are_one_line(monkeypatch, capsys, tmp_path):
    import ncprompt.protocols.experiment as ex

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ex, "Experiment", boom)
    assert main(["train", "--output", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err
    monkeypatch.setattr(ex, "Experiment", lambda *a, **k: 1 / 0)
    assert main(["train"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ZeroDivisionError" in err and "--debug" in err
    assert main(["--debug", "train"]) == 1 and "Traceback" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_refused(capsys):
    assert main(["train", "--device", "cuda", "--model", "tiny-clip"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_train_then_eval_on_image_folder(image_folder, tmp_path, capsys):
    out_dir = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  views: 2\n  batch_size: 4\nmethod:\n  name: coop\n  n_ctx: 4\n")
    args = ["--no-progress", "train", "--config", str(cfg), "--model", "tiny-clip", "--dataset", "folder",
            "--root", str(image_folder), "--shots", "2", "--epochs", "2", "--output", str(out_dir),
            "--cache-dir", str(tmp_path / "cache"), "--npt", "--protocol", "base2new"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "RANDOM weights" in printed and "HM" in printed
    res = json.loads((out_dir / "results.json").read_text())
    assert res["npt"] and res["epochs_run"] == 2 and "hm" in res and res["base"]["classnames"]
    assert len((out_dir / "metrics.jsonl").read_text().splitlines()) == 2
    assert main(["--no-progress", "eval", str(out_dir), "--json", str(tmp_path / "e.json")]) == 0
    again = json.loads((tmp_path / "e.json").read_text())
    assert again["base"]["top1"] == pytest.approx(res["base"]["top1"])
    assert again["base"]["nc"]["nc4"] == pytest.approx(res["base"]["nc"]["nc4"])  # training's class means
    # the same command again resumes (nothing to train) and reports the same numbers
    assert main(args) == 0 and "HM" in capsys.readouterr().out
    # other settings into the same folder: refused, one line naming the key, folder untouched
    before = (out_dir / "config.yaml").read_text()
    assert main([*args, "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "train.lr 0.002 -> 0.01" in err and "--no-resume" in err and err.count("\n") == 1
    assert (out_dir / "config.yaml").read_text() == before and (out_dir / "results.json").is_file()
    assert main(["--no-progress", "zeroshot", "--model", "tiny-clip", "--dataset", "folder", "--root",
                 str(image_folder), "--cache-dir", str(tmp_path / "cache")]) == 0
