"""Few-shot and class-imbalanced sampling, base/new class splits, head/middle/tail groups."""

from __future__ import annotations

import math

import numpy as np

from ncprompt.data.base import DataError, DatasetSplits, LabeledImages, NoImages


def imbalanced_shots(num_classes: int, n_max: int, tau: float, seed: int) -> np.ndarray:
    """Shots per class for the exponential profile n_k = max(1, floor(n_max * tau^(r_k/(K-1)))),
    r_k the rank of class k in a seeded permutation (tau = 1: balanced)."""
    if not 0 < tau <= 1:
        raise DataError(f"imbalance ratio tau must be in (0, 1], got {tau}")
    if num_classes == 1:
        return np.array([n_max])
    ranks = np.random.default_rng(seed).permutation(num_classes)
    return np.maximum(1, np.floor(n_max * tau ** (ranks / (num_classes - 1)) + 1e-9)).astype(np.int64)


def few_shot_indices(labels: np.ndarray, shots: int | np.ndarray, seed: int, num_classes: int) -> np.ndarray:
    """Seeded choice of ``shots`` (an int, or one count per class) indices per class."""
    per_class = np.full(num_classes, shots) if np.isscalar(shots) else np.asarray(shots)
    rng = np.random.default_rng(seed)
    chosen = []
    for k in range(num_classes):
        idx = np.flatnonzero(labels == k)
        if len(idx) == 0:
            raise DataError(f"class {k} has no training images")
        n = int(per_class[k])
        if n > len(idx):
            raise DataError(f"class {k} has {len(idx)} training images, fewer than the {n} shots asked for")
        chosen.append(rng.choice(idx, n, replace=False))
    return np.sort(np.concatenate(chosen))


def sample_train(split: LabeledImages, num_classes: int, shots: int | None, imbalance: float | None,
                 seed: int) -> tuple[LabeledImages, np.ndarray]:
    """The training subset and the number of images per class it holds (a :class:`DataError` for
    the training split of an evaluation-only dataset)."""
    if isinstance(split, NoImages):
        raise DataError(split.reason)
    if shots is None or shots <= 0:
        if imbalance is not None and imbalance < 1:
            raise DataError("--imbalance needs --shots (n_max of the exponential profile)")
        counts = np.bincount(split.labels, minlength=num_classes)
        return split, counts
    counts = imbalanced_shots(num_classes, shots, imbalance, seed) if imbalance is not None else np.full(
        num_classes, shots)
    return split.subset(few_shot_indices(split.labels, counts, seed, num_classes)), counts


def class_groups(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Head / middle / tail thirds of the classes by training count (descending; ties by index)."""
    order = np.lexsort((np.arange(len(counts)), -counts))
    k = len(counts)
    a, b = math.ceil(k / 3), math.ceil(2 * k / 3)
    return {"head": np.sort(order[:a]), "middle": np.sort(order[a:b]), "tail": np.sort(order[b:])}


def base_new_split(num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Base = the first ceil(K/2) labels, new = the rest."""
    nb = math.ceil(num_classes / 2)
    return np.arange(nb), np.arange(nb, num_classes)


def restrict_classes(ds: DatasetSplits, classes: np.ndarray, suffix: str) -> DatasetSplits:
    """The dataset restricted to ``classes``, relabelled 0..len(classes)-1 in that order."""
    remap = -np.ones(ds.num_classes, dtype=np.int64)
    remap[classes] = np.arange(len(classes))

    def cut(s: LabeledImages | None) -> LabeledImages | None:
        if s is None:
            return None
        keep = np.flatnonzero(remap[s.labels] >= 0)
        return s.subset(keep, remap[s.labels[keep]])

    return DatasetSplits(
        name=f"{ds.name}:{suffix}",
        classnames=[ds.classnames[i] for i in classes],
        train=cut(ds.train),
        test=cut(ds.test),
        val=cut(ds.val),
        templates=ds.templates,
    )
