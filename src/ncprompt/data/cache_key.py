"""What the feature cache's keys are made of: the images' content and the encoder's actual weights.

* Images: the labels, plus for in-memory arrays a SHA-256 of the pixel bytes; for files, a SHA-256 of
  their bytes when the selected files total at most ``CONTENT_HASH_MAX_BYTES``, otherwise each file's
  path, size, ``st_mtime_ns`` and ``st_ctime_ns`` (rewriting a file changes its ctime even when its
  mtime is copied back, e.g. by ``cp -p``). Subsets look only at the images they select.
* Weights: a SHA-256 of every tensor of the model's state dict (names, dtypes, shapes, bytes), computed
  once per model and recomputed when a tensor is replaced or changed in place through autograd-visible
  ops (its ``data_ptr`` or version counter moves). Writes through ``.data`` bypass the version counter:
  call :func:`forget_weights` after them.
"""

from __future__ import annotations

import hashlib
import os
import re
import weakref
from typing import Any

import numpy as np
import torch

from ncprompt.data.base import ArrayImages, FileImages, LabeledImages, SubsetImages

CONTENT_HASH_MAX_BYTES = 64 << 20

_WEIGHTS: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple[Any, ...], str]] = weakref.WeakKeyDictionary()


def _root_and_indices(images: LabeledImages) -> tuple[LabeledImages, np.ndarray | None]:
    """The innermost images under a chain of subsets, and the indices into it (None: all of them)."""
    idx: np.ndarray | None = None
    while isinstance(images, SubsetImages):
        idx = images.indices if idx is None else images.indices[idx]
        images = images.parent
    return images, idx


def content_digest(images: LabeledImages, portable: bool = False) -> str:
    """A SHA-256 (hex) of what the images and labels are now (see the module docstring).

    ``portable``: the same content wherever its folder lies, for a dataset moved as a whole (``eval --root
    NEW``): files are named by their path below the folder that holds them all, and above
    ``CONTENT_HASH_MAX_BYTES`` by (that path, size, ``st_mtime_ns``), which ``mv``, ``cp -p`` and ``rsync -a``
    keep (the ctime changes on any move). In-memory arrays hash the same either way."""
    h = hashlib.sha256()
    labels = np.ascontiguousarray(images.labels, dtype=np.int64)
    h.update(f"n={len(labels)}".encode())
    h.update(labels.tobytes())
    root, idx = _root_and_indices(images)
    if isinstance(root, ArrayImages):
        arr = np.ascontiguousarray(root.images if idx is None else root.images[idx])
        h.update(f"array {arr.shape} {arr.dtype}".encode())
        h.update(memoryview(arr).cast("B"))
    elif isinstance(root, FileImages):
        paths = root.paths if idx is None else [root.paths[int(i)] for i in idx]
        _files_digest(h, [os.path.abspath(p) for p in paths], portable)
    else:  # a source of another kind vouches for its own content
        h.update(f"{type(root).__module__}.{type(root).__qualname__}:{root.fingerprint}".encode())
        if idx is not None:
            h.update(np.ascontiguousarray(idx, dtype=np.int64).tobytes())
    return h.hexdigest()


def _files_digest(h: Any, paths: list[str], portable: bool = False) -> None:
    top = os.path.commonpath([os.path.dirname(p) for p in paths]) if portable and paths else ""
    stats = []
    for p in paths:
        try:
            st = os.stat(p)
            stats.append((p, st.st_size, st.st_mtime_ns, 0 if portable else st.st_ctime_ns))
        except OSError:
            stats.append((p, -1, 0, 0))  # loading it will name the missing file
    if sum(max(s[1], 0) for s in stats) <= CONTENT_HASH_MAX_BYTES:
        h.update(b"file bytes")
        for p, size, _, _ in stats:
            h.update(f"\n{os.path.relpath(p, top) if portable else p}\0{size}\0".encode())
            if size >= 0:
                try:
                    with open(p, "rb") as f:
                        h.update(hashlib.sha256(f.read()).digest())
                except OSError:
                    h.update(b"unreadable")
    else:
        h.update(b"file stats")
        for p, *rest in stats:
            h.update(("\n" + "\0".join(map(str, [os.path.relpath(p, top) if portable else p, *rest]))).encode())


def _stamp(sd: dict[str, torch.Tensor]) -> tuple[Any, ...]:
    return tuple((k, t.data_ptr(), t._version, tuple(t.shape), t.dtype) for k, t in sd.items())


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 (hex) of the model's state dict: every tensor's name, dtype, shape and bytes (memoised)."""
    sd = model.state_dict(keep_vars=True)
    stamp = _stamp(sd)
    hit = _WEIGHTS.get(model)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    h = hashlib.sha256()
    with torch.no_grad():
        for name in sorted(sd):
            t = sd[name].detach()
            h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
            flat = t.cpu().contiguous().reshape(-1)
            if flat.numel():
                h.update(memoryview(flat.view(torch.uint8).numpy()))
    digest = h.hexdigest()
    _WEIGHTS[model] = (stamp, digest)
    return digest


def forget_weights(model: torch.nn.Module) -> None:
    """Drop the memoised weights digest of ``model`` (after writing its tensors through ``.data``)."""
    _WEIGHTS.pop(model, None)


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def transform_id(transform: Any) -> str:
    """``repr`` of a transform without memory addresses (which differ from process to process)."""
    return _ADDRESS.sub("", repr(transform))


def encoder_description(encoder: Any, train: bool) -> dict[str, Any]:
    """What determines an image encoder's features: architecture name, weights digest, precision, parameter
    dtypes, device type and the transform used. ``encoder`` is a Backbone-like object (``name``, ``model``,
    ``precision``, ``device``, ``train_transform``, ``eval_transform``); one may instead provide
    ``cache_description() -> dict`` for its weights part."""
    model = getattr(encoder, "model", None)
    if hasattr(encoder, "cache_description"):
        weights: Any = encoder.cache_description()
    elif isinstance(model, torch.nn.Module):
        weights = weights_digest(model)
    else:
        raise TypeError(f"cannot key features of {type(encoder).__name__}: it has no torch `model` "
                        "and no cache_description()")
    dtypes = sorted({str(p.dtype) for p in model.parameters()}) if isinstance(model, torch.nn.Module) else []
    device = getattr(encoder, "device", "cpu")
    return {
        "model": getattr(encoder, "name", type(encoder).__name__),
        "weights": weights,
        "precision": getattr(encoder, "precision", "fp32"),
        "param_dtypes": dtypes,
        "device": torch.device(device).type,
        "transform": transform_id(encoder.train_transform if train else encoder.eval_transform),
    }
