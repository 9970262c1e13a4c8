"""The dataset registry: ``DATASETS.get(name)(root=..., **options) -> DatasetSplits``.

A builder names its options as keyword parameters (no ``**kwargs``), so ``get_dataset`` can refuse an
option it does not take; one without a ``root`` parameter reads no root.
"""

from __future__ import annotations

from collections.abc import Callable

from ncprompt.data.base import DatasetSplits
from ncprompt.registry import Registry

DatasetBuilder = Callable[..., DatasetSplits]
DATASETS: Registry[DatasetBuilder] = Registry("dataset")
