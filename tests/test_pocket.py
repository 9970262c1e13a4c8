"""The pocket world, model, pretraining loop and suite (including zero-shot of the committed weights)."""

from __future__ import annotations

import functools
import json

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import load_file

from ncprompt.data.base import ArrayImages
from ncprompt.data.registry import DATASETS
from ncprompt.pocket import suite as S
from ncprompt.pocket import world as W
from ncprompt.pocket.model import (
    POCKET_CONFIG,
    POCKET_NAME,
    POCKET_OPEN_CLIP_CONFIG,
    POCKET_PREPROCESS,
    POCKET_WEIGHTS,
    create_pocket,
    register_pocket,
)
from ncprompt.pocket.pretrain import encode_text_trimmed, multi_positive_clip_loss, pretrain

# ---------------------------------------------------------------------------------- world


def test_world_is_deterministic_under_seed():
    a, b, c = W.PretrainWorld(seed=3).batch(64), W.PretrainWorld(seed=3).batch(64), W.PretrainWorld(seed=4).batch(64)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert torch.equal(a.consistency(), b.consistency())
    assert not torch.equal(a.images, c.images) and a.captions != c.captions
    assert a.images.shape == (64, 3, 32, 32) and 0 <= a.images.min() and a.images.max() <= 1


def test_held_out_combinations_never_in_pretraining():
    assert len(W.HELD_OUT) == 20 and all(c not in ("white", "gray", "black") for c, _ in W.HELD_OUT)
    n_garment_held = sum(o in W.GARMENTS for _, o in W.HELD_OUT)
    assert 0.10 <= n_garment_held / (len(W.COLOURS) * len(W.GARMENTS)) <= 0.15
    world = W.PretrainWorld(seed=0)
    looks = 0
    for _ in range(12):
        b = world.batch(256)
        assert not W.HELD_MATRIX[b.scene.colour, b.scene.obj].any()
        assert W.captions_mention_held_out(b.captions) == []
        # every caption is true of its own image; the "Fashion-MNIST look" is white on plain black
        assert b.consistency().diagonal().all()
        look = b.scene.look.bool()
        looks += int(look.sum())
        assert (b.scene.colour[look] == W.WHITE).all() and (b.scene.bg[look] == W.BLACK).all()
        assert (b.scene.texture[look] == 0).all()
    assert 0.10 < looks / (12 * 256) < 0.20
    # the checker itself finds a held-out combination
    assert W.captions_mention_held_out(["a photo of a red sneaker.", "a coat in yellow", "a red digit nine"]) != []
    assert len(W.captions_mention_held_out(["a photo of a red sneaker.", "a coat in yellow", "a red digit nine"])) == 3


def test_consistency_is_multi_positive():
    scene = W.Scene(
        obj=torch.tensor([7, 7, 3]),
        colour=torch.tensor([0, 3, 0]),
        bg=torch.tensor([10, 10, 7]),
        texture=torch.tensor([0, 1, 0]),
        look=torch.zeros(3, dtype=torch.long),
    )
    spec = W.CaptionSpec(
        obj=torch.tensor([7, -1, 3]),
        colour=torch.tensor([-1, 0, -1]),
        bg=torch.tensor([-1, -1, -1]),
        texture=torch.tensor([-1, -1, 0]),
        gray=torch.zeros(3, dtype=torch.long),
    )
    m = W.consistency(scene, spec)  # "a sneaker", "something red", "a dress on a plain background"
    assert m.tolist() == [[True, True, False], [True, False, False], [False, True, True]]


def test_image_pools_are_disjoint():
    _, _, rank = W.mnist_digits()
    pre, _ = W.shape_pool("pretrain")
    down, _ = W.shape_pool("downstream")
    test, ids = W.shape_pool("test")
    assert len(pre) == W.FMNIST_PRETRAIN + 3500 and len(down) == 10000 + 500 and len(test) == 10000 + 1000
    assert (ids >= 10).sum() == 1000 and (rank < 500).all()


# ---------------------------------------------------------------------------------- model


def test_pocket_model_builds_from_open_clip_config():
    register_pocket()
    register_pocket()  # idempotent
    assert POCKET_NAME in open_clip.list_models()
    model = open_clip.create_model(POCKET_NAME)
    assert type(model) is open_clip.CLIP
    assert model.visual.image_size == (32, 32) and model.context_length >= 32 and model.vocab_size == 49408
    cfg = json.loads(POCKET_OPEN_CLIP_CONFIG.read_text())
    assert cfg["model_cfg"] == json.loads(POCKET_CONFIG.read_text())
    assert cfg["preprocess_cfg"] == POCKET_PREPROCESS
    # 16 context tokens + a class name fit in the context
    tok = open_clip.get_tokenizer(POCKET_NAME)(["X " * 16 + "red ankle boot."])
    assert tok.shape[1] == model.context_length and tok[0].argmax() < model.context_length - 1


