"""Image features of a frozen encoder, computed once and stored on disk.

Training views: for image i and view v the augmented image is ``train_transform(img_i)`` drawn
under the torch seed ``mix(seed, i, v)``, so view (i, v) is the same image whether it is encoded
now, cached, or re-encoded live in a later step. Evaluation uses one centre view (eval transform).
The cache key hashes model + weights + transform + precision + the split's content + views + seed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ncprompt.backbones.openclip import Backbone
from ncprompt.data.base import LabeledImages
from ncprompt.utils import atomic_write, progress


def view_seed(seed: int, index: int, view: int) -> int:
    """The torch seed of augmented view ``view`` of image ``index``."""
    return (((seed * 1_000_003) + view) * 10_000_019 + index) % (2**63 - 1)


def augmented_view(
    transform: Callable[[Any], torch.Tensor], image: Any, seed: int, index: int, view: int
) -> torch.Tensor:
    """The augmented tensor of view ``view`` of image ``index`` (independent of call order).

    The transform draws from torch's default CPU generator, which is re-seeded for this view and
    restored afterwards (cheaper than ``torch.manual_seed``, which also seeds every accelerator)."""
    gen = torch.default_generator
    state = gen.get_state()
    try:
        gen.manual_seed(view_seed(seed, index, view))
        return transform(image)
    finally:
        gen.set_state(state)


def default_cache_dir() -> Path:
    return Path(os.environ.get("NCPROMPT_CACHE", Path.home() / ".cache" / "ncprompt"))


class FeatureCache:
    """A folder of safetensors files of image features, keyed by content."""

    def __init__(self, root: str | Path | None = None, enabled: bool = True) -> None:
        self.root = Path(root) if root else default_cache_dir()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def key(self, backbone: Backbone, images: LabeledImages, views: int, seed: int, train: bool) -> str:
        tf = backbone.train_transform if train else backbone.eval_transform
        parts = [backbone.name, backbone.weights_id, backbone.precision, repr(tf), images.fingerprint,
                 views if train else 0, seed if train else 0, "v1"]
        return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:24]

    def features(self, backbone: Backbone, images: LabeledImages, views: int = 1, seed: int = 0,
                 train: bool = False, batch_size: int = 128, desc: str = "") -> torch.Tensor:
        """(N, views, E) training-view features, or (N, E) centre-view features when ``train`` is False."""
        key = self.key(backbone, images, views, seed, train)
        path = self.root / f"{key}.safetensors"
        if self.enabled and path.is_file():
            try:
                feats = load_file(str(path))["features"]
                if feats.shape[0] == len(images):
                    self.hits += 1
                    return feats
            except Exception:  # noqa: BLE001 - a damaged cache file is recomputed
                pass
        self.misses += 1
        feats = encode_images(backbone, images, views, seed, train, batch_size, desc)
        if self.enabled:
            self.root.mkdir(parents=True, exist_ok=True)
            meta = {"model": backbone.name, "weights": backbone.weights_id, "n": str(len(images)),
                    "views": str(views if train else 0)}
            atomic_write(path, lambda p: save_file({"features": feats.contiguous()}, str(p), metadata=meta))
        return feats


@torch.no_grad()
def encode_images(backbone: Backbone, images: LabeledImages, views: int = 1, seed: int = 0, train: bool = False,
                  batch_size: int = 128, desc: str = "") -> torch.Tensor:
    """Encode every image (and every training view) with the frozen image tower."""
    n = len(images)
    out: torch.Tensor | None = None
    jobs = [(i, v) for v in range(views if train else 1) for i in range(n)]
    bar = progress(total=len(jobs), desc=desc or ("encoding train views" if train else "encoding"), unit="img")
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        if train:
            tf = backbone.train_transform
            batch = torch.stack([augmented_view(tf, images.load(i), seed, i, v) for i, v in chunk])
        else:
            batch = torch.stack([backbone.eval_transform(images.load(i)) for i, _ in chunk])
        f = backbone.encode_images(batch).cpu()
        if out is None:
            out = torch.empty((n, views, f.shape[1]) if train else (n, f.shape[1]), dtype=torch.float32)
        idx = torch.tensor([i for i, _ in chunk])
        if train:
            out[idx, torch.tensor([v for _, v in chunk])] = f
        else:
            out[idx] = f
        bar.update(len(chunk))
    bar.close()
    assert out is not None, "no images to encode"
    return out


class FeatureSource:
    """Image features of training views, looked up by (image index, view index)."""

    num_views: int

    def __call__(self, indices: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class CachedFeatures(FeatureSource):
    def __init__(self, features: torch.Tensor) -> None:
        self.features = features
        self.num_views = features.shape[1]

    def __call__(self, indices: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        return self.features[indices, views]


class LiveFeatures(FeatureSource):
    """Encodes each requested view on the fly, as the reference code bases do (for tests and benchmarks)."""

    def __init__(self, backbone: Backbone, images: LabeledImages, views: int, seed: int) -> None:
        self.backbone, self.num_views = backbone, views
        self.pixels = PixelViews(backbone, images, views, seed)

    @torch.no_grad()
    def __call__(self, indices: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_images(self.pixels(indices, views)).cpu()


class PixelViews(FeatureSource):
    """The augmented pixels of training views (same seeded views as the cache), for methods whose
    image features depend on learned prompts and so cannot be cached."""

    def __init__(self, backbone: Backbone, images: LabeledImages, views: int, seed: int) -> None:
        self.backbone, self.images, self.num_views, self.seed = backbone, images, views, seed

    def __call__(self, indices: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        tf = self.backbone.train_transform
        return torch.stack([augmented_view(tf, self.images.load(int(i)), self.seed, int(i), int(v))
                            for i, v in zip(indices.tolist(), views.tolist())])


@torch.no_grad()
def encode_with(encode: Callable[[torch.Tensor], torch.Tensor], backbone: Backbone, images: LabeledImages,
                batch_size: int = 128) -> torch.Tensor:
    """Centre-view features of every image through ``encode`` (e.g. a method's prompted encoder)."""
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([backbone.eval_transform(images.load(i))
                             for i in range(start, min(start + batch_size, len(images)))])
        out.append(encode(batch.to(backbone.device)).float().cpu())
    return torch.cat(out)
