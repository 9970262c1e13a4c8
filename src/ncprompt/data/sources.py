"""Built-in data sources: Fashion-MNIST (Debian package), any image folder, any CSV file."""

from __future__ import annotations

import csv
import gzip
import re
import struct
from pathlib import Path

import numpy as np

from ncprompt.data.base import (
    ArrayImages,
    DataError,
    DatasetSplits,
    FileImages,
    fingerprint_of,
    require_dir,
    require_file,
)
from ncprompt.data.registry import DATASETS

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format; .gz or plain) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise DataError(f"{path} is not an IDX file (too short)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {arr.size}")
    return arr.reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for suffix in (".gz", ""):
        p = root / f"{stem}{suffix}"
        if p.is_file():
            return p
    raise DataError(
        f"Fashion-MNIST file {stem}[.gz] not found under {root}; install it with "
        "`apt-get install dataset-fashion-mnist` or pass --root to a folder holding the IDX files"
    )


def load_fashion_mnist_arrays(root: str | Path | None = None) -> dict[str, np.ndarray]:
    """The raw arrays: train/test images (N, 28, 28) uint8 and labels."""
    r = require_dir(root or FASHION_MNIST_ROOT, "Fashion-MNIST folder",
                    "install it with `apt-get install dataset-fashion-mnist` or pass --root to a folder holding "
                    "its IDX files")
    return {
        "train_x": read_idx(_find(r, "train-images-idx3-ubyte")),
        "train_y": read_idx(_find(r, "train-labels-idx1-ubyte")).astype(np.int64),
        "test_x": read_idx(_find(r, "t10k-images-idx3-ubyte")),
        "test_y": read_idx(_find(r, "t10k-labels-idx1-ubyte")).astype(np.int64),
    }


@DATASETS.register("fashion_mnist", help="Fashion-MNIST (10 garments, 28x28 grey; Debian dataset-fashion-mnist)")
def fashion_mnist(root: str | None = None, val_per_class: int = 100, seed: int = 0, **_: object) -> DatasetSplits:
    """Fashion-MNIST; ``val`` is ``val_per_class`` images per class held out of the train split."""
    a = load_fashion_mnist_arrays(root)
    rng = np.random.default_rng(seed)
    val_idx = np.concatenate(
        [rng.choice(np.flatnonzero(a["train_y"] == k), val_per_class, replace=False) for k in range(10)]
    )
    keep = np.setdiff1d(np.arange(len(a["train_y"])), val_idx)
    fp = fingerprint_of("fashion_mnist", a["test_x"][:64], len(a["train_y"]))
    full_train = ArrayImages(a["train_x"], a["train_y"], fingerprint=fp + ":train")
    return DatasetSplits(
        name="fashion_mnist",
        classnames=list(FASHION_MNIST_CLASSES),
        train=full_train.subset(keep),
        val=full_train.subset(np.sort(val_idx)),
        test=ArrayImages(a["test_x"], a["test_y"], fingerprint=fp + ":test"),
    )


def _scan_folder(root: Path) -> tuple[list[str], list[Path], list[int]]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"image folder {root} has no class sub-folders; expected {root}/<class name>/<image files>")
    paths, labels = [], []
    for k, c in enumerate(classes):
        files = sorted(p for p in (root / c).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"class folder {root / c} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        paths += files
        labels += [k] * len(files)
    return classes, paths, labels


def _split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        n_test = max(1, int(round(len(idx) * test_fraction))) if len(idx) > 1 else 0
        test += idx[:n_test].tolist()
        train += idx[n_test:].tolist()
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))


def _classname(folder: str) -> str:
    return folder.replace("_", " ").strip()


@DATASETS.register("folder", help="any image folder: ROOT/<class>/*.jpg, or ROOT/{train,val,test}/<class>/*")
def image_folder(root: str | None = None, test_fraction: float = 0.3, seed: int = 0, **_: object) -> DatasetSplits:
    """One sub-folder per class. With ``train/`` and ``test/`` (and optional ``val/``) sub-folders
    those are the splits (their class lists must match); otherwise a seeded per-class split."""
    if not root:
        raise DataError("the folder dataset needs --root DIR (one sub-folder per class)")
    r = require_dir(root, "dataset folder", "pass --root to a folder with one sub-folder per class")
    if (r / "train").is_dir() and (r / "test").is_dir():
        splits = {}
        classes = None
        for s in ("train", "val", "test"):
            if not (r / s).is_dir():
                continue
            c, p, y = _scan_folder(r / s)
            if classes is None:
                classes = c
            elif c != classes:
                raise DataError(
                    f"{r / s} has classes {c}, but {r / 'train'} has {classes}: the class folders must match"
                )
            splits[s] = FileImages(p, y)
        assert classes is not None
        names = [_classname(c) for c in classes]
        return DatasetSplits(r.name, names, splits["train"], splits["test"], splits.get("val"))
    classes, paths, labels = _scan_folder(r)
    all_images = FileImages(paths, labels)
    tr, te = _split_indices(all_images.labels, test_fraction, seed)
    return DatasetSplits(r.name, [_classname(c) for c in classes], all_images.subset(tr), all_images.subset(te))