def test_committed_weights_load_strict():
    assert POCKET_WEIGHTS.is_file(), "train them: python -m ncprompt.pocket.pretrain"
    assert POCKET_WEIGHTS.stat().st_size <= 25 * 2**20
    register_pocket()
    model = open_clip.create_model(POCKET_NAME)
    sd = load_file(str(POCKET_WEIGHTS))
    assert set(sd) == set(model.state_dict()) and all(v.dtype == torch.float16 for v in sd.values())
    model.load_state_dict(sd, strict=True)
    # and through open_clip's own loader, with the preprocessing from the config
    model, _, preprocess = open_clip.create_model_and_transforms(POCKET_NAME, pretrained=POCKET_NAME)
    norm = preprocess.transforms[-1]
    assert tuple(norm.mean) == tuple(POCKET_PREPROCESS["mean"]) and tuple(norm.std) == tuple(POCKET_PREPROCESS["std"])
    assert torch.equal(model.state_dict()["text_projection"], sd["text_projection"].float())


# ---------------------------------------------------------------------------------- pretraining


def test_trimmed_text_tower_matches_encode_text():
    register_pocket()
    torch.manual_seed(0)
    model = open_clip.create_model(POCKET_NAME).eval()
    tokens = open_clip.get_tokenizer(POCKET_NAME)(["a sneaker", "a photo of a red t-shirt on a striped background."])
    with torch.no_grad():
        assert torch.allclose(encode_text_trimmed(model, tokens), model.encode_text(tokens), atol=1e-5)


def test_multi_positive_loss_reduces_to_clip_loss():
    torch.manual_seed(0)
    img, txt = torch.randn(6, 8), torch.randn(6, 8)
    scale = torch.tensor(10.0)
    logits = scale * torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).t()
    labels = torch.arange(6)
    ref = (
        torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.t(), labels)
    ) / 2
    assert torch.allclose(multi_positive_clip_loss(img, txt, scale, torch.eye(6, dtype=torch.bool)), ref, atol=1e-6)


def test_pretrain_is_deterministic_and_saves_atomically(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    sa = pretrain(a, steps=2, batch_size=8, seed=1, log_every=1, threads=1)
    pretrain(b, steps=2, batch_size=8, seed=1, log_every=1, threads=1)
    assert sa["steps"] == 2 and not sa["stopped_early"]
    wa, wb = load_file(str(a)), load_file(str(b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "b.safetensors"]


# ---------------------------------------------------------------------------------- suite


@functools.cache
def _dataset(name: str, seed: int = 0):
    return DATASETS.get(name)(seed=seed)


@pytest.mark.parametrize("name", S.SUITE)
def test_suite_datasets(name):
    d = _dataset(name)
    assert d.templates == ["a photo of a {}."] and len(set(d.classnames)) == d.num_classes
    for split in ("train", "val", "test"):
        s = d.split(split)
        assert isinstance(s, ArrayImages) and s.images.dtype == np.uint8 and s.images.shape[1:] == (32, 32, 3)
        assert set(np.unique(s.labels)) == set(range(d.num_classes))
    # test images come from other shapes than train images
    assert not np.array_equal(d.train.images[: len(d.test)], d.test.images[: len(d.train)])


@pytest.mark.parametrize("name", ["pocket_garments", "pocket_fmnist_real"])
def test_suite_is_deterministic_under_seed(name):
    d = _dataset(name)
    again = DATASETS.get(name)(seed=0)
    assert again.test.fingerprint == d.test.fingerprint and again.train.fingerprint == d.train.fingerprint
    assert DATASETS.get(name)(seed=1).train.fingerprint != d.train.fingerprint


def test_suite_class_names():
    assert _dataset("pocket_garments").classnames[:5] == ["t-shirt", "trouser", "pullover", "dress", "coat"]
    assert _dataset("pocket_digits").classnames[7] == "digit seven"
    assert _dataset("pocket_colour_garment").num_classes == 80
    assert _dataset("pocket_compositional").classnames == [f"{c} {o}" for c, o in W.HELD_OUT]


# ---------------------------------------------------------------------------------- zero-shot


@pytest.fixture(scope="module")
def pocket():
    return create_pocket()


ZERO_SHOT_FLOOR = {
    # name: (minimum accuracy, images evaluated)
    "pocket_garments": (0.70, None),
    "pocket_digits": (0.70, None),
    "pocket_colour_garment": (0.40, 1000),
    "pocket_colours": (0.80, 400),
    "pocket_compositional": (0.30, 500),  # chance 5%
    "pocket_fmnist_real": (0.50, 500),  # chance 10%
    "pocket_mnist_real": (0.50, 500),  # chance 10%
    "pocket_textures": (0.30, 500),  # chance 20%
}


@pytest.mark.parametrize("name", list(ZERO_SHOT_FLOOR))
def test_zero_shot_of_committed_weights(pocket, name):
    model, preprocess, tokenizer = pocket
    floor, n = ZERO_SHOT_FLOOR[name]
    acc = S.zero_shot_accuracy(model, tokenizer, preprocess, _dataset(name), max_images=n)
    assert acc >= floor, f"{name}: zero-shot {acc:.3f} < {floor}"
