"""Feature cache: content keys, checksums, unwritable folders, sharded memory-mapped stores that resume after a
kill, and DataLoader workers that do not change a single bit."""

from __future__ import annotations

import ast
import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ncprompt.backbones import load_backbone
from ncprompt.data import cache_key
from ncprompt.data.base import ArrayImages, FileImages
from ncprompt.data.cache import CachedFeatures, CacheWarning, FeatureCache, augmented_view, encode_with
from ncprompt.data.feature_store import FeatureStore
from ncprompt.data.views import ImageViews, image_batches

ROOT = Path(__file__).resolve().parent.parent


def _images(n: int = 10, seed: int = 0, size: int = 20) -> ArrayImages:
    rng = np.random.default_rng(seed)
    return ArrayImages(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.arange(n) % 3)


def _write_pngs(folder: Path, images: np.ndarray) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, a in enumerate(images):
        paths.append(folder / f"{i}.png")
        Image.fromarray(a).save(paths[-1])
    return paths


# --- content keys ---------------------------------------------------------------------------------

@pytest.mark.parametrize("stat_only", [False, True])
def test_in_place_image_swap_changes_features(tiny_backbone, tmp_path, monkeypatch, stat_only):
    if stat_only:  # large datasets are keyed by size + mtime_ns + ctime_ns instead of their bytes
        monkeypatch.setattr(cache_key, "CONTENT_HASH_MAX_BYTES", 0)
    arr = _images(6).images
    paths = _write_pngs(tmp_path / "imgs", arr)
    images = FileImages(paths, [0, 1, 2, 0, 1, 2])
    cache = FeatureCache(tmp_path / "c")
    before = cache.features(tiny_backbone, images)
    st = os.stat(paths[2])
    time.sleep(0.02)  # beyond the file system's coarse timestamp clock
    Image.fromarray(arr[5]).save(paths[2])
    os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the old mtime put back (cp -p)
    after = cache.features(tiny_backbone, images)
    assert cache.misses == 2
    assert not torch.equal(after[2], before[2])
    assert torch.equal(after, FeatureCache(enabled=False).features(tiny_backbone, images))


def test_in_memory_array_changed_in_place_changes_key(tiny_backbone, tmp_path):
    images = _images(5)
    cache = FeatureCache(tmp_path)
    a = cache.features(tiny_backbone, images)
    images.images[1] = 255 - images.images[1]
    b = cache.features(tiny_backbone, images)
    assert cache.misses == 2 and not torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    # a subset is keyed by the images it selects only
    sub = images.subset([0, 2])
    k = cache.key(tiny_backbone, sub, 1, 0, False)
    images.images[3] = 0
    assert cache.key(tiny_backbone, sub, 1, 0, False) == k
    images.images[2] = 0
    assert cache.key(tiny_backbone, sub, 1, 0, False) != k


def test_random_init_models_get_different_keys(tmp_path):
    images = _images(4)
    cache = FeatureCache(tmp_path)
    torch.manual_seed(1)
    a = load_backbone("tiny-clip", device="cpu")
    torch.manual_seed(2)
    b = load_backbone("tiny-clip", device="cpu")
    torch.manual_seed(1)
    a2 = load_backbone("tiny-clip", device="cpu")
    assert a.weights_id == b.weights_id  # both "random-init": the old key's only weights part
    assert cache.key(a, images, 1, 0, False) != cache.key(b, images, 1, 0, False)
    assert cache.key(a, images, 1, 0, False) == cache.key(a2, images, 1, 0, False)
    fa, fb = cache.features(a, images), cache.features(b, images)
    assert cache.misses == 2 and (fa - fb).abs().max() > 1e-3
    assert torch.equal(cache.features(a2, images), fa) and cache.hits == 1
    # the memoised digest follows in-place changes of the weights
    k = cache.key(a, images, 1, 0, False)
    with torch.no_grad():
        a.model.visual.proj.mul_(2)
    assert cache.key(a, images, 1, 0, False) != k


def test_key_depends_on_views_seed_transform_and_precision(tiny_backbone, tmp_path):
    images, cache = _images(3), FeatureCache(tmp_path)
    keys = {cache.key(tiny_backbone, images, 2, 0, True), cache.key(tiny_backbone, images, 3, 0, True),
            cache.key(tiny_backbone, images, 2, 1, True), cache.key(tiny_backbone, images, 2, 0, False)}
    assert len(keys) == 4
    desc = cache.describe(tiny_backbone, images, 2, 0, True)
    assert desc["encoder"]["precision"] == "fp32" and desc["views"] == 2 and desc["seed"] == 0
    assert "RandomResizedCrop" in desc["encoder"]["transform"] and " at 0x" not in desc["encoder"]["transform"]


# --- checksums and unwritable folders --------------------------------------------------------------

