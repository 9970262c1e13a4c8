"""Bench 3 (issue 21): the per-concept artwork split, its pretraining pack, the b3_ suite and the licences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ncprompt.data import DATASETS, dataset_options
from ncprompt.pocket import bench3 as B3
from ncprompt.pocket import emoji as E
from ncprompt.pocket import emoji_extra as X
from ncprompt.pocket import suite3 as S3
from ncprompt.pocket import world as W
from ncprompt.pocket.pretrain import pretrain

REPO = Path(__file__).resolve().parents[1]
TINY = Path(__file__).parent / "assets" / "tiny-clip.json"
MAIN = [B3.ARTISTS3.index(a) for a in B3.MAIN]
SHIFT = [B3.ARTISTS3.index(a) for a in B3.SHIFT]
bank_installed = pytest.mark.skipif(not X.bank_path().is_file(), reason="bench-3 bank not rendered (setup.sh)")


def _synthetic_has(n: int = 400, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Random artwork availability over the ten artists: every number of main artworks from 2 to 6 occurs."""
    rng = np.random.default_rng(seed)
    has = rng.random((n, len(B3.ARTISTS3))) < 0.7
    has[:, [B3.ARTISTS3.index("google"), B3.ARTISTS3.index("twitter")]] = True  # as every concept has
    return has, [f"k{i:04x}" for i in range(n)]


# ---------------------------------------------------------------------------------- the split


def test_split_is_three_way_and_disjoint_per_concept():
    has, keys = _synthetic_has()
    roles = B3.split_artworks(has, keys)
    assert ((roles != B3.NONE) == has).all()  # every drawn artwork has one role, nothing else has one
    n_main = has[:, MAIN].sum(1)
    assert set(n_main.tolist()) >= {2, 3, 4, 5, 6}
    for c in range(len(keys)):
        r = roles[c, MAIN]
        if n_main[c] >= B3.MIN_ARTWORKS:  # one test and one val artwork, >= 1 train, >= 1 pretraining
            assert (r == B3.TEST).sum() == 1 and (r == B3.VAL).sum() == 1
            assert (r == B3.TRAIN).sum() == (2 if n_main[c] >= 6 else 1) and (r == B3.PRETRAIN).sum() >= 1
        else:  # too few artworks: no class, all of them in pretraining
            assert set(r[r != B3.NONE].tolist()) == {B3.PRETRAIN}
        assert set(roles[c, SHIFT][has[c, SHIFT]].tolist()) <= {B3.PRETRAIN, B3.HELD_OUT}
        assert roles[c, B3.ARTISTS3.index("symbola")] in (B3.NONE, B3.HELD_OUT)


def test_no_version_of_a_test_design_is_in_pretraining():
    has, keys = _synthetic_has()
    roles = B3.split_artworks(has, keys)
    checked = 0
    for main, versions in B3.SAME_DESIGN.items():
        m = B3.ARTISTS3.index(main)
        for v in versions:
            col = B3.ARTISTS3.index(v)
            unseen = np.isin(roles[:, m], (B3.TEST, B3.VAL)) & has[:, col]
            assert (roles[unseen, col] == B3.HELD_OUT).all(), (main, v)
            checked += int(unseen.sum())
    assert checked > 50


def test_pretraining_sees_only_pretraining_artworks():
    has, keys = _synthetic_has(60)
    roles = B3.split_artworks(has, keys)
    sprites = torch.from_numpy(np.where(has, 200, 0).astype(np.uint8)).view(60, -1, 1, 1, 1).expand(-1, -1, 4, 32, 32)
    seen = B3.seen_sprites(sprites, roles)
    visible = (seen[:, :, 3].flatten(2).amax(2) > 0).numpy()
    assert (visible == (roles == B3.PRETRAIN)).all()  # no test, val, train or held-out artwork survives
    concepts, _ = E.load()
    cat = W.build_catalogue(concepts[:60], seen, B3.ARTISTS3)
    batch = W.PretrainWorld(seed=3, mix=B3.PRETRAIN_MIX3, cat=cat).batch(512)
    assert (roles[batch.concept.numpy(), batch.artist.numpy()] == B3.PRETRAIN).all()


