"""Datasets: the interface, the registry, built-in sources, sampling and the feature cache."""

from __future__ import annotations

import importlib

from ncprompt.data.base import ArrayImages, DataError, DatasetSplits, FileImages, LabeledImages
from ncprompt.data.registry import DATASETS

_BUILTIN_MODULES = ("ncprompt.data.sources", "ncprompt.data.coop_datasets", "ncprompt.pocket.suite")


def register_builtin_datasets() -> None:
    """Import the modules that register datasets (idempotent)."""
    for mod in _BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def get_dataset(name: str, root: str | None = None, **options: object) -> DatasetSplits:
    """Build a registered dataset by name (``ncprompt datasets`` lists them)."""
    register_builtin_datasets()
    try:
        builder = DATASETS.get(name)
    except KeyError as e:
        raise DataError(str(e.args[0])) from e
    return builder(root=root, **options)


__all__ = ["ArrayImages", "DATASETS", "DataError", "DatasetSplits", "FileImages", "LabeledImages", "get_dataset",
           "register_builtin_datasets"]
