"""Image features of a frozen encoder, computed once and stored on disk.

Training views: for image i and view v the augmented image is ``train_transform(img_i)`` drawn under the
torch seed ``view_seed(seed, i, v)`` (:mod:`ncprompt.data.views`), so view (i, v) is the same image whether
it is encoded now, cached, or re-encoded live in a later step, and whatever the number of loader workers.
Evaluation uses one centre view (eval transform).

The cache key is a SHA-256 of the images' content and labels (:func:`cache_key.content_digest`), the
encoder's actual weights, precision, parameter dtypes, device type and transform
(:func:`cache_key.encoder_description`), the number of views, the seed and the stored dtype. An entry is a
folder of memory-mapped row shards with a checksummed manifest (:mod:`ncprompt.data.feature_store`),
written shard by shard and resumed after a kill. A damaged entry is recomputed; a cache folder that cannot
be written is used read-only (features are then computed in RAM), each with a one-line
:class:`CacheWarning`.

The encoder is any Backbone-like object (``encode_images``, ``train_transform``, ``eval_transform``,
``model``, ``name``, ``precision``, ``device``): this module does not import the backbones.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ncprompt.data.base import DataError, LabeledImages
from ncprompt.data.cache_key import content_digest, encoder_description
from ncprompt.data.feature_store import CacheWarning, FeatureStore, ShardedFile, shard_ranges, warn
from ncprompt.data.views import BatchLoader, ImageViews, ViewItems, augmented_view, image_batches, view_seed
from ncprompt.utils import FileError, progress

__all__ = ["CacheWarning", "CachedFeatures", "FeatureCache", "FeatureSource", "FeatureStore", "ImageEncoder",
           "LiveFeatures", "PixelViews", "augmented_view", "default_cache_dir", "encode_images", "encode_with",
           "view_seed"]

KEY_VERSION = "v2"
#: rows (images) per shard: about 64 MB per shard for 512-dimensional float32 features
SHARD_BYTES = 64 << 20


class ImageEncoder(Protocol):
    """What the cache needs of a backbone (``ncprompt.backbones.Backbone`` is one)."""

    name: str
    precision: str
    train_transform: Any
    eval_transform: Any
    device: torch.device

    def encode_images(self, images: torch.Tensor) -> torch.Tensor: ...


def default_cache_dir(env: dict[str, str] | None = None) -> Path:
    """``$NCPROMPT_CACHE``, else ``$XDG_CACHE_HOME/ncprompt``, else ``~/.cache/ncprompt`` (empty values unset)."""
    env = os.environ if env is None else env
    if env.get("NCPROMPT_CACHE"):
        return Path(env["NCPROMPT_CACHE"]).expanduser()
    xdg = env.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "ncprompt"


def default_shard_rows(views: int, embed_dim: int = 512) -> int:
    return max(1, SHARD_BYTES // (4 * embed_dim * max(views, 1)))


class FeatureCache:
    """A folder of feature stores (one sub-folder per key), keyed by content.

    Args:
        root: the cache folder (default :func:`default_cache_dir`: ``$NCPROMPT_CACHE``, ``$XDG_CACHE_HOME/ncprompt``
            or ``~/.cache/ncprompt``).
        enabled: False computes features in RAM and neither reads nor writes the folder.
        workers: DataLoader worker processes that decode and augment images (0: this process);
            the features do not depend on it.
        shard_rows: images per shard (default: about 64 MB of 512-dimensional features per shard).
    """

    def __init__(self, root: str | Path | None = None, enabled: bool = True, workers: int = 0,
                 shard_rows: int | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir()
        self.enabled = enabled
        self.workers = workers
        self.shard_rows = shard_rows
        self.hits = 0
        self.misses = 0
        #: called with the shard number after each shard is stored (tests inject kills here)
        self.on_shard: Callable[[int], None] | None = None
        #: distributed builds (ncprompt.engine.distributed.attach_cache): ``spread(todo, compute)`` computes each
        #: shard on one rank and yields all of them on every rank; only the rank with ``writes`` stores them
        self.spread: Callable[[list[int], Callable[[list[int]], Iterator[tuple[int, np.ndarray]]]],
                              Iterator[tuple[int, np.ndarray]]] | None = None
        self.writes = True
        self._unwritable_warned = False

    def describe(self, backbone: ImageEncoder, images: LabeledImages, views: int, seed: int,
                 train: bool) -> dict[str, Any]:
        """Everything the features depend on (stored in the entry's manifest)."""
        return {"encoder": encoder_description(backbone, train), "images": content_digest(images),
                "n": len(images), "views": views if train else 0, "seed": seed if train else 0,
                "dtype": "float32", "version": KEY_VERSION}

    def key(self, backbone: ImageEncoder, images: LabeledImages, views: int, seed: int, train: bool) -> str:
        return _key_of(self.describe(backbone, images, views, seed, train))

    def features(self, backbone: ImageEncoder, images: LabeledImages, views: int = 1, seed: int = 0,
                 train: bool = False, batch_size: int = 128, desc: str = "") -> torch.Tensor:
        """(N, views, E) training-view features, or (N, E) centre-view features when ``train`` is False, in RAM."""
        return self.store(backbone, images, views, seed, train, batch_size, desc).to_tensor()

    def store(self, backbone: ImageEncoder, images: LabeledImages, views: int = 1, seed: int = 0,
              train: bool = False, batch_size: int = 128, desc: str = "") -> FeatureStore:
        """Like :meth:`features`, as a :class:`FeatureStore` of memory-mapped shards (in RAM when the cache is
        off or cannot be written): training reads its batches from the memory map."""
        if len(images) == 0:
            raise DataError("no images to encode: the split is empty; check the dataset and the shots")
        describe = self.describe(backbone, images, views, seed, train)
        rows = self.shard_rows or default_shard_rows(views if train else 1)
        entry = ShardedFile(self.root / _key_of(describe), describe, len(images), rows)
        done: dict[int, np.ndarray] = entry.valid_shards() if self.enabled else {}
        if self.enabled and entry.complete(done):
            self.hits += 1
            return FeatureStore([done[k] for k in sorted(done)])
        self.misses += 1
        writable = self.enabled and self.writes and self._writable(entry)
        ranges = shard_ranges(len(images), entry.shard_rows)
        todo = [k for k in range(len(ranges)) if k not in done]
        shards: dict[int, np.ndarray] = dict(done)

        def encode(ks: list[int]) -> Iterator[tuple[int, np.ndarray]]:
            return encode_shards(backbone, images, views, seed, train, ranges, ks, batch_size, self.workers, desc)

        for k, feats in (self.spread(todo, encode) if self.spread is not None else encode(todo)):
            if writable:
                try:
                    feats = entry.write_shard(k, ranges[k][0], feats)
                except (OSError, FileError) as e:  # e.g. a full disk (atomic writes raise FileError)
                    writable = False
                    why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).partition("; ")[0]
                    warn(f"cannot write to the feature cache {entry.folder} ({why}); going on without caching; "
                         "free space or pass another --cache-dir")
            shards[k] = feats
            if self.on_shard is not None:
                self.on_shard(k)
        return FeatureStore([shards[k] for k in range(len(ranges))])

    def _writable(self, entry: ShardedFile) -> bool:
        why = entry.probe_writable()
        if why is not None and not self._unwritable_warned:
            self._unwritable_warned = True
            warn(f"feature cache folder {self.root} is not writable ({why}); features are computed without "
                 "caching; pass a writable --cache-dir (or --no-cache) to silence this")
        return why is None


