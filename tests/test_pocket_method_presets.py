"""The pocket recipes of the other methods (docs/results.md, scripts/pocket_methods.sh): each published base-to-new
preset carried to the pocket model as ``pocket_b2n`` carries CoOp, its YAML identical to its preset, its depths
scaled from 12 blocks to the pocket text tower's 4, and each method built on the pocket model."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ncprompt.config.presets import POCKET_FRAMES, PRESETS, preset
from ncprompt.config.run import RunConfig

ROOT = Path(__file__).resolve().parents[1]
#: pocket preset -> the published preset it carries
CARRIED = {f"pocket_{m}_b2n": f"{m}_b2n" for m in ("cocoop", "maple", "ivlp", "promptsrc", "prograd", "tcp")}
#: published depth (of ViT-B/16's 12 blocks) -> pocket depth (of its 4 text blocks): round(d * 4 / 12)
SCALED = {"depth": 9, "depth_text": 9, "depth_vision": 9, "class_layer": 8}


def _cfg(name: str) -> RunConfig:
    return RunConfig.from_dict(preset(name))


@pytest.mark.parametrize("name", sorted(CARRIED))
def test_pocket_preset_keeps_the_published_training_and_takes_the_pocket_setting(name):
    cfg, pub, pocket = _cfg(name), _cfg(CARRIED[name]), _cfg("pocket_b2n")
    assert cfg.method.name == pub.method.name
    for key in ("epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "warmup_epochs", "warmup_lr"):
        assert getattr(cfg.train, key) == getattr(pub.train, key), key
    for key in ("views", "crop_min", "flip"):
        assert getattr(cfg.train, key) == getattr(pocket.train, key), key
    assert cfg.run.model == "pocket" and cfg.data == pocket.data  # base-to-new, 16 shots (ProGrad too), 100 test
    assert not cfg.npt.enabled


@pytest.mark.parametrize("name", sorted(CARRIED))
def test_pocket_depths_are_the_published_share_of_the_text_tower(name):
    cfg = _cfg(name).method
    for key, published in SCALED.items():
        if hasattr(cfg, key):
            assert getattr(_cfg(CARRIED[name]).method, key) == published
            assert getattr(cfg, key) == round(published * 4 / 12) == 3, key


@pytest.mark.parametrize("name", [*sorted(CARRIED), "pocket_linear_probe"])
def test_config_file_is_the_preset(name):
    assert yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text()) == preset(name)
    assert name in PRESETS and PRESETS[name][0]


def test_promptsrc_frames_are_the_pocket_worlds_caption_frames():
    from ncprompt.pocket.world import NAME_FRAMES

    assert POCKET_FRAMES == [frame for frame, _ in NAME_FRAMES]
    assert _cfg("pocket_promptsrc_b2n").method.templates == POCKET_FRAMES


def test_linear_probe_preset_is_protocol_all_and_refuses_npt():
    from ncprompt.config.base import ConfigError

    cfg = _cfg("pocket_linear_probe")
    assert (cfg.run.model, cfg.data.protocol, cfg.data.shots, cfg.data.max_test_per_class) == ("pocket", "all", 16, 100)
    with pytest.raises(ConfigError, match="npt"):
        RunConfig.from_dict({**preset("pocket_linear_probe"), "npt": {"enabled": True}})


@pytest.fixture(scope="module")
def pocket_backbone():
    from ncprompt.backbones import load_backbone

    return load_backbone("pocket", pretrained="random", device="cpu")


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", sorted(CARRIED))
def test_pocket_preset_builds_its_method_on_the_pocket_model(name, pocket_backbone):
    """The published presets' depths do not fit the pocket towers (a one-line error); the pocket ones do, and
    their text features are finite for base classes and for new ones."""
    from ncprompt.methods import build_method
    from ncprompt.methods.base import MethodConfigError

    names, templates = ["cat", "dog", "fox"], ["{} emoji"]
    cfg = _cfg(name).method
    opts = cfg.model_dump(exclude={"name"})
    method = build_method(cfg.name, pocket_backbone, names, opts, templates)
    feats = method.text_features()
    assert feats.shape == (3, pocket_backbone.embed_dim) and bool(feats.isfinite().all())
    assert method.for_classnames(["owl", "bee"]).text_features().shape == (2, pocket_backbone.embed_dim)
    published = _cfg(CARRIED[name]).method
    if any(hasattr(published, key) for key in SCALED):
        with pytest.raises(MethodConfigError, match="depth|class_layer"):
            build_method(cfg.name, pocket_backbone, names, {**opts, **{k: getattr(published, k) for k in SCALED
                                                                     if hasattr(published, k)}}, templates)
