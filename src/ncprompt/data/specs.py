"""Dataset specs of a grid: one root per dataset, named by the user.

``NAME`` is a registered dataset (``ncprompt datasets``). ``NAME=ROOT`` gives it a root (refused for a
registered dataset that reads none, e.g. the pocket suite's: the results would carry its name); when NAME
is not registered, ROOT says what it is: a folder is an image folder (``folder``), a ``.csv`` file
a CSV dataset (``csv``), and NAME is the user's name for it in run folders and tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ncprompt.data.base import DataError
from ncprompt.data.registry import DATASETS


@dataclass(frozen=True)
class DatasetSpec:
    """``label``: the name shown in run folders and tables; ``dataset``/``root``: what gets loaded."""

    label: str
    dataset: str
    root: str | None = None


def parse_dataset_spec(spec: str) -> DatasetSpec:
    """``"digits=~/data/digits"`` -> DatasetSpec("digits", "folder", "~/data/digits")."""
    name, sep, root = spec.partition("=")
    name, root = name.strip(), root.strip()
    if not name or (sep and not root):
        raise DataError(f"dataset spec {spec!r}: write NAME or NAME=ROOT (e.g. digits=~/data/digits)")
    if name in DATASETS:
        if sep:
            from ncprompt.data import dataset_parameters

            params = dataset_parameters(name)
            if params is not None and not params[0]:
                raise DataError(f"dataset spec {spec!r}: {name} is a registered dataset that reads no root, so its "
                                f"results would be labelled {name} without reading {root}; give your folder or CSV "
                                f"file a name of its own (e.g. my_{name}={root})")
        return DatasetSpec(name, name, root or None)
    if not sep:
        raise DataError(f"unknown dataset {name!r}: give its folder as {name}=ROOT (an image folder or a .csv "
                        "file), or use a registered name (`ncprompt datasets`)")
    p = Path(root).expanduser()
    if p.is_dir():
        return DatasetSpec(name, "folder", root)
    if p.is_file() and p.suffix.lower() == ".csv":
        return DatasetSpec(name, "csv", root)
    raise DataError(f"dataset spec {spec!r}: {p} is neither a folder of class sub-folders nor a .csv file")


def parse_dataset_specs(specs: list[str]) -> list[DatasetSpec]:
    """Several specs; labels must be unique (they name the run folders)."""
    out = [parse_dataset_spec(s) for s in specs]
    labels = [s.label for s in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise DataError(f"dataset name(s) {dup} given twice; give each dataset its own NAME=ROOT")
    return out
