"""Datasets: the interface, the registry, built-in sources, sampling and the feature cache.

The built-in datasets register when this package is imported. Datasets defined above the data
layer (the pocket suite) register themselves when their module is imported (the protocols and the
CLI import it): this package never imports upward.
"""

from __future__ import annotations

from ncprompt.data import coop_datasets, sources  # noqa: F401  (registration of the built-in datasets)
from ncprompt.data.base import ArrayImages, DataError, DatasetSplits, FileImages, LabeledImages
from ncprompt.data.registry import DATASETS


def register_builtin_datasets() -> None:
    """Kept for callers: the built-in datasets register when :mod:`ncprompt.data` is imported."""


def get_dataset(name: str, root: str | None = None, **options: object) -> DatasetSplits:
    """Build a registered dataset by name (``ncprompt datasets`` lists them)."""
    try:
        builder = DATASETS.get(name)
    except KeyError as e:
        raise DataError(f"{e.args[0]} (the pocket suite's datasets register when ncprompt.pocket.suite is "
                        "imported, as the ncprompt commands do)") from None
    return builder(root=root, **options)


def dataset_options(name: str, options: dict[str, object], run_seed: int) -> dict[str, object]:
    """A run's builder options: ``seed`` (the data seed) is 0, or the run's seed for a dataset whose builder
    sets ``data_seed_follows_run`` (the pocket bench 3), unless ``options`` set it."""
    try:
        follows = bool(getattr(DATASETS.get(name), "data_seed_follows_run", False))
    except KeyError:
        follows = False
    return {"seed": run_seed if follows else 0, **options}


__all__ = ["ArrayImages", "DATASETS", "DataError", "DatasetSplits", "FileImages", "LabeledImages", "dataset_options",
           "get_dataset",
           "register_builtin_datasets"]
