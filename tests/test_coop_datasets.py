"""The literature's datasets read from CoOp's layout and split files (built here in miniature)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ncprompt.data import DataError, get_dataset
from ncprompt.data.sampling import restrict_classes, sample_train


def _img(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture()
def pets_root(tmp_path):
    base = tmp_path / "oxford_pets"
    rows = {"train": [], "val": [], "test": []}
    for label, name in enumerate(["abyssinian", "basset_hound", "pug"]):
        for split, n in (("train", 3), ("val", 1), ("test", 2)):
            for i in range(n):
                rel = f"{name}_{split}_{i}.jpg"
                _img(base / "images" / rel, 40 * label + i)
                rows[split].append([rel, label, name])
    (base / "split_zhou_OxfordPets.json").write_text(json.dumps(rows))
    return tmp_path


def test_split_file_dataset(pets_root):
    ds = get_dataset("oxford_pets", root=str(pets_root))
    assert ds.classnames == ["abyssinian", "basset hound", "pug"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (9, 3, 6)
    assert ds.templates == ["a photo of a {}, a type of pet."]
    img, label = ds.test[5]
    assert img.size == (8, 8) and label == 2


def test_split_file_class_list_mismatch(pets_root):
    f = pets_root / "oxford_pets" / "split_zhou_OxfordPets.json"
    rows = json.loads(f.read_text())
    rows["test"][0][2] = "siamese"
    f.write_text(json.dumps(rows))
    with pytest.raises(DataError, match="label 0 is named both 'abyssinian' and 'siamese'"):
        get_dataset("oxford_pets", root=str(pets_root))


def test_missing_dataset_and_images(pets_root, tmp_path):
    with pytest.raises(DataError, match="oxford_flowers does not exist.*DATASETS.md"):
        get_dataset("oxford_flowers", root=str(pets_root))
    with pytest.raises(DataError, match="needs --root"):
        get_dataset("dtd")
    for p in (pets_root / "oxford_pets" / "images").glob("abyssinian_train_0.jpg"):
        p.unlink()
    with pytest.raises(DataError, match="does not exist.*images must be under"):
        get_dataset("oxford_pets", root=str(pets_root))


def test_imagenet_and_variants(tmp_path):
    base = tmp_path / "imagenet"
    classes = [("n01", "tench"), ("n02", "goldfish"), ("n03", "great white shark")]
    base.mkdir()
    (base / "classnames.txt").write_text("\n".join(f"{w} {n}" for w, n in classes))
    for split in ("train", "val"):
        for k, (w, _) in enumerate(classes):
            _img(base / "images" / split / w / "a.JPEG", k)
    ds = get_dataset("imagenet", root=str(tmp_path))
    assert ds.classnames == ["tench", "goldfish", "great white shark"] and len(ds.test) == 3
    r = tmp_path / "imagenet-rendition" / "imagenet-r"
    _img(r / "n03" / "x.png", 1)
    _img(r / "n01" / "y.png", 2)
    dr = get_dataset("imagenet_r", root=str(tmp_path))
    assert dr.classnames == ["tench", "great white shark"] and dr.test.labels.tolist() == [0, 1]
    # evaluation only: its test images are never a training set (issue 8's trap)
    assert dr.eval_only and len(dr.train) == 0 and not ds.eval_only
    for shots in (None, 16):
        with pytest.raises(DataError, match="imagenet_r is an evaluation-only dataset.*train on imagenet"):
            sample_train(dr.train, dr.num_classes, shots, None, seed=1)
    b2n = restrict_classes(dr, np.array([1]), "new")
    assert b2n.eval_only and b2n.test.labels.tolist() == [0]
    _img(base / "images" / "val" / "n99" / "z.JPEG", 3)
    with pytest.raises(DataError, match="n99.*not in classnames.txt"):
        get_dataset("imagenet", root=str(tmp_path))
