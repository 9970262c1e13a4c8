"""Loading weights through open_clip's factory and checkpoint loader: local files (safetensors, .pt,
OpenAI state dicts and TorchScript archives with QuickGELU), local-dir folders, the pocket folder,
offline tags and hf-hub names, and a one-line BackboneError for every broken input."""

from __future__ import annotations

import json
import logging
import pickle
import zipfile

import open_clip
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from ncprompt.backbones import BackboneError, load_backbone
from ncprompt.backbones import pocket as pocket_mod

TINY_CFG = "tests/assets/tiny-clip.json"


@pytest.fixture(scope="module")
def source_model():
    torch.manual_seed(123)
    return load_backbone("tiny-clip", device="cpu")


def _features(model, tokenizer):
    tokens = tokenizer(["a photo of a coat.", "a sandal"])
    img = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.encode_text(tokens), model.encode_image(img)


def _same_outputs(a, b):
    (ta, ia), (tb, ib) = _features(a.model, a.tokenizer), _features(b.model, b.tokenizer)
    # another loader's module graph may dispatch other kernels: equal to fp32 tolerance (see _assert_same_model);
    # distinct random weights differ by O(1)
    return torch.allclose(ta, tb, rtol=1e-5, atol=1e-5) and torch.allclose(ia, ib, rtol=1e-5, atol=1e-5)


def _assert_same_model(got, want):
    """The loaded model computes what the in-memory one does, to fp32 tolerance, not bitwise: the loader builds
    its own module graph, and which kernels a graph dispatches to (fused or not, which SIMD width) depends on
    the CPU: on AVX2-only CPUs the text features differ by ~7e-7 (a few ulps of fp32, eps 1.2e-7, over a
    4-block tower). A wrong activation or weight moves them by > 1e-2 (asserted below)."""
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def _state(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "pt-wrapped", "pt-module"])
def test_local_checkpoint_roundtrip(source_model, tmp_path, fmt, caplog):
    sd = _state(source_model.model)
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(sd, str(path))
    else:
        path = tmp_path / "w.pt"
        obj = {"state_dict": sd} if fmt == "pt-wrapped" else sd
        if fmt == "pt-module":
            obj = {f"module.{k}": v for k, v in sd.items()}
        torch.save(obj, path)
    with caplog.at_level(logging.INFO):
        loaded = load_backbone("tiny-clip", pretrained=str(path), device="cpu")
    assert not any("initialized randomly" in r.getMessage() for r in caplog.records)
    assert _same_outputs(source_model, loaded)
    assert loaded.weights_id.startswith("file:") and not loaded.random_weights
    assert loaded.meta["quick_gelu"] is False
    fresh = load_backbone("tiny-clip", device="cpu")
    assert not _same_outputs(source_model, fresh) and fresh.random_weights


# ------------------------------------------------------------------ OpenAI checkpoints get QuickGELU


@pytest.fixture(scope="module")
def quickgelu_model():
    torch.manual_seed(7)
    return open_clip.create_model("tiny-clip", quick_gelu=True).eval()


def _openai_state(model):
    """A state dict as OpenAI ships it: CLIP's keys plus the TorchScript attributes kept as entries."""
    sd = _state(model)
    sd.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    return sd


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_openai_state_dict_gets_quickgelu(quickgelu_model, tmp_path, suffix, caplog):
    path = tmp_path / f"openai{suffix}"
    sd = _openai_state(quickgelu_model)
    save_file(sd, str(path)) if suffix == ".safetensors" else torch.save(sd, path)
    tok = open_clip.get_tokenizer("tiny-clip")
    with caplog.at_level(logging.INFO, logger="ncprompt.backbones.openclip"):
        bb = load_backbone("tiny-clip", pretrained=str(path), device="cpu")
    assert bb.meta["quick_gelu"] is True and "QuickGELU" in caplog.text
    got, want = _features(bb.model, tok), _features(quickgelu_model, tok)
    _assert_same_model(got, want)
    # the activation matters: the same weights under GELU give other features
    gelu = load_backbone("tiny-clip", pretrained=str(path), device="cpu", quick_gelu=False)
    assert not torch.allclose(_features(gelu.model, tok)[0], want[0], atol=1e-4)


