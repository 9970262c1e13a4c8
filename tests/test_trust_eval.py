"""``ncprompt eval RUN`` scores only what was trained (issue 19, sections 4 and 5): run folders that travel
(absolute data roots, ``--root NEW`` for a moved dataset checked by content), and a one-line refusal for a
missing, NaN or integer prompt, changed weights, overrides of trained settings and ``--json`` onto run files."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from ncprompt.cli import main

TRAIN = ["train", "--model", "tiny-clip", "--dataset", "folder", "--root", "imgs", "--shots", "2", "--epochs", "2",
         "--views", "1", "--batch-size", "4", "--n-ctx", "2", "--no-diagnostics"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fmnist_arrays):
    """A CoOp run on a 3-class image folder, trained from the folder's parent with the relative ``--root imgs``;
    returns (the folder holding imgs/ and run/, the run's top-1)."""
    import os

    base = tmp_path_factory.mktemp("trained")
    for name, cls in [("bag", 8), ("sneaker", 7), ("trouser", 1)]:
        d = base / "imgs" / name
        d.mkdir(parents=True)
        for j, i in enumerate(np.flatnonzero(fmnist_arrays["test_y"] == cls)[:6]):
            Image.fromarray(fmnist_arrays["test_x"][i]).save(d / f"{j}.png")
    before = os.getcwd()
    os.chdir(base)
    try:
        torch.set_num_threads(1)
        assert main(["--no-progress", *TRAIN, "--output", "run", "--cache-dir", str(base / "cache")]) == 0
    finally:
        os.chdir(before)
        torch.set_num_threads(2)
    top1 = json.loads((base / "run" / "results.json").read_text())["all"]["top1"]
    return base, top1


@pytest.fixture()
def run(trained, tmp_path):
    """A copy of the trained run folder, free to damage."""
    shutil.copytree(trained[0] / "run", tmp_path / "run")
    return tmp_path / "run"


def _eval(run: Path, *args: str, capsys) -> tuple[int, str, str]:
    code = main(["--no-progress", "eval", str(run), "--set", f"run.cache_dir={run.parent / 'cache'}", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _refused(code: int, err: str, *needles: str) -> None:
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def test_run_folder_travels_and_takes_a_moved_dataset(trained, run, tmp_path, monkeypatch, capsys, one_thread):
    """Before: config.yaml kept ``root: imgs``, so eval from any other directory failed."""
    base, top1 = trained
    cfg = (run / "config.yaml").read_text()
    assert f"root: {base / 'imgs'}" in cfg
    inputs = json.loads((run / "inputs.json").read_text())
    assert {"portable.data.train", "portable.data.test.all"} <= set(inputs)
    monkeypatch.chdir(tmp_path)
    code, out, _ = _eval(run, "--json", str(tmp_path / "e.json"), capsys=capsys)
    assert code == 0 and json.loads((tmp_path / "e.json").read_text())["all"]["top1"] == pytest.approx(top1)
    # the dataset moved (copied: new paths, new file times): --root NEW, checked by content
    moved = tmp_path / "elsewhere" / "data"
    shutil.copytree(base / "imgs", moved)
    code, out, _ = _eval(run, "--root", str(moved), "--json", str(tmp_path / "m.json"), capsys=capsys)
    assert code == 0 and json.loads((tmp_path / "m.json").read_text())["all"]["top1"] == pytest.approx(top1)
    # a folder with other content under the same class names is not the moved dataset
    other = tmp_path / "other"
    shutil.copytree(base / "imgs", other)
    png = next((other / "bag").glob("*.png"))
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(png)
    code, _, err = _eval(run, "--root", str(other), capsys=capsys)
    _refused(code, err, f"--root {other} does not hold the data", "--targets")


def test_a_run_without_its_prompt_is_refused(run, capsys, one_thread):
    """Before: eval scored the untrained context and exited 0."""
    (run / "prompt.safetensors").unlink()
    shutil.rmtree(run / "checkpoint")
    code, _, err = _eval(run, capsys=capsys)
    _refused(code, err, "holds no learned prompt", "untrained context")


@pytest.mark.parametrize("bad", ["nan", "int"])
def test_a_nan_or_integer_prompt_is_refused(run, capsys, bad, one_thread):
    """Before: a NaN prompt scored chance, an integer one was cast to float; both exit 0."""
    state = load_file(str(run / "prompt.safetensors"))
    key = next(iter(state))
    state[key] = state[key].clone().fill_(float("nan")) if bad == "nan" else state[key].round().to(torch.int32)
    save_file(state, str(run / "prompt.safetensors"))
    code, _, err = _eval(run, capsys=capsys)
    _refused(code, err, "prompt.safetensors", "holds NaN/inf" if bad == "nan" else "is torch.int32")


def test_changed_weights_are_refused(run, capsys, one_thread):
    """Before: eval never compared the weights with inputs.json (train refuses the same folder)."""
    inputs = json.loads((run / "inputs.json").read_text())
    inputs["weights"] = inputs["weights"].rsplit(":", 1)[0] + ":0123456789abcdef"  # trained on other weights
    (run / "inputs.json").write_text(json.dumps(inputs))
    code, _, err = _eval(run, capsys=capsys)
    _refused(code, err, "was trained on other weights", "0123456789abcdef")
    (run / "inputs.json").unlink()  # a folder of an earlier version: nothing to check against
    code, _, err = _eval(run, capsys=capsys)
    _refused(code, err, "recorded no inputs.json")


@pytest.mark.parametrize("override", ["run.pretrained=openai", "method.class_token_position=front", "run.model=RN50",
                                      "train.seed=3", "data.shots=4", "method.name=kgcoop"])
def test_overrides_of_trained_settings_are_refused(run, capsys, override):
    """Before: eval scored the prompt under settings it was not trained with (another position, weights ...)."""
    key = override.split("=")[0]
    code, _, err = _eval(run, "--set", override, capsys=capsys)
    _refused(code, err, key, "not trained with", "eval may change only")


def test_eval_side_overrides_are_allowed(run, capsys, one_thread):
    code, out, _ = _eval(run, "--max-test-per-class", "2", "--set", "run.diagnostics=true", capsys=capsys)
    assert code == 0 and "all: top1" in out


@pytest.mark.parametrize("target", ["results.json", "config.yaml", "checkpoint/state.json"])
def test_json_onto_the_runs_own_files_is_refused(run, capsys, target):
    """Before: --json RUN/results.json replaced the run's results with another evaluation's."""
    before = (run / target).read_bytes()
    code, _, err = _eval(run, "--json", str(run / target), capsys=capsys)
    _refused(code, err, "eval never overwrites a run's files")
    assert (run / target).read_bytes() == before


def test_an_unfinished_run_is_evaluated_with_a_warning(run, capsys, caplog, one_thread):
    (run / "prompt.safetensors").unlink()
    code, _, _ = _eval(run, capsys=capsys)
    assert code == 0 and "is unfinished: evaluating the prompt of its checkpoint (epoch 2/2)" in caplog.text


@pytest.mark.parametrize("stat_only", [False, True])
def test_portable_digest_follows_a_moved_folder_not_a_changed_one(tmp_path, monkeypatch, stat_only):
    """Above CONTENT_HASH_MAX_BYTES files are named by (path below the folder, size, mtime), which a move keeps;
    the location-bound digest (cache keys, resume checks) changes with the paths."""
    from ncprompt.data import cache_key
    from ncprompt.data.base import FileImages

    if stat_only:
        monkeypatch.setattr(cache_key, "CONTENT_HASH_MAX_BYTES", 0)
    src = tmp_path / "a" / "imgs"
    for k in range(3):
        (src / f"c{k}").mkdir(parents=True)
        Image.fromarray(np.full((8, 8), 40 * k, dtype=np.uint8)).save(src / f"c{k}" / "0.png")
    moved = tmp_path / "b" / "deeper" / "imgs"
    shutil.copytree(src, moved)  # copy2: bytes and mtimes kept, as mv, cp -p, rsync -a

    def images(root: Path) -> FileImages:
        return FileImages([root / f"c{k}" / "0.png" for k in range(3)], [0, 1, 2])

    a, b = images(src), images(moved)
    assert cache_key.content_digest(a, portable=True) == cache_key.content_digest(b, portable=True)
    assert cache_key.content_digest(a) != cache_key.content_digest(b)
    time.sleep(0.02)  # beyond the file system's coarse timestamp clock
    Image.fromarray(np.full((8, 8), 255, dtype=np.uint8)).save(moved / "c1" / "0.png")  # new bytes and mtime
    assert cache_key.content_digest(a, portable=True) != cache_key.content_digest(b, portable=True)


def test_target_roots_are_stored_absolute(tmp_path, monkeypatch):
    from ncprompt.config import RunConfig

    (tmp_path / "t").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = RunConfig.from_dict({"data": {"root": "~/x/../y", "targets": ["folder=t", "fashion_mnist"]}})
    assert cfg.data.root == str(Path.home() / "y")
    assert cfg.data.targets == [f"folder={tmp_path / 't'}", "fashion_mnist"]
