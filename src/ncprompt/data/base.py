"""The dataset interface every data source implements.

A dataset is a :class:`DatasetSplits`: class names, prompt templates and up to three
:class:`LabeledImages` splits (train / val / test), each a sequence of ``(PIL RGB image, label)``.
Each split carries a ``fingerprint`` string that identifies its content, used to key the feature
cache (see :mod:`ncprompt.data.cache`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class DataError(ValueError):
    """Bad or missing data; the message names the problem and the fix."""


def require_dir(path: str | Path, what: str, fix: str) -> Path:
    """``path`` as a folder, or a :class:`DataError` saying it is missing or is a file, and ``fix``."""
    return _require(path, True, what, fix)


def require_file(path: str | Path, what: str, fix: str) -> Path:
    """``path`` as a file, or a :class:`DataError` saying it is missing or is a folder, and ``fix``."""
    return _require(path, False, what, fix)


def _require(path: str | Path, folder: bool, what: str, fix: str) -> Path:
    p = Path(path).expanduser()
    if p.is_dir() if folder else p.is_file():
        return p
    state = ("is a file, not a folder" if folder else "is a folder, not a file") if p.exists() else "does not exist"
    raise DataError(f"{what} {p} {state}; {fix}")


def check_classnames(names: list[str], where: str, shown: list[str] | None = None) -> list[str]:
    """``names`` when they make a classification problem, else a :class:`DataError` naming ``where``: at
    least 2 classes (with one, every prediction is right), and no two names equal up to letter case,
    ``_``/space and surrounding blanks ("Red" and "red" are one class entered two ways, almost always).
    ``shown[i]`` says where class i came from (a folder name, a CSV line); default the quoted name."""
    shown = shown or [repr(n) for n in names]
    if len(names) < 2:
        raise DataError(f"{where} has {len(names)} class{'es' if len(names) != 1 else ''} "
                        f"({', '.join(shown) or 'none'}); a classifier needs at least 2 (with one every prediction "
                        "is right): add classes or point the root at the right dataset")
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        key = " ".join(n.replace("_", " ").split()).casefold()
        if key in seen:
            raise DataError(f"{where}: classes {shown[seen[key]]} and {shown[i]} differ only in letter case, "
                            "'_' or spaces (almost always one class entered two ways); merge them or rename one")
        seen[key] = i
    return names


def fingerprint_of(*parts: object) -> str:
    """A short stable hash of the given parts (strings, numbers, numpy arrays)."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str(p.shape).encode())
            h.update(str(p.dtype).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(repr(p).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


class LabeledImages:
    """Abstract sequence of ``(PIL.Image in RGB, int label)`` with a content fingerprint."""

    labels: np.ndarray
    fingerprint: str

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Image.Image:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return self.load(index), int(self.labels[index])

    def subset(self, indices: Sequence[int], labels: np.ndarray | None = None) -> SubsetImages:
        """The images at ``indices``; ``labels`` optionally relabels them (e.g. base/new remap)."""
        return SubsetImages(self, np.asarray(indices, dtype=np.int64), labels)


class ArrayImages(LabeledImages):
    """Images held in memory as a uint8 array ``(N, H, W)`` (grey) or ``(N, H, W, 3)`` (RGB)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, fingerprint: str | None = None) -> None:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise DataError(f"ArrayImages needs uint8 (N,H,W) or (N,H,W,3) images, got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.fingerprint = fingerprint or fingerprint_of("array", images, self.labels)

    def load(self, index: int) -> Image.Image:
        a = self.images[index]
        img = Image.fromarray(a, mode="L" if a.ndim == 2 else "RGB")
        return img.convert("RGB")


class FileImages(LabeledImages):
    """Images read from files; a corrupt or missing file raises :class:`DataError` naming it."""

    def __init__(self, paths: Sequence[str | Path], labels: Sequence[int], fingerprint: str | None = None) -> None:
        if len(paths) != len(labels):
            raise DataError(f"{len(paths)} image paths but {len(labels)} labels")
        self.paths = [Path(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.fingerprint = fingerprint or fingerprint_of("files", [str(p) for p in self.paths], self.labels)

    def load(self, index: int) -> Image.Image:
        path = self.paths[index]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except FileNotFoundError as e:
            raise DataError(f"image file {path} does not exist; check the dataset root and its split/CSV file") from e
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(
                f"cannot read image {path} ({e}); the file is corrupt or not an image: replace or remove it"
            ) from e


class NoImages(LabeledImages):
    """The training split of an evaluation-only dataset (e.g. the ImageNet variants, whose only
    images are their test set): empty, and sampling it raises :class:`DataError` with ``reason``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.labels = np.zeros(0, dtype=np.int64)
        self.fingerprint = fingerprint_of("no-images", reason)

    def load(self, index: int) -> Image.Image:
        raise DataError(self.reason)

    def subset(self, indices: Sequence[int], labels: np.ndarray | None = None) -> NoImages:  # type: ignore[override]
        return self


class SubsetImages(LabeledImages):
    """A view on some images of another :class:`LabeledImages`, optionally relabelled."""

    def __init__(self, parent: LabeledImages, indices: np.ndarray, labels: np.ndarray | None = None) -> None:
        self.parent = parent
        self.indices = indices
        self.labels = parent.labels[indices] if labels is None else np.asarray(labels, dtype=np.int64)
        if len(self.labels) != len(indices):
            raise DataError("subset labels and indices differ in length")
        self.fingerprint = fingerprint_of("subset", parent.fingerprint, indices, self.labels)

    def load(self, index: int) -> Image.Image:
        return self.parent.load(int(self.indices[index]))


@dataclass
class DatasetSplits:
    """A classification dataset: class names, prompt templates and its splits."""

    name: str
    classnames: list[str]
    train: LabeledImages
    test: LabeledImages
    val: LabeledImages | None = None
    templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def eval_only(self) -> bool:
        """True when the dataset has no training images of its own (evaluate on it, never train)."""
        return isinstance(self.train, NoImages)

    def split(self, which: str) -> LabeledImages:
        if which not in ("train", "val", "test"):
            raise DataError(f"unknown split {which!r}; use train, val or test")
        s = getattr(self, which)
        if s is None:
            raise DataError(f"dataset {self.name!r} has no {which} split")
        return s