def _key_of(describe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(describe, sort_keys=True, default=str).encode()).hexdigest()[:32]


@torch.no_grad()
def encode_shards(backbone: ImageEncoder, images: LabeledImages, views: int, seed: int, train: bool,
                  ranges: list[tuple[int, int]], todo: list[int], batch_size: int = 128, workers: int = 0,
                  desc: str = "") -> Iterator[tuple[int, np.ndarray]]:
    """Features of the shards ``todo`` (rows ``ranges[k]``), one shard at a time: ``(k, array)`` with
    array ``(rows, views, E)`` (train) or ``(rows, E)``. Batches hold whole images (all their views) and never
    cross a shard, so a shard's features do not depend on which other shards are computed."""
    v = views if train else 1
    per_batch = max(1, batch_size // v)
    batches = [list(range(a, min(a + per_batch, stop))) for k in todo
               for start, stop in [ranges[k]] for a in range(start, stop, per_batch)]
    dataset = ImageViews(images, backbone.train_transform if train else backbone.eval_transform,
                         views if train else None, seed)
    bar = progress(total=sum(len(b) for b in batches) * v,
                   desc=desc or ("encoding train views" if train else "encoding"), unit="img")
    it = iter(todo)
    k = next(it)
    buf: np.ndarray | None = None
    filled = 0
    for pixels in image_batches(dataset, batches, workers):
        b = len(pixels)
        f = backbone.encode_images(pixels.reshape(-1, *pixels.shape[-3:])).float().cpu().numpy()
        f = f.reshape(b, v, -1) if train else f
        if buf is None:
            buf = np.empty((ranges[k][1] - ranges[k][0], *f.shape[1:]), dtype=np.float32)
        buf[filled : filled + b] = f
        filled += b
        bar.update(b * v)
        if filled == len(buf):
            yield k, buf
            buf, filled = None, 0
            k = next(it, -1)
    bar.close()


def encode_images(backbone: ImageEncoder, images: LabeledImages, views: int = 1, seed: int = 0, train: bool = False,
                  batch_size: int = 128, desc: str = "", workers: int = 0) -> torch.Tensor:
    """Encode every image (and every training view) with the frozen image tower, in RAM, no cache."""
    return FeatureCache(enabled=False, workers=workers).features(backbone, images, views, seed, train, batch_size,
                                                                 desc)


class FeatureSource:
    """Image features (or pixels) of training views, looked up by (image index, view index)."""

    num_views: int

    def __call__(self, indices: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def batches(self, plan: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[torch.Tensor]:
        """``self(indices, views)`` of each batch of ``plan`` (one epoch), in order; a source may prepare
        them ahead (:class:`PixelViews`: DataLoader workers)."""
        for indices, views in plan:
            yield self(indices, views)


class CachedFeatures(FeatureSource):
    """Looks training views up in a ``(N, views, E)`` tensor or :class:`FeatureStore` (memory-mapped)."""

    def __init__(self, features: torch.Tensor | FeatureStore) -> None:
        self.features = features
        self.num_views = features.shape[1]

    def __call__(self, indices: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        if isinstance(self.features, FeatureStore):
            return self.features.gather(indices, views)
        return self.features[indices, views]


class LiveFeatures(FeatureSource):
    """Encodes each requested view on the fly, as the reference code bases do (for tests and benchmarks)."""

    def __init__(self, backbone: ImageEncoder, images: LabeledImages, views: int, seed: int, workers: int = 0) -> None:
        self.backbone, self.num_views = backbone, views
        self.pixels = PixelViews(backbone, images, views, seed, workers)

    @torch.no_grad()
    def __call__(self, indices: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_images(self.pixels(indices, views)).cpu()


class PixelViews(FeatureSource):
    """The augmented pixels ``(B, C, H, W)`` of training views (the same seeded views as the cache), for
    methods whose image features depend on learned prompts and so cannot be cached. Decoding and augmentation
    run in ``workers`` DataLoader processes (0: this process) that prepare an epoch's batches ahead
    (:meth:`batches`); view (i, v) is drawn under ``view_seed(seed, i, v)``, so the pixels are bitwise the
    same for any number of workers."""

    def __init__(self, backbone: ImageEncoder, images: LabeledImages, views: int, seed: int, workers: int = 0) -> None:
        self.backbone, self.images, self.num_views, self.seed, self.workers = backbone, images, views, seed, workers
        self.loader = BatchLoader(ViewItems(images, backbone.train_transform, seed), workers,
                                  pin_memory=torch.device(backbone.device).type == "cuda")

    def __call__(self, indices: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        (pixels,) = self.batches([(indices, views)])
        return pixels

    def batches(self, plan: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[torch.Tensor]:
        return self.loader([list(zip(i.tolist(), v.tolist(), strict=True)) for i, v in plan])


#: ``rows(n, compute)`` returning compute(0, n); set by ncprompt.engine.distributed under torchrun to compute
#: row shards on the ranks and gather them (live encoding of evaluation images)
ROW_SHARDING: list[Callable[[int, Callable[[int, int], torch.Tensor]], torch.Tensor] | None] = [None]


@torch.no_grad()
def encode_with(encode: Callable[[torch.Tensor], torch.Tensor], backbone: ImageEncoder, images: LabeledImages,
                batch_size: int = 128, workers: int = 0) -> torch.Tensor:
    """Centre-view features of every image through ``encode`` (e.g. a method's prompted encoder)."""
    dataset = ImageViews(images, backbone.eval_transform)

    def rows(lo: int, hi: int) -> torch.Tensor:
        batches = [list(range(a, min(a + batch_size, hi))) for a in range(lo, hi, batch_size)]
        return torch.cat([encode(x.to(backbone.device)).float().cpu()
                          for x in image_batches(dataset, batches, workers)])

    shard = ROW_SHARDING[0]
    return shard(len(images), rows) if shard is not None else rows(0, len(images))
