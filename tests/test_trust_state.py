"""Run and cache state that could end a run early or abort it (issue 19, section 5): a checkpoint past the
run's epochs, lost or torn metrics records, a feature-cache manifest without its checksums, a full cache
disk, and warnings that must read as one line."""

from __future__ import annotations

import errno
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ncprompt.config import RunConfig
from ncprompt.data.base import ArrayImages
from ncprompt.data.cache import CacheWarning, FeatureCache
from ncprompt.engine.checkpoint import CheckpointError
from ncprompt.protocols.experiment import Experiment


def _cfg(tmp_path: Path, epochs: int) -> RunConfig:
    return RunConfig.from_dict(dict(model="tiny-clip", method="coop", shots=2, cache_dir=str(tmp_path / "c"),
                                    method_options={"n_ctx": 2}, diagnostics=False,
                                    train={"epochs": epochs, "views": 1, "batch_size": 4, "warmup_epochs": 0}))


def _interrupted(tiny_backbone, fmnist_small, tmp_path: Path, epochs: int, done: int) -> tuple[Experiment, Path]:
    exp = Experiment(_cfg(tmp_path, epochs), backbone=tiny_backbone, dataset=fmnist_small)
    run = tmp_path / "run"
    assert exp.run(run, stop_after=done) == {"interrupted_at_epoch": done}
    return exp, run


def test_a_checkpoint_past_the_runs_epochs_is_refused(tiny_backbone, fmnist_small, tmp_path, one_thread):
    """Before: a state.json saying epoch 7 ended a 5-epoch run after the 3 epochs it had, exit 0."""
    exp, run = _interrupted(tiny_backbone, fmnist_small, tmp_path, epochs=5, done=3)
    state_file = run / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    state["epoch"] = 7  # counted from 1 (state.json "counted_from": 1)
    state_file.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=r"epoch 7 is past this run's 5 epochs .*--no-resume"):
        exp.run(run)
    assert not (run / "results.json").exists()
    from ncprompt.protocols.experiment import load_run

    with pytest.raises(CheckpointError, match="past this run's 5 epochs"):  # eval reads the same checkpoint
        load_run(run)


def test_a_lost_metrics_record_warns_and_does_not_shift_epochs_run(tiny_backbone, fmnist_small, tmp_path,
                                                                   one_thread):
    """Before: epochs_run was the number of records left in metrics.jsonl (3 of 4), without a word."""
    exp, run = _interrupted(tiny_backbone, fmnist_small, tmp_path, epochs=4, done=3)
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], lines[2]]) + "\n")  # epoch 2's record lost
    res = exp.run(run)
    assert res.epochs_run == 4
    records = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 3, 4]  # counted from 1; the gap is kept, not papered over
    assert res.final_train_loss == records[-1]["loss"]
    log = (run / "train.log").read_text()
    assert "lacks the record of epoch(s) 2 of the 3 epochs" in log  # recorded, and shown on stderr


def test_a_torn_metrics_line_is_written_to_train_log(tiny_backbone, fmnist_small, tmp_path, one_thread, capsys):
    """Before: the warning went to a logger below the CLI's level (shown nowhere)."""
    exp, run = _interrupted(tiny_backbone, fmnist_small, tmp_path, epochs=3, done=2)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "lo')
    assert exp.run(run).epochs_run == 3
    assert "dropped a torn last line" in (run / "train.log").read_text()
    assert "dropped a torn last line" in capsys.readouterr().err


def test_the_cli_shows_ncprompt_warnings_from_the_logger():
    """The CLI keeps third-party loggers at ERROR but shows ncprompt's warnings (torn lines, bf16 on CPU)."""
    from ncprompt.cli import main

    root, own = logging.getLogger(), logging.getLogger("ncprompt")
    before = root.level, own.level
    root.setLevel(logging.ERROR)  # what the CLI's basicConfig sets outside pytest (which installs its own handlers)
    try:
        assert main(["datasets"]) == 0
        assert own.getEffectiveLevel() == logging.WARNING
    finally:
        root.setLevel(before[0])
        own.setLevel(before[1])


# --- the feature cache ------------------------------------------------------------------------------

def _images(n: int = 6) -> ArrayImages:
    rng = np.random.default_rng(0)
    return ArrayImages(rng.integers(0, 256, (n, 20, 20, 3), dtype=np.uint8), np.arange(n) % 3)


@pytest.mark.parametrize("edit", ["no sha256", "no file", "path out", "no shard_rows", "shards list"])
def test_a_damaged_manifest_is_rebuilt_not_an_error(tiny_backbone, tmp_path, edit, one_thread):
    """Before: a manifest whose shard entry lacked its checksum aborted with "error: 'sha256'"."""
    images = _images()
    cache = FeatureCache(tmp_path, shard_rows=4)
    first = cache.features(tiny_backbone, images)
    (manifest,) = tmp_path.rglob("manifest.json")
    m = json.loads(manifest.read_text())
    if edit == "no sha256":
        del m["shards"]["0"]["sha256"]
    elif edit == "no file":
        del m["shards"]["1"]["file"]
    elif edit == "path out":
        m["shards"]["0"]["file"] = "../../../etc/passwd"
    elif edit == "no shard_rows":
        del m["shard_rows"]
    else:
        m["shards"] = list(m["shards"].values())
    manifest.write_text(json.dumps(m))
    with pytest.warns(CacheWarning, match="is damaged"):
        again = cache.features(tiny_backbone, images)
    assert cache.misses == 2
    assert torch.equal(again, first)  # the same shards computed again (same batches, same threads)
    assert FeatureCache(tmp_path, shard_rows=4).features(tiny_backbone, images).shape == first.shape


def test_a_full_cache_disk_goes_on_without_the_cache(tiny_backbone, tmp_path, monkeypatch, one_thread):
    """Before: the real write path turns ENOSPC into a FileError, which the cache did not catch: the run aborted
    although the docs promise a fallback to no cache."""
    from ncprompt.data import feature_store

    images = _images(10)
    ref = FeatureCache(enabled=False, shard_rows=4).features(tiny_backbone, images, views=2, train=True)

    def full(path, array):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(feature_store, "_save_npy", full)
    with pytest.warns(CacheWarning, match="disk is full.*going on without caching"):
        got = FeatureCache(tmp_path, shard_rows=4).features(tiny_backbone, images, views=2, train=True)
    assert torch.equal(got, ref)  # the same batches encoded, one shard at a time
    assert not list(tmp_path.rglob("shard-*.npy"))


def test_cache_warnings_are_one_clean_line(capsys):
    """Before: Python's warning format, ``/path/feature_store.py:41: CacheWarning: ...`` and the source line."""
    from ncprompt.cli import one_line_warnings
    from ncprompt.data.feature_store import warn

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        one_line_warnings()
        one_line_warnings()  # installed once however often the CLI runs
        warn("feature cache manifest /x/manifest.json is unreadable (bad); recomputing its features")
        warnings.warn("someone else's", UserWarning, stacklevel=1)
    err = capsys.readouterr().err  # (other warnings go where they went before: here, pytest's record)
    assert err == "warning: feature cache manifest /x/manifest.json is unreadable (bad); recomputing its features\n"