def test_every_artist_style_is_in_training_and_in_pretraining():
    has, keys = _synthetic_has()
    roles = B3.split_artworks(has, keys)
    for a in MAIN:  # the held-out artist changes from class to class: each one is also trained on
        assert {B3.PRETRAIN, B3.TRAIN, B3.TEST, B3.VAL} <= set(roles[:, a].tolist()), B3.ARTISTS3[a]
    for a in SHIFT:
        assert {B3.PRETRAIN, B3.HELD_OUT} <= set(roles[:, a].tolist()), B3.ARTISTS3[a]


def test_split_is_deterministic_and_keyed_by_concept():
    has, keys = _synthetic_has()
    roles = B3.split_artworks(has, keys)
    assert (B3.split_artworks(has, keys) == roles).all()
    sub = list(range(0, len(keys), 7))[::-1]  # another subset, another order: the same role per concept
    assert (B3.split_artworks(has[sub], [keys[i] for i in sub]) == roles[sub]).all()


@bank_installed
def test_installed_split_counts_and_every_artist_trained():
    roles = B3.roles()
    counts = B3.split_counts(roles)
    assert counts["classes (>= 4 main artworks)"] >= 1000
    for a in B3.MAIN:
        assert counts["by artist"][a]["train"] > 0 and counts["by artist"][a]["pretrain"] > 0
    for name in S3.SUITE3:  # within every role's dataset, each main artist is some class's training artwork
        r = roles[S3.SETS3[name].select()]
        trained = {B3.ARTISTS3[a] for a in MAIN if (r[:, a] == B3.TRAIN).any()}
        assert len(trained) >= 3, (name, trained)


# ---------------------------------------------------------------------------------- pack and pretraining


def test_pack_round_trips_bit_for_bit(tmp_path):
    concepts, _ = E.load()
    g = torch.Generator().manual_seed(0)
    sprites = torch.randint(0, 256, (5, len(B3.ARTISTS3), 4, 32, 32), generator=g, dtype=torch.uint8)
    path = B3.write_pack(tmp_path / "p.npz", concepts[:5], sprites)
    cat = B3.load_pack(path)
    assert torch.equal(cat.sprites, sprites) and cat.artists == B3.ARTISTS3
    assert [c.label for c in cat.concepts] == [c.label for c in concepts[:5]]
    assert cat.concepts[0].tags == concepts[0].tags
    with pytest.raises(Exception, match="not found"):
        B3.load_pack(tmp_path / "missing.npz")


def test_bench3_pretraining_from_a_pack_runs_and_loads_as_a_model(tmp_path):
    from ncprompt.backbones import load_backbone

    concepts, _ = E.load()
    has, _ = _synthetic_has(40)
    keys = [c.key for c in concepts[:40]]
    roles = B3.split_artworks(has, keys)
    sprites = torch.from_numpy(np.where(has, 180, 0).astype(np.uint8)).view(40, -1, 1, 1, 1).expand(-1, -1, 4, 32, 32)
    pack = B3.write_pack(tmp_path / "pack.npz", concepts[:40], B3.seen_sprites(sprites.contiguous(), roles))
    kw = dict(steps=3, batch_size=8, seed=1, log_every=1, threads=1, warmup=1, model_config=TINY, bench=3)
    out = pretrain(tmp_path / "run", sprites=pack, **kw)
    assert out["steps"] == 3 and np.isfinite(out["final_loss_avg"])
    again = pretrain(tmp_path / "run2", sprites=pack, **kw)
    wa, wb = (load_file(str(tmp_path / d / "pocket.safetensors")) for d in ("run", "run2"))
    assert again["final_loss_avg"] == out["final_loss_avg"] and all(torch.equal(wa[k], wb[k]) for k in wa)
    backbone = load_backbone(f"local-dir:{tmp_path / 'run'}")
    assert backbone is not None
    with pytest.raises(ValueError, match="bench-3 pack"):
        pretrain(tmp_path / "run3", sprites=pack, **{**kw, "bench": 1})


# ---------------------------------------------------------------------------------- the suite


def test_bench3_suite_is_registered_beside_the_old_one():
    assert len(S3.SUITE3) == 11 and all(n.startswith("b3_") for n in S3.SETS3)
    for name in S3.SETS3:
        assert getattr(DATASETS.get(name), "data_seed_follows_run", False)
    for name in ("emoji_generic", "emoji_hands_openmoji", "emoji_animals"):
        assert not getattr(DATASETS.get(name), "data_seed_follows_run", False)


