"""Runs that explain themselves: train.log's header and results line, results.json's config, environment,
templates and confusion matrix (still read by the old reader), epochs counted from 1 (metrics.jsonl,
checkpoint names; an earlier version's 0-based checkpoint still resumes), "finished; re-evaluating",
``--version`` / ``python -m ncprompt``, true help, the cache location, the small-image warning, and
feature-extraction progress lines in non-terminal logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ncprompt.cli import build_parser, main
from ncprompt.engine.results import RunResult, SplitResult, read_results
from ncprompt.engine.run_header import command_line, small_image_warning

SRC = str(Path(__file__).resolve().parent.parent / "src")
ARGS = ["--model", "pocket", "--dataset", "emoji_hands_openmoji", "--protocol", "base2new", "--shots", "2",
        "--max-test-per-class", "2", "--n-ctx", "4", "--views", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("header")
    out = root / "run"
    assert main(["train", *ARGS, "--epochs", "3", "--output", str(out), "--cache-dir", str(root / "cache")]) == 0
    return out


def test_train_log_header_and_results_line(run):
    lines = (run / "train.log").read_text().splitlines()
    head = "\n".join(lines[:12])
    assert lines[0].startswith("=== ncprompt ")
    for needle in ("versions: torch ", "open_clip ", "command: ncprompt train --model pocket",
                   "device: cpu, dtype fp32, threads ", "model: pocket, weights file:pocket.safetensors:", " sha256:",
                   "dataset: emoji_hands_openmoji", "train 10 images, test base 10, test new 10",
                   "classes (10): vulcan salute", "base classes: ", "new classes: ", "templates: {} emoji"):
        assert needle in head, needle
    assert lines[-1].startswith("results (") and "[coop] base: top1" in lines[-1] and "HM" in lines[-1]
    assert any("epoch 3/3" in x for x in lines)


def test_results_json_explains_itself_and_stays_readable(run):
    d = json.loads((run / "results.json").read_text())
    assert d["config"]["method"]["n_ctx"] == 4 and d["config"]["train"]["epochs"] == 3
    env = d["environment"]
    assert set(env["versions"]) >= {"ncprompt", "torch", "open_clip", "python"}
    assert env["command"].startswith("ncprompt train") and env["device"] == "cpu" and env["threads"] >= 1
    assert d["info"]["templates"] == ["{} emoji"]
    base = d["base"]
    assert sum(sum(row.values()) for row in base["confusion"].values()) == base["n"]
    assert list(base["confusion"]) == base["classnames"]
    correct = sum(base["confusion"][c].get(c, 0) for c in base["classnames"])
    assert 100.0 * correct / base["n"] == pytest.approx(base["top1"])
    assert base["per_class_by_name"] == dict(zip(base["classnames"], base["per_class"]))
    res = read_results(run)  # the one reader: new keys read back, the written-only one ignored
    assert res.splits["base"].confusion == base["confusion"] and res.config == d["config"]
    old = {k: v for k, v in d.items() if k not in ("config", "environment")}  # an earlier version's file
    for s in ("base", "new"):
        old[s] = {k: v for k, v in old[s].items() if k not in ("confusion", "per_class_by_name")}
    again = RunResult.from_dict(old)
    assert again.splits["base"].confusion is None and again.config is None and again.hm == pytest.approx(d["hm"])
    assert "per_class_by_name" not in SplitResult.from_dict(base).__dict__


def test_epochs_are_counted_from_one(run):
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3] and {r["epochs"] for r in records} == {3}
    names = sorted(p.name for p in (run / "checkpoint").iterdir())
    assert names == ["extra-e3.safetensors", "optim-e3.safetensors", "prompt-e3.safetensors", "state.json"]
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 3 and state["counted_from"] == 1


def test_rerun_of_a_finished_run_says_re_evaluating(run, capsys):
    assert main(["train", *ARGS, "--epochs", "3", "--output", str(run),
                 "--cache-dir", str(run.parent / "cache")]) == 0
    err = capsys.readouterr().err
    assert "finished (3/3 epochs" in err and "re-evaluating" in err and "resuming" not in err


def test_an_earlier_versions_checkpoint_still_resumes(run, tmp_path, capsys):
    """A 0-based checkpoint (state.json "epoch" 1 = two epochs, files -e1, metrics epochs 0 and 1) resumes at
    epoch 3, and the folder is rewritten counted from 1."""
    from safetensors.torch import load_file

    old = tmp_path / "old"
    assert main(["train", *ARGS, "--epochs", "2", "--output", str(old), "--cache-dir", str(run.parent / "cache")]) == 0
    ck = old / "checkpoint"
    state = json.loads((ck / "state.json").read_text())
    for kind in ("prompt", "optim", "extra"):
        (ck / f"{kind}-e2.safetensors").rename(ck / f"{kind}-e1.safetensors")
    state.update(epoch=1, files={k: f"{k}-e1.safetensors" for k in ("prompt", "optim", "extra")})
    del state["counted_from"]
    (ck / "state.json").write_text(json.dumps(state))
    records = [json.loads(x) for x in (old / "metrics.jsonl").read_text().splitlines()]
    (old / "metrics.jsonl").write_text("".join(json.dumps({**{k: v for k, v in r.items() if k != "epochs"},
                                                           "epoch": r["epoch"] - 1}) + "\n" for r in records))
    (old / "results.json").unlink()
    # its first two epochs are those of a 3-epoch run (warm-up, then the cosine's start): record 3 epochs and resume
    cfg = (old / "config.yaml").read_text().replace("epochs: 2", "epochs: 3")
    (old / "config.yaml").write_text(cfg)
    capsys.readouterr()
    assert main(["train", *ARGS, "--epochs", "3", "--output", str(old), "--cache-dir", str(run.parent / "cache")]) == 0
    assert "resuming from epoch 3/3 (2 epochs done" in capsys.readouterr().err
    assert [json.loads(x)["epoch"] for x in (old / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert sorted(p.name for p in ck.iterdir())[0] == "extra-e3.safetensors"
    a, b = load_file(str(run / "prompt.safetensors")), load_file(str(old / "prompt.safetensors"))
    assert all(a[k].equal(b[k]) for k in a)  # the same run as the uninterrupted one, bit for bit


def test_version_and_python_m():
    from ncprompt import __version__

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--version"])
    assert e.value.code == 0
    out = subprocess.run([sys.executable, "-m", "ncprompt", "--version"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": SRC}, check=True).stdout
    assert out.strip() == f"ncprompt {__version__}"
    assert command_line(["/x/ncprompt/__main__.py", "train", "--set", "a=b c"]) == "ncprompt train --set 'a=b c'"


def _help(*cmd: str) -> str:
    p = build_parser()
    sub = next(a for a in p._actions if a.dest == "command").choices[cmd[0]]
    return " ".join(sub.format_help().split())


def test_help_is_true():
    assert "[data.protocol; default 'base2new']" in _help("protocol")
    assert "[data.protocol; default 'all']" in _help("train")
    h = _help("train")
    no_cache = h[h.index("--no-cache "):][:160]
    assert "neither read nor write the feature cache" in no_cache
    assert "XDG_CACHE_HOME" in h


def test_cache_location_honours_xdg(tmp_path):
    from ncprompt.data.cache import default_cache_dir

    assert default_cache_dir({"NCPROMPT_CACHE": str(tmp_path / "a"), "XDG_CACHE_HOME": "/x"}) == tmp_path / "a"
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "ncprompt"
    assert default_cache_dir({"NCPROMPT_CACHE": "", "XDG_CACHE_HOME": ""}) == Path.home() / ".cache" / "ncprompt"


def test_small_image_warning():
    w = small_image_warning([(64, 64), (80, 90)], 0.08, True)
    assert w is not None and "64 px" in w and "--no-flip --crop-min 0.5" in w
    assert small_image_warning([(64, 64)], 0.5, False) is None  # the flags it names silence it
    assert small_image_warning([(224, 300)], 0.08, True) is None  # photos
    assert small_image_warning([(64, 64)], 0.08, False) is not None  # crops alone still cut small images


def test_small_images_warned_in_the_log(run):
    text = (run / "train.log").read_text()
    assert "the training images are small (32 px" in text and "--no-flip --crop-min 0.5" in text


def test_progress_lines_where_no_bar_can_be_drawn(capsys, monkeypatch):
    from ncprompt import utils

    monkeypatch.setitem(utils._PROGRESS, "enabled", False)
    monkeypatch.setitem(utils._PROGRESS, "lines", True)
    clock = iter([0.0, 0.0, 5.0, 11.0, 20.0, 45.0, 46.0])
    monkeypatch.setattr(utils.time, "monotonic", lambda: next(clock))
    bar = utils.progress(total=100, desc="encoding", unit="img")
    assert isinstance(bar, utils.LineProgress)
    for _ in range(5):
        bar.update(10)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3  # after 11 s, after 30 s more, and the last one
    assert "[encoding] 30/100 (30%) img" in lines[0] and "50/100 (50%)" in lines[-1]
    monkeypatch.setattr(utils.time, "monotonic", lambda: 0.0)
    quick = utils.progress(total=3, desc="quick")
    quick.update(3)
    quick.close()
    assert capsys.readouterr().err == ""  # a fast job says nothing
    from ncprompt.engine.progress import quiet

    with quiet():
        assert not isinstance(utils.progress(total=1), utils.LineProgress)  # a grid's runs stay quiet
