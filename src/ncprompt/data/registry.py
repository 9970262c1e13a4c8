"""The dataset registry: ``DATASETS.get(name)(root=..., **options) -> DatasetSplits``."""

from __future__ import annotations

from collections.abc import Callable

from ncprompt.data.base import DatasetSplits
from ncprompt.registry import Registry

DatasetBuilder = Callable[..., DatasetSplits]
DATASETS: Registry[DatasetBuilder] = Registry("dataset")
