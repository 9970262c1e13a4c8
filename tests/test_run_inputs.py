"""A run folder is reused only on the weights and data it ran on (inputs.json), not only on its config:
changed weights, images or class names under an unchanged config are refused with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ncprompt.backbones import load_backbone
from ncprompt.config import RunConfig
from ncprompt.engine.run_folder import RunFolderError
from ncprompt.protocols.experiment import Experiment
from ncprompt.protocols.grid import MethodSpec, run_grid


def _cfg(root, tmp_path) -> RunConfig:
    return RunConfig.from_dict({
        "run": {"model": "tiny-clip", "diagnostics": False, "cache_dir": str(tmp_path / "cache")},
        "data": {"dataset": "folder", "root": str(root), "protocol": "base2new", "shots": 2,
                 "options": {"test_fraction": 0.5}},
        "method": {"name": "coop", "n_ctx": 2}, "train": {"epochs": 1, "views": 1, "batch_size": 2}})


def _repaint(folder, cls: str) -> None:
    """Invert every image of one class (same files, other pixels)."""
    for p in sorted((folder / cls).iterdir()):
        a = np.asarray(Image.open(p))
        Image.fromarray((255 - a).astype(np.uint8)).save(p)


def test_inputs_are_recorded_and_a_change_is_refused(image_folder, tmp_path, one_thread):
    cfg, out = _cfg(image_folder, tmp_path), tmp_path / "run"
    first = Experiment(cfg).run(out)
    rec = json.loads((out / "inputs.json").read_text())
    assert set(rec) == {"weights", "classes", "data.train", "data.test.base", "data.test.new", "portable.data.train",
                        "portable.data.test.base", "portable.data.test.new"}  # portable: eval --root of a moved set
    assert rec["weights"].startswith("random-init sha256:")
    again = Experiment(cfg).run(out)  # same settings, weights and data: the finished run is resumed
    assert again.splits["base"].top1 == first.splits["base"].top1

    torch.manual_seed(123)  # other weights, same architecture and config
    other = load_backbone("tiny-clip", device="cpu")
    with pytest.raises(RunFolderError, match=r"other inputs.*changed: weights\).*--no-resume") as e:
        Experiment(cfg, backbone=other).run(out)
    assert "\n" not in str(e.value)

    _repaint(image_folder, "bag")  # same file names, other pixels
    with pytest.raises(RunFolderError, match=r"changed: data\.test\.") as e:
        Experiment(cfg).run(out)
    assert json.loads((out / "inputs.json").read_text()) == rec  # nothing overwritten
    Experiment(cfg).run(out, resume=False)  # --no-resume starts over and records the new inputs
    assert json.loads((out / "inputs.json").read_text()) != rec


def test_a_run_without_recorded_inputs_is_not_reused(image_folder, tmp_path, one_thread):
    cfg, out = _cfg(image_folder, tmp_path), tmp_path / "run"
    Experiment(cfg).run(out)
    (out / "inputs.json").unlink()  # as an earlier ncprompt left it
    with pytest.raises(RunFolderError, match="recorded no inputs.json"):
        Experiment(cfg).run(out)


def test_grid_does_not_reuse_a_cell_whose_data_changed(image_folder, tmp_path, one_thread):
    base = {"model": "tiny-clip", "dataset": "folder", "root": str(image_folder), "protocol": "base2new",
            "shots": 2, "cache_dir": str(tmp_path / "cache"), "dataset_options": {"test_fraction": 0.5},
            "method_options": {"n_ctx": 2}, "train": {"epochs": 1, "views": 1, "batch_size": 2}}
    methods = [MethodSpec.parse("zeroshot"), MethodSpec.parse("coop")]
    out = tmp_path / "grid"
    run_grid(base, ["folder"], methods, [1], out, log=lambda s: None)
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("results.json")}
    run_grid(base, ["folder"], methods, [1], out, log=lambda s: None)  # unchanged: reused, not rewritten
    assert {p: p.stat().st_mtime_ns for p in out.rglob("results.json")} == stamp
    (image_folder / "sneaker").rename(image_folder / "running shoe")  # a class renamed, same images
    with pytest.raises(RunFolderError, match=r"other inputs.*classes"):
        run_grid(base, ["folder"], methods, [1], out, log=lambda s: None)
    rows = run_grid(base, ["folder"], methods, [1], out, log=lambda s: None, resume=False)
    assert len(rows) == 2
