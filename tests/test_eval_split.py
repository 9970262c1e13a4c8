"""``data.eval_split``: scoring the validation split instead of the test split (choices are made on val)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ncprompt.config import RunConfig
from ncprompt.config.setting import setting_items, setting_key
from ncprompt.data import DataError
from ncprompt.data.base import ArrayImages
from ncprompt.protocols.experiment import Experiment


def _cfg(split: str, protocol: str = "all") -> RunConfig:
    return RunConfig.from_dict({"run": {"model": "tiny-clip", "use_cache": False, "diagnostics": False},
                                "data": {"dataset": "fmnist_small", "protocol": protocol, "eval_split": split},
                                "method": {"name": "zeroshot"}})


@pytest.fixture()
def with_val(fmnist_small, fmnist_arrays):
    """fmnist_small with a 7-per-class validation split of other images than its test split."""
    a = fmnist_arrays
    idx = np.concatenate([np.flatnonzero(a["train_y"] == k)[-7:] for k in range(10)])
    return dataclasses.replace(fmnist_small, val=ArrayImages(a["train_x"][idx], a["train_y"][idx]))


@pytest.mark.parametrize("protocol", ["all", "base2new"])
def test_val_split_is_scored(tiny_backbone, with_val, protocol, one_thread):
    """The scored images are the val split's (7 per class), not the test split's (20 per class); per-class
    counts and the predictions follow."""
    res = {s: Experiment(_cfg(s, protocol), backbone=tiny_backbone, dataset=with_val).run(None)
           for s in ("test", "val")}
    assert res["val"].info["sizes"]["scored"] == "val" and res["test"].info["sizes"]["scored"] == "test"
    for name, split in res["val"].splits.items():
        assert split.n == 7 * len(split.per_class), name
        assert res["test"].splits[name].n == 20 * len(split.per_class), name


def test_no_val_split_is_refused_before_training(tiny_backbone, fmnist_small):
    with pytest.raises(DataError, match="no validation split.*eval_split=test"):
        Experiment(_cfg("val"), backbone=tiny_backbone, dataset=fmnist_small)


def test_eval_split_separates_settings():
    """A val-scored run never averages with a test-scored one in tables (it is part of the setting key)."""
    assert setting_key(setting_items(_cfg("val"))) != setting_key(setting_items(_cfg("test")))


def test_eval_command_rescores_a_run_on_val(tmp_path, capsys, one_thread):
    """``ncprompt eval RUN --eval-split val`` scores the trained run's validation split (the test-split
    digests are not compared, the training images and weights still are); a val-scored results file says so."""
    import json

    from ncprompt.cli import main

    common = ["--no-progress", "--set", f"run.cache_dir={tmp_path / 'cache'}"]
    assert main([*common[:1], "train", "--method", "zeroshot", "--model", "tiny-clip", "--dataset", "fashion_mnist",
                 "--max-test-per-class", "3", "--output", str(tmp_path / "run"), *common[1:]]) == 0
    out = tmp_path / "val.json"
    assert main([*common[:1], "eval", str(tmp_path / "run"), "--eval-split", "val", "--json", str(out),
                 *common[1:]]) == 0
    res = json.loads(out.read_text())
    assert res["all"]["n"] == 30  # 3 per class of the 100-per-class val split
    capsys.readouterr()