def _entry(cache: FeatureCache) -> Path:
    (entry,) = [p for p in cache.root.iterdir() if p.is_dir()]
    return entry


def test_corrupted_cache_bytes_are_detected_and_recomputed(tiny_backbone, tmp_path):
    images = _images(10)
    cache = FeatureCache(tmp_path, shard_rows=4)
    ref = cache.features(tiny_backbone, images, views=2, seed=3, train=True)
    shard = _entry(cache) / "shard-00001.npy"
    raw = bytearray(shard.read_bytes())
    raw[-5] ^= 0xFF  # one flipped byte inside a feature value
    shard.write_bytes(bytes(raw))
    with pytest.warns(CacheWarning, match="shard-00001.npy is damaged .*checksum"):
        again = cache.features(tiny_backbone, images, views=2, seed=3, train=True)
    assert torch.equal(again, ref) and cache.misses == 2
    assert cache.features(tiny_backbone, images, views=2, seed=3, train=True).equal(ref) and cache.hits == 1
    (_entry(cache) / "manifest.json").write_text("{ not json")
    with pytest.warns(CacheWarning, match="manifest .* unreadable"):
        assert torch.equal(cache.features(tiny_backbone, images, views=2, seed=3, train=True), ref)
    (_entry(cache) / "shard-00002.npy").unlink()
    with pytest.warns(CacheWarning, match="shard-00002.npy is damaged"):
        assert torch.equal(cache.features(tiny_backbone, images, views=2, seed=3, train=True), ref)


def test_unwritable_cache_folder_warns_and_computes(tiny_backbone, tmp_path, monkeypatch):
    images = _images(5)
    ref = FeatureCache(enabled=False).features(tiny_backbone, images)
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a cache dir below a regular file cannot be created, even by root
    with pytest.warns(CacheWarning, match="not writable"):
        assert torch.equal(FeatureCache(blocker / "cache").features(tiny_backbone, images), ref)

    from ncprompt.data import feature_store

    def read_only(path, write):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(feature_store, "atomic_write", read_only)
    with pytest.warns(CacheWarning, match="Read-only file system"):
        assert torch.equal(FeatureCache(tmp_path / "ro").features(tiny_backbone, images), ref)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_cache_folder(tiny_backbone, tmp_path):
    images = _images(5)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.warns(CacheWarning, match="not writable"):
            FeatureCache(ro).features(tiny_backbone, images)
    finally:
        ro.chmod(0o755)


def test_write_failure_midway_keeps_going(tiny_backbone, tmp_path, monkeypatch):
    images = _images(10)
    ref = FeatureCache(enabled=False, shard_rows=4).features(tiny_backbone, images, views=2, train=True)
    from ncprompt.data.feature_store import ShardedFile

    real = ShardedFile.write_shard

    def disk_full(self, k, start, array):
        if k == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, k, start, array)

    monkeypatch.setattr(ShardedFile, "write_shard", disk_full)
    with pytest.warns(CacheWarning, match="No space left"):
        got = FeatureCache(tmp_path, shard_rows=4).features(tiny_backbone, images, views=2, train=True)
    assert torch.equal(got, ref)


# --- sharded memory-mapped stores ------------------------------------------------------------------

class Killed(Exception):
    pass


def test_kill_and_resume_of_a_sharded_build_is_bitwise_equal(tiny_backbone, tmp_path):
    images = _images(11)
    full = FeatureCache(tmp_path / "a", shard_rows=3).features(tiny_backbone, images, views=3, seed=7, train=True)
    cache = FeatureCache(tmp_path / "b", shard_rows=3)
    done: list[int] = []

    def kill_after_1(k):
        done.append(k)
        if k == 1:
            raise Killed

    cache.on_shard = kill_after_1
    with pytest.raises(Killed):
        cache.store(tiny_backbone, images, views=3, seed=7, train=True)
    assert sorted(p.name for p in _entry(cache).glob("shard-*")) == ["shard-00000.npy", "shard-00001.npy"]
    stale, fresh = _entry(cache) / ".shard-00002.npy.x1.tmp", _entry(cache) / ".shard-00002.npy.x2.tmp"
    stale.write_bytes(b"half a shard")  # left by a write killed long ago
    fresh.write_bytes(b"half a shard")  # another process may be writing it now
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    done.clear()
    cache.on_shard = done.append
    store = cache.store(tiny_backbone, images, views=3, seed=7, train=True)
    assert done == [2, 3]  # resumed at the next shard
    assert not stale.exists() and fresh.exists()
    assert store.memory_mapped and store.shape == (11, 3, 32)
    assert torch.equal(store.to_tensor(), full)