class _Scriptable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _torchscript_archive(sd, path):
    """A real TorchScript archive holding ``sd`` under the same names (what OpenAI's .pt files are)."""
    root = _Scriptable()
    for key, value in sd.items():
        *parents, leaf = key.split(".")
        mod = root
        for p in parents:
            if not hasattr(mod, p):
                mod.add_module(p, _Scriptable())
            mod = getattr(mod, p)
        mod.register_buffer(leaf, value.clone())
    torch.jit.save(torch.jit.script(root), str(path))


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_openai_torchscript_archive_gets_quickgelu(quickgelu_model, tmp_path):
    path = tmp_path / "ViT-tiny-openai.pt"
    sd = _openai_state(quickgelu_model)
    sd["attn_mask"] = quickgelu_model.attn_mask.clone()  # a scripted model keeps its mask buffer
    _torchscript_archive(sd, path)
    bb = load_backbone("tiny-clip", pretrained=str(path), device="cpu")
    tok = open_clip.get_tokenizer("tiny-clip")
    got, want = _features(bb.model, tok), _features(quickgelu_model, tok)
    assert bb.meta["quick_gelu"] is True
    _assert_same_model(got, want)


def test_openai_pretrained_tag_builds_quickgelu_offline(monkeypatch):
    """The 'openai' tag asks for QuickGELU; offline, fetching it fails with one line."""
    seen = {}

    def offline(cfg, *a, **k):
        raise OSError("Temporary failure in name resolution\nmore lines")

    real_create = open_clip.create_model

    def spy(*a, **k):
        seen.update(k)
        return real_create(*a, **k)

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    monkeypatch.setattr(open_clip, "create_model", spy)
    with pytest.raises(BackboneError, match=r"^could not fetch weights ViT-B-16/openai .*needs network") as e:
        load_backbone("ViT-B-16", pretrained="openai", device="cpu")
    assert "\n" not in str(e.value) and seen.get("force_quick_gelu") is True


def test_hf_hub_offline_is_one_line(monkeypatch):
    def offline(*a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(open_clip.factory, "download_pretrained_from_hf", offline)
    with pytest.raises(BackboneError, match=r"hf-hub:timm/nope from the Hugging Face Hub.*needs network.*local-dir"):
        load_backbone("hf-hub:timm/nope", device="cpu")


# ------------------------------------------------------------------ local-dir folders and the pocket folder


def _folder(tmp_path, model, name="model"):
    d = tmp_path / name
    d.mkdir()
    cfg = json.loads(open(TINY_CFG).read())
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {"size": 32}}))
    save_file(_state(model), str(d / "open_clip_model.safetensors"))
    return d


def test_local_dir_folder(source_model, tmp_path):
    d = _folder(tmp_path, source_model.model)
    bb = load_backbone(f"local-dir:{d}", device="cpu")
    assert _same_outputs(source_model, bb) and bb.meta["preprocess"]["size"] == (32, 32)
    save_file(_state(source_model.model), str(d / "second.safetensors"))
    with pytest.raises(BackboneError, match="several weights files.*keep one"):
        load_backbone(f"local-dir:{d}", device="cpu")
    with pytest.raises(BackboneError, match="does not exist"):
        load_backbone(f"local-dir:{tmp_path / 'nowhere'}", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneError, match="open_clip_config.json is missing"):
        load_backbone(f"local-dir:{tmp_path / 'empty'}", device="cpu")


def test_pocket_resolves_whatever_folder_is_there(source_model, tmp_path, monkeypatch):
    d = _folder(tmp_path, source_model.model, "pocket")
    monkeypatch.setattr(pocket_mod, "POCKET_FOLDER", d)
    registry_before = {k: dict(v) for k, v in open_clip.pretrained._PRETRAINED.items() if k == "pocket"}
    bb = load_backbone("pocket", device="cpu")
    assert _same_outputs(source_model, bb) and bb.name == "pocket" and not bb.random_weights
    assert pocket_mod.pocket_backbone() == d / "open_clip_model.safetensors"
    assert {k: dict(v) for k, v in open_clip.pretrained._PRETRAINED.items() if k == "pocket"} == registry_before
    random = load_backbone("pocket", pretrained="random", device="cpu")
    assert random.random_weights and not _same_outputs(source_model, random)


def test_shipped_pocket_loads():
    assert pocket_mod.pocket_backbone() is not None, "the shipped pocket weights are missing"
    bb = load_backbone("pocket", device="cpu")
    assert bb.embed_dim > 0 and bb.encode_texts(["a photo of a cat."]).shape == (1, bb.embed_dim)


