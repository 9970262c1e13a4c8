"""Training views: the crop area and flip are config keys; they change the run fingerprint and the cache key,
and the backbone they are applied to is shared, not copied."""

from __future__ import annotations

from ncprompt.config import RunConfig
from ncprompt.data.cache_key import encoder_description
from ncprompt.protocols.experiment import Experiment


def test_with_augmentation_shares_the_model_and_changes_the_views(tiny_backbone):
    bb = tiny_backbone.with_augmentation(0.5, flip=False)
    assert bb.model is tiny_backbone.model
    assert "scale=(0.5, 1.0)" in repr(bb.train_transform)
    assert "HorizontalFlip" not in repr(bb.train_transform)
    assert "scale=(0.08, 1.0)" in repr(tiny_backbone.train_transform)  # CoOp's views, untouched
    assert "HorizontalFlip" in repr(tiny_backbone.train_transform)
    assert repr(bb.eval_transform) == repr(tiny_backbone.eval_transform)
    # the feature cache keys training views on the transform, so old entries are never reused
    assert encoder_description(bb, train=True) != encoder_description(tiny_backbone, train=True)
    assert encoder_description(bb, train=False) == encoder_description(tiny_backbone, train=False)


def test_crop_and_flip_are_in_the_fingerprint_and_reach_the_experiment(tiny_backbone, fmnist_small, tmp_path):
    base = {"model": "tiny-clip", "method": "coop", "shots": 1, "cache_dir": str(tmp_path)}
    a = RunConfig.from_dict(base)
    b = RunConfig.from_dict({**base, "train": {"crop_min": 0.5, "flip": False}})
    assert (a.train.crop_min, a.train.flip) == (0.08, True)
    assert a.fingerprint() != b.fingerprint()
    assert Experiment(a, backbone=tiny_backbone, dataset=fmnist_small).backbone is tiny_backbone
    exp = Experiment(b, backbone=tiny_backbone, dataset=fmnist_small)
    assert "scale=(0.5, 1.0)" in repr(exp.backbone.train_transform)
    assert exp.backbone.model is tiny_backbone.model
