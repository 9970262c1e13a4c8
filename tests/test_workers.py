"""DataLoader workers (``data.workers``): the live training path decodes and augments in worker processes
with a per-(image, view) seed, so pixels and trained prompts are bitwise those of 0 workers; the setting
reaches cache extraction and live encoding, has a CLI flag, is recorded, and leaves the fingerprint alone."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from ncprompt.cli import build_parser, main
from ncprompt.config import ConfigError, RunConfig
from ncprompt.data import cache as cache_mod
from ncprompt.data.base import ArrayImages, DataError
from ncprompt.data.cache import PixelViews, augmented_view
from ncprompt.data.views import ImageViews, image_batches
from ncprompt.engine.run_folder import RunFolder
from ncprompt.protocols.experiment import Experiment


def _images(n: int = 7) -> ArrayImages:
    rng = np.random.default_rng(1)
    return ArrayImages(rng.integers(0, 256, (n, 20, 20, 3), dtype=np.uint8), np.arange(n) % 3)


PLAN = [(torch.tensor([3, 0, 6]), torch.tensor([1, 0, 2])),
        (torch.tensor([3, 5]), torch.tensor([0, 1])),  # image 3 again, another view
        (torch.tensor([2]), torch.tensor([2]))]


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_live_pixels_are_the_seeded_views_for_any_number_of_workers(tiny_backbone, workers):
    images, tf = _images(), tiny_backbone.train_transform
    pv = PixelViews(tiny_backbone, images, views=3, seed=4, workers=workers)
    assert pv.loader.loader.num_workers == workers
    expected = [torch.stack([augmented_view(tf, images.load(i), 4, i, v) for i, v in zip(ix.tolist(), vw.tolist())])
                for ix, vw in PLAN]
    pids = []
    for epoch in range(2):  # the persistent workers serve a second pass
        got = list(pv.batches(PLAN))
        assert len(got) == len(PLAN)
        for g, e in zip(got, expected):
            assert torch.equal(g, e), f"epoch {epoch}"
        if workers:
            pids.append([w.pid for w in pv.loader.loader._iterator._workers])
    if workers:
        assert pids[0] == pids[1] and os.getpid() not in pids[0]  # worker processes, kept between passes
    assert torch.equal(pv(*PLAN[1]), expected[1])
    assert not torch.equal(expected[0][0], expected[1][0])  # (3, 1) and (3, 0) differ: the views are seeded apart


def test_global_rng_is_untouched_by_the_live_path(tiny_backbone):
    torch.manual_seed(5)
    ref = torch.rand(2)
    torch.manual_seed(5)
    list(PixelViews(tiny_backbone, _images(), views=3, seed=4, workers=0).batches(PLAN))
    assert torch.equal(torch.rand(2), ref)


class _Broken(ArrayImages):
    def load(self, i: int):
        if i == 2:
            raise DataError("image 2 cannot be decoded: truncated file; replace or remove it")
        return super().load(i)


@pytest.mark.parametrize("workers", [0, 2])
def test_an_error_in_a_worker_is_one_line_of_its_own_type(tiny_backbone, workers):
    imgs = _Broken(_images().images, _images().labels)
    msg = "^image 2 cannot be decoded: truncated file; replace or remove it$"
    with pytest.raises(DataError, match=msg):
        list(image_batches(ImageViews(imgs, tiny_backbone.eval_transform), [[0, 1], [2, 3]], workers))
    with pytest.raises(DataError, match=msg):
        list(PixelViews(tiny_backbone, imgs, views=3, seed=4, workers=workers).batches(PLAN))


def _maple(tmp_path, workers: int) -> RunConfig:
    return RunConfig.from_dict({
        "run": {"model": "tiny-clip", "cache_dir": str(tmp_path / "cache"), "diagnostics": False},
        "data": {"shots": 2, "max_test_per_class": 2, "workers": workers},
        "method": {"name": "maple", "depth": 2},
        "train": {"epochs": 2, "views": 2, "batch_size": 4, "lr": 0.0035, "warmup_epochs": 0}})


def test_maple_trains_the_same_prompts_with_0_and_2_workers(tiny_backbone, fmnist_small, tmp_path, monkeypatch,
                                                            one_thread):
    seen: list[int] = []
    real = cache_mod.image_batches

    def spy(dataset, batches, num_workers=0):
        seen.append(num_workers)
        return real(dataset, batches, num_workers)

    monkeypatch.setattr(cache_mod, "image_batches", spy)  # live evaluation encoding (encode_with)
    results = {}
    for w in (0, 2):
        exp = Experiment(_maple(tmp_path, w), backbone=tiny_backbone, dataset=fmnist_small)
        assert exp.cache.workers == w  # cache extraction
        source = exp.build().training_source(exp.train_images, 2, 1, exp.cache)
        assert isinstance(source, PixelViews) and source.loader.loader.num_workers == w  # live training
        seen.clear()
        results[w] = exp.run(tmp_path / f"run{w}")
        assert seen and set(seen) == {w}
    a, b = (load_file(str(tmp_path / f"run{w}" / "prompt.safetensors")) for w in (0, 2))
    assert a.keys() == b.keys() and len(a) > 2
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert results[0]["all"]["top1"] == results[2]["all"]["top1"]
    first, second = (json.loads(line) for line in (tmp_path / "run0" / "metrics.jsonl").read_text().splitlines())
    assert first["loss"] != second["loss"]  # it trained
    # the workers are recorded but do not change the fingerprint: the workers-0 run is this run, finished
    assert RunFolder(tmp_path / "run0").finished(_maple(tmp_path, 2), exp.inputs())


def test_workers_field_validated_recorded_and_out_of_the_fingerprint():
    base = RunConfig.from_dict({})
    assert base.data.workers == 0
    three = RunConfig.from_dict({"data": {"workers": 3}})
    assert three.to_dict()["data"]["workers"] == 3  # lands in config.yaml (the run record)
    assert "data.workers" not in three.fingerprint_items()
    assert three.fingerprint() == base.fingerprint()
    assert RunConfig.from_dict({"data": {"shots": 4}}).fingerprint() != base.fingerprint()
    with pytest.raises(ConfigError, match="data.workers"):
        RunConfig.from_dict({"data": {"workers": -1}})


def test_cli_flags(capsys):
    assert main(["train", "--data-workers", "2", "--print-config"]) == 0
    assert "workers: 2" in capsys.readouterr().out
    assert main(["protocol", "--datasets", "x", "--methods", "coop", "--output", "o", "--data-workers", "1",
                 "--workers", "2", "--print-config"]) == 0
    grid = yaml.safe_load(capsys.readouterr().out)  # the grid's lists and its cells' resolved base config
    assert grid["data"]["workers"] == 1 and grid["grid"]["workers"] == 2
    p = build_parser()
    for argv in (["eval", "run", "--nproc", "2", "--data-workers", "2"], ["zeroshot", "--nproc", "2"],
                 ["train", "--nproc", "3"]):
        assert p.parse_args(argv).nproc == int(argv[argv.index("--nproc") + 1])
    assert p.parse_args(["eval", "run", "--data-workers", "2"]).workers == 2
    with pytest.raises(SystemExit) as e:
        main(["train", "--nproc", "0"])
    assert e.value.code == 2
    assert "processes >= 1" in capsys.readouterr().err
    assert main(["train", "--data-workers", "-1", "--print-config"]) == 2
    assert "data.workers" in capsys.readouterr().err