@bank_installed
def test_class_counts_of_both_benches_come_from_their_sets():
    from ncprompt.pocket import suite as S

    sizes = S3.suite_sizes(3)
    assert list(sizes) == S3.SUITE3 and all(k > 1 for k in sizes.values())
    assert sizes["b3_hands"] == len(S3.SETS3["b3_hands"].select())
    assert S3.class_count("b3_generic_sketch") == len(S3.SETS3["b3_generic_sketch"].select())
    assert list(S3.suite_sizes(1)) == S.SUITE
    assert S3.class_count("emoji_animals") == len(S.SETS["emoji_animals"].select())
    with pytest.raises(KeyError, match="not a pocket suite dataset"):
        S3.class_count("imagenet")


def test_data_seed_follows_run_seed_for_bench3_only():
    assert dataset_options("b3_hands", {}, 3) == {"seed": 3}
    assert dataset_options("emoji_hands_openmoji", {}, 3) == {}  # the earlier suite: its builder's data seed 0
    assert dataset_options("b3_hands", {"seed": 7}, 3) == {"seed": 7}  # an explicit option wins
    assert dataset_options("no_such_dataset", {}, 3) == {}


@bank_installed
def test_bench3_dataset_pools_follow_the_split_and_the_seed():
    d1, d1b, d2 = (DATASETS.get("b3_hands")(seed=s) for s in (1, 1, 2))
    assert np.array_equal(d1.test.images, d1b.test.images)
    assert not np.array_equal(d1.train.images, d2.train.images)  # seeds draw their own images
    concepts = S3.SETS3["b3_hands"].select()
    roles = B3.roles()[concepts]
    for split, role in S3.SPLIT_ROLES.items():
        allowed = S3.allowed_artworks(concepts, split).numpy()
        assert (allowed == (roles == role)).all() and allowed.any(1).all()
    held = S3.allowed_artworks(S3.SETS3["b3_generic_mono"].select(), "test", "symbola").numpy()
    assert held.any(1).all() and held.sum(1).max() == 1


# ---------------------------------------------------------------------------------- licences


OPEN = {"MIT", "Apache-2.0", "CC-BY-4.0", "CC-BY-SA-4.0"}


def test_every_bench3_package_is_pinned_licensed_and_documented():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    datasets_md = (REPO / "docs" / "datasets.md").read_text()
    for artist in X.EXTRA_ARTISTS:
        spec, licence = X.PACKAGES[artist], X.LICENCES[artist]
        assert licence in OPEN, artist
        assert f"\"{spec} {X.FOLDERS[artist]}\"" in setup, spec  # pinned and fetched by setup.sh
        assert spec.rsplit("@", 1)[0] in datasets_md and licence in datasets_md, spec
        info = E.EMOJI_DIR / X.FOLDERS[artist] / "package.json"
        if info.is_file():  # the package's own files state the licence we list
            assert X.package_licence(E.EMOJI_DIR, artist) == licence
            assert json.loads(info.read_text())["version"] == spec.rsplit("@", 1)[1]


class _Stop(Exception):
    pass


class _Backbone:
    def with_augmentation(self, *a, **k):
        return self


@pytest.mark.parametrize(("dataset", "run_seed", "data_seed"), [("b3_hands", 3, 3), ("emoji_hands_openmoji", 3, 0)])
def test_a_run_builds_bench3_data_with_its_own_seed(monkeypatch, dataset, run_seed, data_seed):
    from ncprompt.config import RunConfig
    from ncprompt.protocols import experiment

    seen = {}

    def fake_get_dataset(name, root=None, **options):
        seen.update(options)
        raise _Stop

    monkeypatch.setattr(experiment, "get_dataset", fake_get_dataset)
    cfg = RunConfig.from_dict({"data": {"dataset": dataset}, "train": {"seed": run_seed}})
    with pytest.raises(_Stop):
        experiment.Experiment(cfg, backbone=_Backbone())
    assert seen.get("seed", 0) == data_seed  # the earlier suite: no option, its builder's own data seed 0
