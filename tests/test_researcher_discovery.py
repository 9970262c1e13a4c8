"""Discovery: `ncprompt models` lists the embedded model first and marks weights found here; MaPLe's
depth error names the option to change."""

from __future__ import annotations

import pytest

from ncprompt.backbones.catalog import format_catalog, model_catalog


def test_embedded_model_first_with_weights_here(tmp_path):
    cat = model_catalog(hf_cache=tmp_path / "hf", url_cache=tmp_path / "clip")
    assert cat[0].name == "pocket" and cat[0].embedded and cat[0].weights_here
    assert [e.name for e in cat if e.embedded] == ["pocket", "pocket-b3"]
    assert all(e.weights_here for e in cat if e.embedded)
    assert not any(e.weights_here for e in cat if not e.embedded)  # empty caches: everything else needs a download
    text = format_catalog(cat)
    assert text.startswith("Embedded models") and text.index("pocket") < text.index("ViT-B-16")
    assert "(none)" in text and "need a download" in text


def test_cached_weights_are_marked(tmp_path):
    # a Hugging Face cache entry for ViT-B-32/openai, as huggingface_hub lays it out
    snap = tmp_path / "hf" / "models--timm--vit_base_patch32_clip_224.openai" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "open_clip_model.safetensors").write_bytes(b"x")
    (tmp_path / "hf" / "models--timm--vit_base_patch32_clip_224.openai" / "refs").mkdir()
    (tmp_path / "hf" / "models--timm--vit_base_patch32_clip_224.openai" / "refs" / "main").write_text("abc")
    # and an OpenAI URL download of RN50
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "RN50.pt").write_bytes(b"x")
    cat = {e.name: e for e in model_catalog(hf_cache=tmp_path / "hf", url_cache=tmp_path / "clip")}
    assert "openai" in cat["ViT-B-32"].tags_here and cat["ViT-B-32"].weights_here
    assert cat["RN50"].tags_here == ["openai"]
    assert not cat["ViT-L-14"].weights_here
    text = format_catalog(list(cat.values()), tags=True)
    cached = text.split("local cache")[1].split("without weights here")[0]
    assert "ViT-B-32" in cached and "RN50 " in cached and "ViT-L-14" not in cached


def test_maple_depth_error_names_the_option(tiny_backbone):
    from ncprompt.methods import build_method

    with pytest.raises(ValueError, match=r"set method\.depth <= 2 \(--set method\.depth=2"):
        build_method("maple", tiny_backbone, ["a", "b"], {"depth": 9})
