"""Shared fixtures: a tiny open_clip architecture (random weights) and small real datasets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from ncprompt.backbones import load_backbone
from ncprompt.data.sources import FASHION_MNIST_CLASSES, load_fashion_mnist_arrays

ASSETS = Path(__file__).parent / "assets"
TINY = "tiny-clip"

open_clip.add_model_config(ASSETS / "tiny-clip.json")
#: intra-op threads of the test process; .ci/run also runs the `numerics` tests with 1 and 2 (and the CPU
#: kernels `ATEN_CPU_CAPABILITY=avx2` / `default`): a bitwise assertion must hold for any of them
THREADS = int(os.environ.get("NCPROMPT_TEST_THREADS", "2"))
torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def tiny_backbone():
    torch.manual_seed(0)
    return load_backbone(TINY, device="cpu")


@pytest.fixture(scope="session")
def fmnist_arrays():
    return load_fashion_mnist_arrays()


@pytest.fixture(scope="session")
def fmnist_small(fmnist_arrays):
    """A small Fashion-MNIST DatasetSplits: 60 train and 20 test images per class."""
    from ncprompt.data.base import ArrayImages, DatasetSplits

    a = fmnist_arrays
    rng = np.random.default_rng(0)
    tr = np.concatenate([rng.choice(np.flatnonzero(a["train_y"] == k), 60, replace=False) for k in range(10)])
    te = np.concatenate([rng.choice(np.flatnonzero(a["test_y"] == k), 20, replace=False) for k in range(10)])
    return DatasetSplits(
        name="fmnist_small",
        classnames=list(FASHION_MNIST_CLASSES),
        train=ArrayImages(a["train_x"][tr], a["train_y"][tr]),
        test=ArrayImages(a["test_x"][te], a["test_y"][te]),
    )


@pytest.fixture()
def image_folder(tmp_path, fmnist_arrays):
    """ROOT/<class>/*.png with 6 real Fashion-MNIST images for each of 3 classes."""
    from PIL import Image

    root = tmp_path / "imgs"
    for k, name in enumerate(["bag", "sneaker", "trouser"]):
        cls = [8, 7, 1][k]
        d = root / name
        d.mkdir(parents=True)
        for j, i in enumerate(np.flatnonzero(fmnist_arrays["test_y"] == cls)[:6]):
            Image.fromarray(fmnist_arrays["test_x"][i]).save(d / f"{j}.png")
    return root


@pytest.fixture()
def one_thread():
    """Tiny models: one intra-op thread is ~30x faster than two on a loaded 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


#: test files whose assertions compare numbers that kernels or thread counts could move (bitwise replays,
#: tolerances between two computations, learning thresholds): marked `numerics`, rerun by `make test-numerics`
#: under ATEN_CPU_CAPABILITY=avx2/default and 1/2 threads (docs/reliability.md)
NUMERICS_FILES = {
    "test_backbones.py", "test_cache.py", "test_cluster_npt.py", "test_collapse.py", "test_distributed.py",
    "test_distributed_cli.py", "test_maple.py", "test_methods_more.py", "test_methods_new.py",
    "test_methods_new_learning.py", "test_pocket_regime.py", "test_precision.py", "test_prompt_encoder.py",
    "test_shared_prefix.py", "test_training.py", "test_trust_sigkill.py", "test_workers.py",
    "test_workers_eval_nproc.py", "test_zeroshot.py",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in NUMERICS_FILES:
            item.add_marker(pytest.mark.numerics)