def test_shipped_pocket_b3_loads_and_differs_from_pocket():
    """Bench 3's model: the pocket architecture (same open_clip config) with its own weights."""
    import json

    from safetensors.torch import load_file

    assert json.loads((pocket_mod.POCKET_B3_FOLDER / "open_clip_config.json").read_text()) == json.loads(
        (pocket_mod.POCKET_FOLDER / "open_clip_config.json").read_text())
    b3 = load_backbone("pocket-b3", device="cpu")
    assert b3.name == "pocket-b3" and not b3.random_weights
    w1 = load_file(pocket_mod.POCKET_FOLDER / "pocket.safetensors")
    w3 = load_file(pocket_mod.POCKET_B3_FOLDER / "pocket.safetensors")
    assert w1.keys() == w3.keys() and not all(bool((w1[k] == w3[k]).all()) for k in w1)


# ------------------------------------------------------------------ clean errors


def test_unknown_model():
    with pytest.raises(BackboneError, match="unknown model 'no-such-net'.*ncprompt models"):
        load_backbone("no-such-net")


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(BackboneError, match="does not exist.*tiny-clip"):
        load_backbone("tiny-clip", pretrained=str(tmp_path / "missing.safetensors"))


@pytest.mark.parametrize("damage", ["empty", "truncated", "random"])
def test_broken_safetensors(source_model, tmp_path, damage):
    good = tmp_path / "good.safetensors"
    save_file(_state(source_model.model), str(good))
    path = tmp_path / f"{damage}.safetensors"
    data = good.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2],
                      "random": torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
                      .to(torch.uint8).numpy().tobytes()}[damage])
    with pytest.raises(BackboneError, match=rf"{path.name} (is empty|is not a readable \.safetensors)") as e:
        load_backbone("tiny-clip", pretrained=str(path), device="cpu")
    assert "\n" not in str(e.value) and "re-download or re-save" in str(e.value)


def test_zip_that_routes_to_torchscript_but_is_not_one(tmp_path):
    path = tmp_path / "fake.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/constants.pkl", b"not a pickle")
        z.writestr("archive/data.pkl", b"\x80\x02garbage")
        z.writestr("archive/version", b"3\n")
    with pytest.raises(BackboneError, match="fake.pt is laid out as a TorchScript archive but torch.jit.load "
                                            "cannot read it") as e:
        load_backbone("tiny-clip", pretrained=str(path), device="cpu")
    assert "\n" not in str(e.value)


def test_checkpoint_of_wrong_architecture(tmp_path):
    torch.manual_seed(0)
    other = open_clip.create_model("ViT-S-32")
    path = tmp_path / "vits32.safetensors"
    save_file(_state(other), str(path))
    with pytest.raises(BackboneError, match="does not match architecture 'tiny-clip'.*shape mismatch") as e:
        load_backbone("tiny-clip", pretrained=str(path))
    assert "\n" not in str(e.value)


def test_missing_and_unexpected_keys_are_named(source_model, tmp_path):
    sd = _state(source_model.model)
    sd.pop("ln_final.weight")
    sd["extra.head.weight"] = torch.zeros(3)
    path = tmp_path / "w.safetensors"
    save_file(sd, str(path))
    with pytest.raises(BackboneError, match=r"1 missing keys \(e\.g\. ln_final\.weight\); 1 unexpected keys "
                                            r"\(e\.g\. extra\.head\.weight\)") as e:
        load_backbone("tiny-clip", pretrained=str(path), device="cpu")
    assert "\n" not in str(e.value)


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


def test_cuda_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackboneError, match=r"^--device cuda requested but no CUDA GPU is visible; use --device cpu$"):
        load_backbone("tiny-clip", device="cuda")
    with pytest.raises(BackboneError, match="unknown device 'gpu0'"):
        load_backbone("tiny-clip", device="gpu0")


def test_fp16_on_cpu_is_refused():
    with pytest.raises(BackboneError, match="fp16 is for GPUs.*bf16 or fp32"):
        load_backbone("tiny-clip", device="cpu", precision="fp16")


def test_backbone_properties(tiny_backbone):
    assert tiny_backbone.embed_dim == 32 and tiny_backbone.text_width == 32
    assert tiny_backbone.context_length == 77 and tiny_backbone.precision == "fp32"
    assert abs(tiny_backbone.logit_scale - 1 / 0.07) < 1e-3 and tiny_backbone.logit_bias is None
    assert not tiny_backbone.grad_scaler().is_enabled()