_INT = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(nan|inf)$", re.IGNORECASE)


def _read_csv_rows(f: Path) -> list[tuple[int, list[str]]]:
    """Non-empty rows with their line numbers; a header row (path,label...) is skipped."""
    try:
        with open(f, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            rows = [(reader.line_num, r) for r in reader if r and any(x.strip() for x in r)]
    except UnicodeDecodeError as e:
        raise DataError(f"CSV file {f} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                        "re-save it with UTF-8 encoding") from None
    except csv.Error as e:
        raise DataError(f"CSV file {f} cannot be parsed ({e}); fix the file") from None
    if rows and rows[0][1][0].strip().lower() in ("path", "file", "filename", "image"):
        rows = rows[1:]
    return rows


def _csv_labels(f: Path, rows: list[tuple[int, list[str]]], classnames: list[str] | None
                ) -> tuple[list[int], list[str]]:
    """Integer labels 0..K-1 (names from ``classnames`` or "class i"), or class names (sorted to
    indices). Float, negative, gapped or huge integer labels are errors naming the row."""
    raw = [r[1].strip() for _, r in rows]
    if all(_INT.match(x) for x in raw):
        values = [int(x) for x in raw]
        for (line, _), v in zip(rows, values):
            if v < 0:
                raise DataError(f"CSV file {f}, line {line}: label {v} is negative; labels are integers 0..K-1 "
                                "or class names")
        present = set(values)
        k, top = len(present), max(present)
        if top != k - 1:
            missing = []
            i = 0
            while len(missing) < 5 and i < top:
                if i not in present:
                    missing.append(i)
                i += 1
            raise DataError(f"CSV file {f}: integer labels must be 0..K-1 without gaps, but the {k} distinct labels "
                            f"reach {top} (no rows for labels {missing}{'...' if len(missing) == 5 else ''}); "
                            f"renumber them 0..{k - 1} or use class names as labels")
        if classnames is not None and len(classnames) != k:
            raise DataError(f"CSV file {f}: labels are 0..{k - 1} but {len(classnames)} class names were given")
        return values, list(classnames) if classnames is not None else [f"class {i}" for i in range(k)]
    if all(_NUMBER.match(x) for x in raw):
        line, x = next((line, r[1].strip()) for line, r in rows if not _INT.match(r[1].strip()))
        raise DataError(f"CSV file {f}, line {line}: label {x!r} is not an integer; labels are integers 0..K-1 "
                        "or class names")
    names = sorted(set(raw))
    index = {n: i for i, n in enumerate(names)}
    return [index[x] for x in raw], names


@DATASETS.register("csv", help="a CSV file of path,label (label: class name or index); --root FILE.csv")
def csv_dataset(root: str | None = None, test_fraction: float = 0.3, seed: int = 0,
                classnames: list[str] | None = None, **_: object) -> DatasetSplits:
    """Rows ``path,label[,split]``; paths relative to the CSV's folder; a header row is optional.
    Labels are class names (sorted to indices) or integers (with ``classnames`` giving the names)."""
    if not root:
        raise DataError("the csv dataset needs --root FILE.csv (rows: path,label[,split])")
    f = require_file(root, "CSV file", "pass --root to a CSV of path,label rows")
    numbered = _read_csv_rows(f)
    if not numbered:
        raise DataError(f"CSV file {f} has no rows")
    bad = [line for line, r in numbered if len(r) < 2]
    if bad:
        raise DataError(f"CSV file {f}: lines {bad[:5]} have fewer than 2 columns (path,label)")
    labels, names = _csv_labels(f, numbered, classnames)
    rows = [r for _, r in numbered]
    paths = [(f.parent / r[0].strip()) for r in rows]
    has_split = all(len(r) >= 3 and r[2].strip() in ("train", "val", "test") for r in rows)
    if has_split:
        which = np.array([r[2].strip() for r in rows])
        allimg = FileImages(paths, labels)
        parts = {s: allimg.subset(np.flatnonzero(which == s)) for s in ("train", "val", "test") if (which == s).any()}
        if "train" not in parts or "test" not in parts:
            raise DataError(f"CSV file {f}: the split column needs both train and test rows")
        return DatasetSplits(f.stem, names, parts["train"], parts["test"], parts.get("val"))
    allimg = FileImages(paths, labels)
    tr, te = _split_indices(allimg.labels, test_fraction, seed)
    return DatasetSplits(f.stem, names, allimg.subset(tr), allimg.subset(te))
