"""The 11 datasets of the prompt-tuning literature and the ImageNet variants, read from the
folder layout and the community split files of the CoOp code base (``split_zhou_*.json``:
``{"train" | "val" | "test": [[relative image path, label, class name], ...]}``).

Put each dataset under one ROOT as CoOp's DATASETS.md describes (e.g. ROOT/oxford_pets/images/
and ROOT/oxford_pets/split_zhou_OxfordPets.json) and pass ``--root ROOT``. Nothing is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ncprompt.data.base import DataError, DatasetSplits, FileImages, NoImages, require_dir
from ncprompt.data.registry import DATASETS
from ncprompt.data.sources import IMAGE_SUFFIXES
from ncprompt.data.templates import COOP_TEMPLATES, template_for


@dataclass(frozen=True)
class SplitFileDataset:
    name: str
    folder: str
    image_dir: str
    split_file: str


SPLIT_FILE_DATASETS = [
    SplitFileDataset("oxford_pets", "oxford_pets", "images", "split_zhou_OxfordPets.json"),
    SplitFileDataset("oxford_flowers", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    SplitFileDataset("food101", "food-101", "images", "split_zhou_Food101.json"),
    SplitFileDataset("stanford_cars", "stanford_cars", "", "split_zhou_StanfordCars.json"),
    SplitFileDataset("sun397", "sun397", "SUN397", "split_zhou_SUN397.json"),
    SplitFileDataset("dtd", "dtd", "images", "split_zhou_DescribableTextures.json"),
    SplitFileDataset("eurosat", "eurosat", "2750", "split_zhou_EuroSAT.json"),
    SplitFileDataset("ucf101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
    SplitFileDataset("caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
]

#: CoOp renames EuroSAT's folder names to words CLIP knows.
EUROSAT_NAMES = {
    "AnnualCrop": "Annual Crop Land", "Forest": "Forest", "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road", "Industrial": "Industrial Buildings", "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land", "Residential": "Residential Buildings", "River": "River",
    "SeaLake": "Sea or Lake",
}


def _root(root: str | None, folder: str, name: str) -> Path:
    if not root:
        raise DataError(f"dataset {name!r} needs --root: the folder holding {folder}/ (laid out as in CoOp's "
                        "DATASETS.md; nothing is downloaded)")
    d = require_dir(root, "--root", f"pass the folder that contains {folder}/ (CoOp's DATASETS.md layout)")
    if (d / folder).is_dir():
        return d / folder
    if d.name == folder and d.is_dir():
        return d
    raise DataError(f"dataset folder {d / folder} does not exist: put {name} there as in CoOp's DATASETS.md "
                    f"or pass --root to the folder that contains {folder}/")


def read_split_file(path: Path, image_dir: Path, rename: dict[str, str] | None = None
                    ) -> tuple[list[str], dict[str, FileImages]]:
    """Class names and the train/val/test splits of a ``split_zhou_*.json`` file, validated."""
    if not path.is_file():
        raise DataError(f"split file {path} does not exist; take it from the CoOp code base's dataset notes")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"split file {path} is not valid JSON: {e}") from e
    names: dict[int, str] = {}
    splits = {}
    for split in ("train", "val", "test"):
        rows = data.get(split)
        if rows is None:
            if split == "val":
                continue
            raise DataError(f"split file {path} has no {split!r} list")
        paths, labels = [], []
        for i, row in enumerate(rows):
            if not (isinstance(row, list) and len(row) == 3):
                raise DataError(f"{path}: {split}[{i}] is not [path, label, class name]")
            rel, label, cname = row
            cname = (rename or {}).get(cname, cname).replace("_", " ")
            if names.setdefault(int(label), cname) != cname:
                raise DataError(f"{path}: label {label} is named both {names[int(label)]!r} and {cname!r}; "
                                "the class list does not match the split file")
            paths.append(image_dir / rel)
            labels.append(int(label))
        splits[split] = FileImages(paths, labels)
    k = max(names) + 1
    missing = sorted(set(range(k)) - set(names))
    if missing:
        raise DataError(f"split file {path}: labels {missing[:5]} have no images; labels must be 0..{k - 1}")
    for split, images in splits.items():
        if len(images) and not images.paths[0].is_file():
            raise DataError(f"image {images.paths[0]} listed in {path} ({split}) does not exist; "
                            f"the images must be under {image_dir}")
    return [names[i] for i in range(k)], splits


def _make_split_builder(spec: SplitFileDataset):
    def build(root: str | None = None) -> DatasetSplits:
        base = _root(root, spec.folder, spec.name)
        rename = EUROSAT_NAMES if spec.name == "eurosat" else None
        names, s = read_split_file(base / spec.split_file, base / spec.image_dir, rename)
        return DatasetSplits(spec.name, names, s["train"], s["test"], s.get("val"),
                             templates=[template_for(spec.name)])

    build.__doc__ = f"{spec.name} from ROOT/{spec.folder}/ and {spec.split_file} (CoOp's splits)"
    return build


for _spec in SPLIT_FILE_DATASETS:
    DATASETS.register(_spec.name)(_make_split_builder(_spec))


def read_imagenet_classnames(base: Path) -> list[tuple[str, str]]:
    """(wnid, class name) pairs from ``classnames.txt`` (lines ``n01440764 tench``)."""
    f = base / "classnames.txt"
    if not f.is_file():
        raise DataError(f"{f} does not exist; ImageNet needs CoOp's classnames.txt (wnid and name per line)")
    pairs = []
    for i, line in enumerate(f.read_text().splitlines()):
        if line.strip():
            wnid, _, name = line.strip().partition(" ")
            if not name:
                raise DataError(f"{f}: line {i + 1} is not 'wnid class name'")
            pairs.append((wnid, name.strip()))
    return pairs


def _wnid_folder_split(folder: Path, wnids: list[str], where: str) -> FileImages:
    present = sorted(d.name for d in folder.iterdir() if d.is_dir())
    unknown = sorted(set(present) - set(wnids))
    if unknown:
        raise DataError(f"{folder} has class folders {unknown[:5]} that are not in classnames.txt; "
                        f"the class list does not match {where}")
    paths, labels = [], []
    for k, w in enumerate(wnids):
        d = folder / w
        if d.is_dir():
            files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            paths += files
            labels += [k] * len(files)
    if not paths:
        raise DataError(f"{folder} holds no images in class folders named by wnid")
    return FileImages(paths, labels)


@DATASETS.register("imagenet", help="ImageNet from ROOT/imagenet/images/{train,val}/<wnid>/ + classnames.txt")
def imagenet(root: str | None = None) -> DatasetSplits:
    base = _root(root, "imagenet", "imagenet")
    pairs = read_imagenet_classnames(base)
    wnids = [w for w, _ in pairs]
    train = _wnid_folder_split(base / "images" / "train", wnids, "images/train")
    test = _wnid_folder_split(base / "images" / "val", wnids, "images/val")
    return DatasetSplits("imagenet", [n for _, n in pairs], train, test, templates=[COOP_TEMPLATES["imagenet"]])


def _variant(name: str, folder: str, sub: str, numbered: bool = False):
    def build(root: str | None = None) -> DatasetSplits:
        base = _root(root, folder, name)
        pairs = read_imagenet_classnames(Path(root).expanduser() / "imagenet") if (
            Path(root).expanduser() / "imagenet" / "classnames.txt").is_file() else read_imagenet_classnames(base)
        images_dir = base / sub if sub else base
        if not images_dir.is_dir():
            raise DataError(f"{images_dir} does not exist; lay out {name} as in CoOp's DATASETS.md")
        if numbered:  # ImageNet-V2: folders 0..999 in classnames.txt order
            wnids = [str(i) for i in range(len(pairs))]
            test = _wnid_folder_split(images_dir, wnids, "ImageNet's 1000 classes (folders 0..999)")
            names = [n for _, n in pairs]
        else:  # Sketch: all 1000 wnids; A and R: a 200-class subset, kept in classnames order
            present = {d.name for d in images_dir.iterdir() if d.is_dir()}
            keep = [(w, n) for w, n in pairs if w in present]
            test = _wnid_folder_split(images_dir, [w for w, _ in keep], "classnames.txt")
            names = [n for _, n in keep]
        # evaluation only: its images are a test set, so there is nothing to train on
        no_train = NoImages(f"{name} is an evaluation-only dataset (its only images are its test set): train on "
                            f"imagenet and evaluate on {name} with --targets {name}=ROOT, or run zero-shot on it "
                            "(shots 0)")
        return DatasetSplits(name, names, no_train, test, templates=[COOP_TEMPLATES["imagenet"]])

    build.__doc__ = f"{name} (evaluation only) from ROOT/{folder}/{sub}; classnames.txt from ROOT/imagenet/"
    return build


DATASETS.register("imagenet_v2")(_variant("imagenet_v2", "imagenetv2", "imagenetv2-matched-frequency-format-val",
                                          numbered=True))
DATASETS.register("imagenet_sketch")(_variant("imagenet_sketch", "imagenet-sketch", "images"))
DATASETS.register("imagenet_a")(_variant("imagenet_a", "imagenet-adversarial", "imagenet-a"))
DATASETS.register("imagenet_r")(_variant("imagenet_r", "imagenet-rendition", "imagenet-r"))


@DATASETS.register("fgvc_aircraft", help="FGVC-Aircraft from ROOT/fgvc_aircraft/ (variants.txt, images_variant_*.txt)")
def fgvc_aircraft(root: str | None = None) -> DatasetSplits:
    """CoOp's reading: class names from variants.txt, splits from images_variant_{train,val,test}.txt."""
    base = _root(root, "fgvc_aircraft", "fgvc_aircraft")
    vf = base / "variants.txt"
    if not vf.is_file():
        raise DataError(f"{vf} does not exist; FGVC-Aircraft needs its data/ files under {base}")
    names = [line.strip() for line in vf.read_text().splitlines() if line.strip()]
    index = {n: i for i, n in enumerate(names)}
    splits = {}
    for split in ("train", "val", "test"):
        f = base / f"images_variant_{split}.txt"
        if not f.is_file():
            raise DataError(f"{f} does not exist")
        paths, labels = [], []
        for line in f.read_text().splitlines():
            if not line.strip():
                continue
            im, _, variant = line.strip().partition(" ")
            if variant not in index:
                raise DataError(f"{f}: variant {variant!r} is not in variants.txt; the class list does not match")
            paths.append(base / "images" / f"{im}.jpg")
            labels.append(index[variant])
        splits[split] = FileImages(paths, labels)
    return DatasetSplits("fgvc_aircraft", names, splits["train"], splits["test"], splits["val"],
                         templates=[COOP_TEMPLATES["fgvc_aircraft"]])
