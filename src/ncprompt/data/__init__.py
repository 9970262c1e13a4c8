"""Datasets: the interface, the registry, built-in sources, sampling and the feature cache.

The built-in datasets register when this package is imported. Datasets defined above the data
layer (the pocket suite) register themselves when their module is imported (the protocols and the
CLI import it): this package never imports upward.
"""

from __future__ import annotations

import inspect
from typing import Any

from ncprompt.data import coop_datasets, sources  # noqa: F401  (registration of the built-in datasets)
from ncprompt.data.base import ArrayImages, DataError, DatasetSplits, FileImages, LabeledImages
from ncprompt.data.registry import DATASETS


def register_builtin_datasets() -> None:
    """Kept for callers: the built-in datasets register when :mod:`ncprompt.data` is imported."""


def dataset_parameters(name: str) -> tuple[bool, dict[str, Any]] | None:
    """Whether the builder of dataset ``name`` reads a root, and its options (name -> default), from
    its signature; None for a builder that takes ``**kwargs`` (its options cannot be checked)."""
    params = inspect.signature(DATASETS.get(name)).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    named = {p.name: p.default for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return "root" in named, {k: v for k, v in named.items() if k != "root"}


def check_dataset_args(name: str, root: str | None, options: dict[str, Any]) -> None:
    """Refuse what the builder of ``name`` would ignore or misread: a root it does not read, an option
    it does not take (a misspelt ``data.options`` key; the valid ones are named), a boolean for a
    numeric option."""
    try:
        params = dataset_parameters(name)
    except KeyError as e:
        raise DataError(f"{e.args[0]} (the pocket suite's datasets register when ncprompt.pocket.suite is "
                        "imported, as the ncprompt commands do)") from None
    if params is None:
        return
    takes_root, accepted = params
    if root and not takes_root:
        raise DataError(f"dataset {name!r} reads no root (it is built in), so root {root} would be ignored; drop "
                        "the root, or load your folder or CSV file as dataset folder / csv (a grid: NAME=ROOT with a "
                        "NAME that is not registered)")
    for key, value in options.items():
        if key not in accepted:
            valid = ", ".join(accepted) or "none"
            raise DataError(f"data.options.{key}: dataset {name!r} has no option {key!r} (its options: {valid})")
        default = accepted[key]
        if isinstance(value, bool) and isinstance(default, (int, float)) and not isinstance(default, bool):
            raise DataError(f"data.options.{key}: {value!r} is a boolean; dataset {name!r} takes a number "
                            f"(default {default!r})")


def get_dataset(name: str, root: str | None = None, **options: Any) -> DatasetSplits:
    """Build a registered dataset by name (``ncprompt datasets`` lists them); ``root`` and ``options`` are
    checked against the builder's parameters first (:func:`check_dataset_args`)."""
    check_dataset_args(name, root, options)
    builder = DATASETS.get(name)
    params = dataset_parameters(name)
    return builder(**options) if params is not None and not params[0] else builder(root=root, **options)


def dataset_options(name: str, options: dict[str, Any], run_seed: int) -> dict[str, Any]:
    """A run's builder options: ``options``, plus ``seed`` (the data seed) for a builder that sets
    ``data_seed_follows_run`` (the pocket bench 3): the run's seed, unless ``options`` set it. Other builders
    keep their own default data seed (0), so the old suite's data do not move with the run seed."""
    try:
        follows = bool(getattr(DATASETS.get(name), "data_seed_follows_run", False))
    except KeyError:
        follows = False
    return {"seed": run_seed, **options} if follows else dict(options)


__all__ = ["ArrayImages", "DATASETS", "DataError", "DatasetSplits", "FileImages", "LabeledImages", "check_dataset_args",
           "dataset_options", "dataset_parameters", "get_dataset", "register_builtin_datasets"]
