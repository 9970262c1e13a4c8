"""Loading weights from local files through the same path a user's checkpoint takes; clear errors."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from ncprompt.backbones import BackboneError, load_backbone


@pytest.fixture(scope="module")
def source_model():
    torch.manual_seed(123)
    return load_backbone("tiny-clip", device="cpu")


def _same_outputs(a, b):
    tokens = a.tokenize(["a photo of a coat."])
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        return (torch.equal(a.model.encode_text(tokens), b.model.encode_text(tokens))
                and torch.equal(a.model.encode_image(img), b.model.encode_image(img)))


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "pt-wrapped", "pt-module"])
def test_local_checkpoint_roundtrip(source_model, tmp_path, fmt):
    sd = {k: v.clone().contiguous() for k, v in source_model.model.state_dict().items()}
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(sd, str(path))
    else:
        path = tmp_path / "w.pt"
        obj = {"state_dict": sd} if fmt == "pt-wrapped" else sd
        if fmt == "pt-module":
            obj = {f"module.{k}": v for k, v in sd.items()}
        torch.save(obj, path)
    loaded = load_backbone("tiny-clip", pretrained=str(path), device="cpu")
    assert _same_outputs(source_model, loaded)
    assert loaded.weights_id.startswith("file:")
    fresh = load_backbone("tiny-clip", device="cpu")
    assert not _same_outputs(source_model, fresh)


def test_unknown_model():
    with pytest.raises(BackboneError, match="unknown model 'no-such-net'.*ncprompt models"):
        load_backbone("no-such-net")


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(BackboneError, match="does not exist.*tiny-clip"):
        load_backbone("tiny-clip", pretrained=str(tmp_path / "missing.safetensors"))


def test_checkpoint_of_wrong_architecture(tmp_path):
    other = load_backbone("ViT-S-32", device="cpu")
    path = tmp_path / "vits32.safetensors"
    save_file({k: v.contiguous() for k, v in other.model.state_dict().items()}, str(path))
    with pytest.raises(BackboneError, match="does not match architecture 'tiny-clip'.*shape mismatch"):
        load_backbone("tiny-clip", pretrained=str(path))


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(BackboneError, match="weights_only"):
        load_backbone("tiny-clip", pretrained=str(path))


def test_unknown_pretrained_tag():
    with pytest.raises(BackboneError, match="unknown pretrained tag"):
        load_backbone("ViT-B-16", pretrained="no-such-tag")


def test_backbone_properties(tiny_backbone):
    assert tiny_backbone.embed_dim == 32 and tiny_backbone.text_width == 32
    assert tiny_backbone.context_length == 77 and tiny_backbone.precision == "fp32"
    assert abs(tiny_backbone.logit_scale - 1 / 0.07) < 1e-3
