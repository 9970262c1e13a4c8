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
    check_classnames,
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
def fashion_mnist(root: str | None = None, val_per_class: int = 100, seed: int = 0) -> DatasetSplits:
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


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _scan_folder(root: Path) -> tuple[list[str], list[Path], list[int]]:
    """``root/<class>/<image files>``: one class per sub-folder, its images directly inside it. A class
    folder whose own sub-folders hold images is refused (flattening them would hide a hierarchy or a
    root given one level too high)."""
    classes = [d.name for d in _visible_dirs(root)]
    if not classes:
        raise DataError(f"image folder {root} has no class sub-folders; expected {root}/<class name>/<image files>")
    paths, labels = [], []
    for k, c in enumerate(classes):
        nested = next((d for d in _visible_dirs(root / c)
                       if any(p.suffix.lower() in IMAGE_SUFFIXES for p in d.rglob("*"))), None)
        if nested is not None:
            raise DataError(f"class folder {root / c} holds images in its sub-folder {nested.name}/: a class is one "
                            f"folder of images, {root}/<class>/<image files>; point --root at the folder whose "
                            "sub-folders are the classes, or move the images up into their class folder")
        files = sorted(p for p in (root / c).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
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


#: the split folders of ROOT/{train,val,test}/<class>/ (matched case-insensitively: Train/ is train)
SPLITS = ("train", "val", "test")
SPLIT_LAYOUT = "ROOT/train/<class>/, ROOT/test/<class>/ and optionally ROOT/val/<class>/"


def _split_folders(r: Path) -> dict[str, Path] | None:
    """The split folders of ``r`` by split name, or None when no top-level folder is named like a split.
    A split layout must be whole: train and test, nothing else beside them, each split once."""
    dirs = _visible_dirs(r)
    splits = [d for d in dirs if d.name.lower() in SPLITS]
    if not splits:
        return None
    found: dict[str, Path] = {}
    for d in splits:
        if d.name.lower() in found:
            raise DataError(f"dataset folder {r} has both {found[d.name.lower()].name}/ and {d.name}/: one folder per "
                            f"split ({SPLIT_LAYOUT}); merge them")
        found[d.name.lower()] = d
    others = [d.name for d in dirs if d.name.lower() not in SPLITS]
    if others:
        raise DataError(f"dataset folder {r} mixes split folders ({', '.join(d.name for d in splits)}) with other "
                        f"folders ({', '.join(others[:5])}); use either {SPLIT_LAYOUT} or ROOT/<class>/ alone")
    missing = [s for s in ("train", "test") if s not in found]
    if missing:
        raise DataError(f"dataset folder {r} has split folders {', '.join(d.name for d in splits)}/ but no "
                        f"{' or '.join(missing)}/; the split layout is {SPLIT_LAYOUT} (rename val/ to test/ if it "
                        "is your test set)")
    return found


@DATASETS.register("folder", help="any image folder: ROOT/<class>/*.jpg, or ROOT/{train,val,test}/<class>/*")
def image_folder(root: str | None = None, test_fraction: float = 0.3, seed: int = 0) -> DatasetSplits:
    """One sub-folder per class, images directly inside. With ``train/`` and ``test/`` (and optional
    ``val/``) sub-folders, any letter case, those are the splits (their class lists must match); otherwise
    a seeded per-class split. At least two classes; two class folders whose names differ only in case
    or ``_``/space are refused."""
    if not root:
        raise DataError("the folder dataset needs --root DIR (one sub-folder per class)")
    r = require_dir(root, "dataset folder", "pass --root to a folder with one sub-folder per class")
    split_dirs = _split_folders(r)
    if split_dirs is not None:
        splits = {}
        classes = None
        for s in SPLITS:
            if s not in split_dirs:
                continue
            c, p, y = _scan_folder(split_dirs[s])
            if classes is None:
                classes = c
            elif c != classes:
                raise DataError(
                    f"{split_dirs[s]} has classes {c}, but {split_dirs['train']} has {classes}: the class folders "
                    "must match"
                )
            splits[s] = FileImages(p, y)
        assert classes is not None
        names = check_classnames([_classname(c) for c in classes], f"dataset folder {r}", [f"{c}/" for c in classes])
        return DatasetSplits(r.name, names, splits["train"], splits["test"], splits.get("val"))
    classes, paths, labels = _scan_folder(r)
    names = check_classnames([_classname(c) for c in classes], f"dataset folder {r}", [f"{c}/" for c in classes])
    all_images = FileImages(paths, labels)
    tr, te = _split_indices(all_images.labels, test_fraction, seed)
    return DatasetSplits(r.name, names, all_images.subset(tr), all_images.subset(te))


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
    indices). Empty, float, negative, gapped or huge integer labels, numbers mixed with names, fewer than
    two classes and names equal up to case are errors naming the rows."""
    raw = [r[1].strip() for _, r in rows]
    empty = next((line for (line, _), x in zip(rows, raw) if not x), None)
    if empty is not None:
        raise DataError(f"CSV file {f}, line {empty}: the label is empty; give every row a class name or index")
    numeric = [bool(_NUMBER.match(x)) for x in raw]
    if any(numeric) and not all(numeric):
        (n_line, _), n = next((r, x) for r, x, num in zip(rows, raw, numeric) if num)
        (w_line, _), w = next((r, x) for r, x, num in zip(rows, raw, numeric) if not num)
        raise DataError(f"CSV file {f}: labels mix numbers (line {n_line}: {n!r}) and class names (line {w_line}: "
                        f"{w!r}); use one kind: integers 0..K-1 or class names")
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
        names = list(classnames) if classnames is not None else [f"class {i}" for i in range(k)]
        return values, check_classnames(names, f"CSV file {f}")
    if all(numeric):
        line, x = next((line, r[1].strip()) for line, r in rows if not _INT.match(r[1].strip()))
        raise DataError(f"CSV file {f}, line {line}: label {x!r} is not an integer; labels are integers 0..K-1 "
                        "or class names")
    first = {}
    for (line, _), x in zip(rows, raw):
        first.setdefault(x, line)
    names = sorted(first)
    check_classnames(names, f"CSV file {f}", [f"{n!r} (line {first[n]})" for n in names])
    index = {n: i for i, n in enumerate(names)}
    return [index[x] for x in raw], names


def _csv_split_column(f: Path, rows: list[tuple[int, list[str]]]) -> np.ndarray | None:
    """The split of each row (``train``/``val``/``test``, any case and blanks), or None when no row has a
    third column. Once one row has a split, every row needs one of the three: no silent random split."""
    values = [r[2].strip().lower() if len(r) >= 3 else "" for _, r in rows]
    if not any(values):
        return None
    for (line, r), v in zip(rows, values):
        if v not in SPLITS:
            got = repr(r[2].strip()) if len(r) >= 3 and r[2].strip() else "no split value"
            raise DataError(f"CSV file {f}, line {line}: {got} in the split column; the third column is the split, "
                            "train, val or test, on every row (or on none, for a seeded random split)")
    return np.array(values)


@DATASETS.register("csv", help="a CSV file of path,label (label: class name or index); --root FILE.csv")
def csv_dataset(root: str | None = None, test_fraction: float = 0.3, seed: int = 0,
                classnames: list[str] | None = None) -> DatasetSplits:
    """Rows ``path,label[,split]``; paths relative to the CSV's folder; a header row is optional.
    Labels are class names (sorted to indices) or integers (with ``classnames`` giving the names).
    The split column, when present, is on every row (train, val or test; case and blanks ignored)."""
    if not root:
        raise DataError("the csv dataset needs --root FILE.csv (rows: path,label[,split])")
    f = require_file(root, "CSV file", "pass --root to a CSV of path,label rows")
    numbered = _read_csv_rows(f)
    if not numbered:
        raise DataError(f"CSV file {f} has no rows")
    bad = [line for line, r in numbered if len(r) < 2]
    if bad:
        raise DataError(f"CSV file {f}: lines {bad[:5]} have fewer than 2 columns (path,label)")
    no_path = next((line for line, r in numbered if not r[0].strip()), None)
    if no_path is not None:
        raise DataError(f"CSV file {f}, line {no_path}: the image path is empty; give every row a path")
    labels, names = _csv_labels(f, numbered, classnames)
    which = _csv_split_column(f, numbered)
    paths = [(f.parent / r[0].strip()) for _, r in numbered]
    allimg = FileImages(paths, labels)
    if which is not None:
        parts = {s: allimg.subset(np.flatnonzero(which == s)) for s in SPLITS if (which == s).any()}
        if "train" not in parts or "test" not in parts:
            raise DataError(f"CSV file {f}: the split column needs both train and test rows")
        return DatasetSplits(f.stem, names, parts["train"], parts["test"], parts.get("val"))
    tr, te = _split_indices(allimg.labels, test_fraction, seed)
    return DatasetSplits(f.stem, names, allimg.subset(tr), allimg.subset(te))
