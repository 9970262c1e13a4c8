"""Results with names: base/new classes chosen by name or split file, class names, groups, sizes and
the model and weights that really ran."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ncprompt.data.base import DataError
from ncprompt.data.class_split import choose_base_classes
from ncprompt.engine.run_info import run_info


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    """Content is tested here, not durability: skip the fsync of atomic writes (seconds each on a busy disk)."""
    monkeypatch.setattr("ncprompt.utils._fsync", lambda path: None)

NAMES = ["eight", "five", "four", "nine", "one", "seven", "six", "three", "two", "zero"]


def test_default_split_is_coops_first_half():
    b, n = choose_base_classes(NAMES)
    assert b.tolist() == [0, 1, 2, 3, 4] and n.tolist() == [5, 6, 7, 8, 9]
    b, n = choose_base_classes(NAMES[:5])
    assert len(b) == 3 and len(n) == 2


def test_base_classes_by_name_index_and_file(tmp_path):
    b, n = choose_base_classes(NAMES, ["zero", "One", "2"])
    assert [NAMES[i] for i in b] == ["zero", "one", "four"]
    assert [NAMES[i] for i in n] == ["eight", "five", "nine", "seven", "six", "three", "two"]
    f = tmp_path / "split.txt"
    f.write_text("# digits with round strokes\nzero\nsix\neight\nnine\n")
    b, _ = choose_base_classes(NAMES, str(f))
    assert [NAMES[i] for i in b] == ["zero", "six", "eight", "nine"]
    j = tmp_path / "split.json"
    j.write_text(json.dumps({"base": ["one", "seven"], "new": ["four"]}))
    b, n = choose_base_classes(NAMES, j)
    assert [NAMES[i] for i in b] == ["one", "seven"] and [NAMES[i] for i in n] == ["four"]
    # `--base-classes FILE` reaches the config (and Experiment) as a one-element list
    from ncprompt.config import RunConfig

    cfg = RunConfig.from_dict({"data": {"protocol": "base2new", "base_classes": [str(j)]}})
    b, n = choose_base_classes(NAMES, cfg.data.base_classes)
    assert [NAMES[i] for i in b] == ["one", "seven"] and [NAMES[i] for i in n] == ["four"]


@pytest.mark.parametrize("spec, msg", [
    (["eleven"], "unknown class(es) ['eleven']"),
    (["one", "one"], "named twice"),
    (NAMES, "at least one base and one new"),
])
def test_bad_base_classes_name_the_problem(spec, msg):
    with pytest.raises(DataError, match=msg.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        choose_base_classes(NAMES, spec)


def test_split_file_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        choose_base_classes(NAMES, str(tmp_path / "nope.json"))
    j = tmp_path / "s.json"
    j.write_text(json.dumps({"base": ["one"], "new": ["one", "two"]}))
    with pytest.raises(DataError, match="both base and new"):
        choose_base_classes(NAMES, j)


def test_run_info_names_classes_groups_sizes_and_weights(tiny_backbone):
    b, n = choose_base_classes(NAMES, ["zero", "one", "two"])
    counts = np.array([16, 8, 4])
    groups = {"head": np.array([0]), "middle": np.array([1]), "tail": np.array([2])}
    info = run_info(tiny_backbone, NAMES, requested_model="ViT-B-16", base=b, new=n, counts=counts, groups=groups,
                    train_n=28, test_sizes={"base": 30, "new": 70}, dataset_name="digits", dataset_kind="folder",
                    root="/data/digits")
    assert info["classes"]["base"] == ["zero", "one", "two"] and "eight" in info["classes"]["new"]
    assert info["classes"]["train_counts"] == {"zero": 16, "one": 8, "two": 4}
    assert info["classes"]["groups"] == {"head": ["zero"], "middle": ["one"], "tail": ["two"]}
    assert info["sizes"] == {"train": 28, "test": {"base": 30, "new": 70}, "scored": "test"}
    m = info["model"]
    assert m["name"] == "tiny-clip" and m["requested"] == "ViT-B-16" and m["random_weights"] is True
    assert info["dataset"] == {"name": "digits", "kind": "folder", "root": "/data/digits"}
    json.dumps(info)  # JSON-able


def test_model_info_of_a_weights_file(tmp_path):
    from safetensors.torch import save_file

    from ncprompt.backbones import load_backbone
    from ncprompt.engine.run_info import model_info

    bb = load_backbone("tiny-clip", device="cpu")
    f = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in bb.model.state_dict().items()}, str(f))
    m = model_info(load_backbone("tiny-clip", pretrained=str(f), device="cpu"))
    assert m["weights_file"] == "w.safetensors" and len(m["weights_sha256_16"]) == 16 and not m["random_weights"]


def test_model_info_of_the_embedded_pocket_model():
    """The pocket model loads its shipped weights without a pretrained tag: not "random_weights"."""
    from ncprompt.backbones import load_backbone
    from ncprompt.engine.run_info import model_info

    m = model_info(load_backbone("pocket", device="cpu"))
    assert m["name"] == "pocket" and m["weights_file"] == "pocket.safetensors" and m["random_weights"] is False


def test_dataset_specs_one_root_per_dataset(tmp_path):
    from ncprompt.data.specs import DatasetSpec, parse_dataset_spec, parse_dataset_specs

    (tmp_path / "digits" / "zero").mkdir(parents=True)
    (tmp_path / "t.csv").write_text("path,label\n")
    assert parse_dataset_spec(f"digits={tmp_path / 'digits'}") == DatasetSpec("digits", "folder",
                                                                              str(tmp_path / "digits"))
    assert parse_dataset_spec(f"textiles={tmp_path / 't.csv'}").dataset == "csv"
    assert parse_dataset_spec("fashion_mnist") == DatasetSpec("fashion_mnist", "fashion_mnist", None)
    with pytest.raises(DataError, match="digits=ROOT"):
        parse_dataset_spec("digits")
    with pytest.raises(DataError, match="neither a folder"):
        parse_dataset_spec(f"x={tmp_path / 'nope'}")
    with pytest.raises(DataError, match="given twice"):
        parse_dataset_specs([f"a={tmp_path / 'digits'}", f"a={tmp_path / 't.csv'}"])