KILL_SCRIPT = """
import os, signal, sys
import numpy as np, open_clip, torch
torch.set_num_threads(2)
open_clip.add_model_config(sys.argv[1])
from ncprompt.backbones import load_backbone
from ncprompt.data.base import ArrayImages
from ncprompt.data.cache import FeatureCache
torch.manual_seed(0)
bb = load_backbone("tiny-clip", device="cpu")
rng = np.random.default_rng(0)
images = ArrayImages(rng.integers(0, 256, (11, 20, 20, 3), dtype=np.uint8), np.arange(11) % 3)
cache = FeatureCache(sys.argv[2], shard_rows=3)
cache.on_shard = lambda k: os.kill(os.getpid(), signal.SIGKILL) if k == 2 else None
cache.store(bb, images, views=2, seed=4, train=True)
"""


def test_sigkilled_build_resumes(tiny_backbone, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(ROOT / "tests/assets/tiny-clip.json"),
                        str(tmp_path / "c")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stderr
    images = _images(11)
    cache = FeatureCache(tmp_path / "c", shard_rows=3)
    done: list[int] = []
    cache.on_shard = done.append
    got = cache.features(tiny_backbone, images, views=2, seed=4, train=True)
    assert done == [3]
    ref = FeatureCache(tmp_path / "ref", shard_rows=3).features(tiny_backbone, images, views=2, seed=4, train=True)
    # shards 0-2 came from another process (its own thread pool and kernel choice): fp32 tolerance, not bits;
    # the shard this process wrote reads back bit for bit (a cache read replays the same bytes)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(FeatureCache(tmp_path / "c", shard_rows=3).features(tiny_backbone, images, views=2, seed=4,
                                                                          train=True), got)


def test_training_reads_batches_from_the_memory_map(tiny_backbone, tmp_path):
    images = _images(9)
    store = FeatureCache(tmp_path, shard_rows=4).store(tiny_backbone, images, views=3, seed=1, train=True)
    assert store.memory_mapped and len(store.shards) == 3
    t = store.to_tensor()
    idx, views = torch.tensor([8, 0, 4, 3, 5, 8]), torch.tensor([2, 1, 0, 2, 1, 0])
    assert torch.equal(CachedFeatures(store)(idx, views), t[idx, views])
    assert torch.equal(CachedFeatures(t)(idx, views), t[idx, views])
    assert torch.equal(store.gather(idx), t[idx])
    with pytest.raises(IndexError):
        store.gather(torch.tensor([9]))
    assert FeatureStore.from_tensor(t).gather(idx, views).equal(t[idx, views])


# --- parallel data ---------------------------------------------------------------------------------

def test_workers_do_not_change_a_bit(tiny_backbone, tmp_path):
    images = _images(7)
    feats = [FeatureCache(enabled=False, workers=w, shard_rows=3).features(
        tiny_backbone, images, views=3, seed=2, train=True, batch_size=6) for w in (0, 2)]
    assert torch.equal(feats[0], feats[1])
    centre = [encode_with(tiny_backbone.encode_images, tiny_backbone, images, batch_size=4, workers=w) for w in (0, 2)]
    assert torch.equal(centre[0], centre[1])
    assert torch.allclose(centre[0], FeatureCache(enabled=False).features(tiny_backbone, images), atol=1e-6)


def test_views_are_the_seeded_views_of_the_previous_design(tiny_backbone):
    """Pixels: bitwise those of augmented_view (the seeded design kept); features: per view equal to encoding
    that view alone, to float rounding (batch composition changed: whole images per batch, shard by shard)."""
    images = _images(5)
    tf = tiny_backbone.train_transform
    ds = ImageViews(images, tf, views=3, seed=9)
    (batch,) = list(image_batches(ds, [[0, 1, 2, 3, 4]], num_workers=0))
    for i in range(5):
        for v in range(3):
            assert torch.equal(batch[i, v], augmented_view(tf, images.load(i), 9, i, v))
    feats = FeatureCache(enabled=False).features(tiny_backbone, images, views=3, seed=9, train=True)
    one = tiny_backbone.encode_images(augmented_view(tf, images.load(3), 9, 3, 1)[None])[0]
    assert torch.allclose(feats[3, 1], one, atol=1e-5)
    assert (feats[:, 0] - feats[:, 1]).abs().max() > 1e-3


def test_building_features_leaves_the_global_rng_alone(tiny_backbone):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    FeatureCache(enabled=False).features(tiny_backbone, _images(3), views=2, train=True)
    encode_with(tiny_backbone.encode_images, tiny_backbone, _images(3))
    assert torch.equal(torch.rand(3), expected)


def test_cache_modules_do_not_import_upward():
    data = ROOT / "src/ncprompt/data"
    for name in ("cache.py", "cache_key.py", "feature_store.py", "views.py", "base.py"):
        tree = ast.parse((data / name).read_text())
        mods = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        mods += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        upward = [m for m in mods
                  if m.startswith("ncprompt.") and not m.startswith(("ncprompt.data", "ncprompt.utils"))]
        assert not upward, f"{name} imports {upward}"
