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
from torch.utils.data import DataLoader, Dataset, Sampler

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


class ViewItems(Dataset):
    """Item ``(i, v)``: view v of image i, ``(C, H, W)``, under its own seed (the live training path)."""

    def __init__(self, images: LabeledImages, transform: Transform, seed: int = 0) -> None:
        self.images, self.transform, self.seed = images, transform, seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, int]) -> torch.Tensor:
        i, v = item
        return augmented_view(self.transform, self.images.load(i), self.seed, i, v)


class _Plan(Sampler[Sequence[Any]]):
    """A batch sampler whose batches are set before each pass (the plan of a persistent loader)."""

    def __init__(self) -> None:
        self.batches: list[Sequence[Any]] = []

    def __iter__(self) -> Iterator[Sequence[Any]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _loader(dataset: Dataset, batches: Sampler[Sequence[Any]] | Sequence[Sequence[Any]], num_workers: int,
            persistent: bool = False, pin_memory: bool = False) -> DataLoader:
    if num_workers < 0:
        raise ValueError(f"data.workers must be >= 0, got {num_workers}; use 0 to load images in this process")
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(0),  # DataLoader would draw its base seed from torch's
                      prefetch_factor=2 if num_workers else None, persistent_workers=persistent and num_workers > 0)


def _batches(loader: DataLoader) -> Iterator[torch.Tensor]:
    """The loader's batches; an error raised in a worker comes back as its own type and one-line message
    (torch wraps it in a worker traceback)."""
    try:
        yield from loader
    except Exception as e:
        text = str(e)
        if not (loader.num_workers and text.startswith("Caught ")):
            raise
        last = text.rstrip().splitlines()[-1]  # "module.ErrorType: message" of the worker's traceback
        try:
            err = type(e)(last.partition(": ")[2] or last)
        except Exception:  # noqa: BLE001  (an exception type that takes other arguments: keep torch's)
            raise e from None
        raise err from None


def image_batches(dataset: Dataset, batches: Sequence[Sequence[Any]], num_workers: int = 0) -> Iterator[torch.Tensor]:
    """The stacked items of each batch of indices, in order, decoded by ``num_workers`` processes
    (0: in this process). The process's global RNG is neither read nor advanced."""
    return _batches(_loader(dataset, batches, num_workers))


class BatchLoader:
    """Loads planned batches of a dataset with ``num_workers`` worker processes that live as long as it does
    (started on the first pass, reused by the next ones: one pass per training epoch). Each call takes the
    batches of one pass and yields their stacked items in order, the workers preparing up to 2 batches
    each ahead of the consumer. Items must not depend on the worker (seeded per item, as :class:`ViewItems`)."""

    def __init__(self, dataset: Dataset, num_workers: int = 0, pin_memory: bool = False) -> None:
        self.plan = _Plan()
        self.loader = _loader(dataset, self.plan, num_workers, persistent=True, pin_memory=pin_memory)

    def __call__(self, batches: Sequence[Sequence[Any]]) -> Iterator[torch.Tensor]:
        """One pass over ``batches`` (one pass at a time: a new pass abandons the one before)."""
        self.plan.batches = list(batches)
        yield from _batches(self.loader)
