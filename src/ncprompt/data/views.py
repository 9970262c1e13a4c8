"""Seeded training views, and a DataLoader that decodes and augments them in worker processes.

View v of image i is ``train_transform(img_i)`` drawn with torch's default generator seeded to
``view_seed(seed, i, v)``. The seed depends only on (seed, i, v), never on call order, batch or
worker, so the pixels of a view are bitwise the same whether the view is cached, re-encoded live
in a training step, or made by worker 0, 1 or the main process (``num_workers`` 0, 1, 2, ...).
Evaluation uses one centre view (``eval_transform``), which draws no random numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ncprompt.data.base import LabeledImages

Transform = Callable[[Any], torch.Tensor]


def view_seed(seed: int, index: int, view: int) -> int:
    """The torch seed of view v of image i: ((seed·1000003 + v)·10000019 + i) mod (2^63 − 1)."""
    return (((seed * 1_000_003) + view) * 10_000_019 + index) % (2**63 - 1)


def augmented_view(transform: Transform, image: Any, seed: int, index: int, view: int) -> torch.Tensor:
    """The augmented tensor of view ``view`` of image ``index`` (independent of call order).

    The transform draws from torch's default CPU generator, which is re-seeded for this view and
    restored afterwards (cheaper than ``torch.manual_seed``, which also seeds every accelerator)."""
    gen = torch.default_generator
    state = gen.get_state()
    try:
        gen.manual_seed(view_seed(seed, index, view))
        return transform(image)
    finally:
        gen.set_state(state)


class ImageViews(Dataset):
    """Item i: the ``views`` augmented views of image i, ``(views, C, H, W)``, each under its own
    seed; or, with ``views=None``, its one centre view ``(C, H, W)``. The image is decoded once."""

    def __init__(self, images: LabeledImages, transform: Transform, views: int | None = None, seed: int = 0) -> None:
        self.images, self.transform, self.views, self.seed = images, transform, views, seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        img = self.images.load(index)
        if self.views is None:
            return self.transform(img)
        return torch.stack([augmented_view(self.transform, img, self.seed, index, v) for v in range(self.views)])


def image_batches(dataset: Dataset, batches: Sequence[Sequence[int]], num_workers: int = 0) -> Iterator[torch.Tensor]:
    """The stacked items of each batch of indices, in order, decoded by ``num_workers`` processes
    (0: in this process). The process's global RNG is neither read nor advanced."""
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(0),  # DataLoader would draw its base seed from torch's
                        prefetch_factor=2 if num_workers else None)
    yield from loader
