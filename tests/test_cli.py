"""CLI smoke runs (in-process, with the tiny test architecture) and config validation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ncprompt.cli import main
from ncprompt.config import ConfigError, RunConfig


def test_help_runs_as_console_script():
    out = subprocess.run([sys.executable, "-m", "ncprompt.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout and "zeroshot" in out.stdout
    for sub in ("train", "zeroshot", "eval", "models", "datasets"):
        r = subprocess.run([sys.executable, "-m", "ncprompt.cli", sub, "--help"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_models_and_datasets(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "ViT-B-16" in out and "tiny-clip" in out
    assert main(["datasets"]) == 0
    assert "fashion_mnist" in capsys.readouterr().out


def test_train_then_eval_on_image_folder(image_folder, tmp_path, capsys):
    out_dir = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  views: 2\n  batch_size: 4\nmethod_options:\n  n_ctx: 4\n")
    args = ["--no-progress", "train", "--config", str(cfg), "--model", "tiny-clip", "--dataset", "folder",
            "--root", str(image_folder), "--shots", "2", "--epochs", "2", "--output", str(out_dir),
            "--cache-dir", str(tmp_path / "cache"), "--npt", "--protocol", "base2new"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "RANDOM weights" in printed and "HM" in printed
    res = json.loads((out_dir / "results.json").read_text())
    assert res["npt"] and res["epochs_run"] == 2 and "hm" in res
    assert len((out_dir / "metrics.jsonl").read_text().splitlines()) == 2
    assert main(["--no-progress", "eval", str(out_dir), "--json", str(tmp_path / "e.json")]) == 0
    again = json.loads((tmp_path / "e.json").read_text())
    assert again["base"]["top1"] == pytest.approx(res["base"]["top1"])
    assert main(["--no-progress", "zeroshot", "--model", "tiny-clip", "--dataset", "folder", "--root",
                 str(image_folder), "--cache-dir", str(tmp_path / "cache")]) == 0


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["train", "--model", "nope", "--dataset", "folder", "--root", str(tmp_path)]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["train", "--model", "tiny-clip", "--dataset", "folder", "--root", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--model", "tiny-clip", "--imbalance", "2", "--shots", "4"]) == 2
    assert "imbalance" in capsys.readouterr().err


def test_config_validation():
    with pytest.raises(ConfigError, match="unknown key"):
        RunConfig.from_dict({"modle": "x"})
    with pytest.raises(ValueError, match="epochs"):
        RunConfig.from_dict({"train": {"epochs": 0}})
    with pytest.raises(ValueError, match="lc_form"):
        RunConfig.from_dict({"npt": {"lc_form": "bogus"}})
