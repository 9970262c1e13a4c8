"""Built-in data sources: Fashion-MNIST (Debian package), any image folder, any CSV file."""

from __future__ import annotations

import csv
import gzip
import struct
from pathlib import Path

import numpy as np

from ncprompt.data.base import ArrayImages, DataError, DatasetSplits, FileImages, fingerprint_of
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
    r = Path(root) if root else FASHION_MNIST_ROOT
    if not r.is_dir():
        raise DataError(
            f"dataset folder {r} does not exist; install Fashion-MNIST with `apt-get install dataset-fashion-mnist` "
            "or pass --root to a folder holding its IDX files"
        )
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
    r = Path(root).expanduser()
    if not r.is_dir():
        raise DataError(f"dataset folder {r} does not exist; pass --root to a folder with one sub-folder per class")
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


@DATASETS.register("csv", help="a CSV file of path,label (label: class name or index); --root FILE.csv")
def csv_dataset(root: str | None = None, test_fraction: float = 0.3, seed: int = 0,
                classnames: list[str] | None = None, **_: object) -> DatasetSplits:
    """Rows ``path,label[,split]``; paths relative to the CSV's folder; a header row is optional.
    Labels are class names (sorted to indices) or integers (with ``classnames`` giving the names)."""
    if not root:
        raise DataError("the csv dataset needs --root FILE.csv (rows: path,label[,split])")
    f = Path(root).expanduser()
    if not f.is_file():
        raise DataError(f"CSV file {f} does not exist; pass --root to a CSV of path,label rows")
    with open(f, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and any(x.strip() for x in r)]
    if rows and rows[0][0].strip().lower() in ("path", "file", "filename", "image"):
        rows = rows[1:]
    if not rows:
        raise DataError(f"CSV file {f} has no rows")
    bad = [i + 1 for i, r in enumerate(rows) if len(r) < 2]
    if bad:
        raise DataError(f"CSV file {f}: rows {bad[:5]} have fewer than 2 columns (path,label)")
    raw_labels = [r[1].strip() for r in rows]
    if all(x.lstrip("-").isdigit() for x in raw_labels):
        labels = [int(x) for x in raw_labels]
        k = max(labels) + 1
        names = list(classnames) if classnames else [f"class {i}" for i in range(k)]
        if len(names) < k or min(labels) < 0:
            raise DataError(f"CSV file {f}: labels span 0..{k - 1} but {len(names)} class names were given")
    else:
        names = sorted(set(raw_labels))
        labels = [names.index(x) for x in raw_labels]
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
