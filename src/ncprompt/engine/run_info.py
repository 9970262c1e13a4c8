"""What a run was, by name: classes, splits, sizes, and the model and weights actually used.

Recorded in results.json (``info``) so a result can be read without the config or the data:
class names of every evaluated split, which were base / new and head / middle / tail, the
training images per class and test images per split, and the backbone that really ran (its
architecture, the weights file or tag with a content hash, or "random-init").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def model_info(backbone: Any, requested: str | None = None) -> dict[str, Any]:
    """The architecture and weights of ``backbone`` (a :class:`~ncprompt.backbones.openclip.Backbone`)."""
    wid = str(getattr(backbone, "weights_id", "") or "")
    meta = getattr(backbone, "meta", None) or {}
    # the loader records what it loaded; the embedded pocket model has weights but no pretrained tag
    random = meta["weights"] == "random" if "weights" in meta else backbone.pretrained is None or wid == "random-init"
    out: dict[str, Any] = {"name": backbone.name, "weights": backbone.pretrained, "weights_id": wid,
                           "random_weights": random}
    if wid.startswith("file:"):
        _, fname, digest = (wid.split(":", 2) + ["", ""])[:3]
        out.update(weights_file=fname, weights_sha256_16=digest)
    if requested is not None and requested != backbone.name:
        out["requested"] = requested  # e.g. a config said ViT-B-16 but a pocket backbone was passed in
    return out


def class_info(classnames: Sequence[str], base: np.ndarray | None = None, new: np.ndarray | None = None,
               counts: np.ndarray | None = None, groups: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Class names of the dataset, of the base / new split, and of the head / middle / tail groups.

    ``counts`` and ``groups`` index the training classes (the base classes in base-to-new)."""
    names = list(classnames)
    out: dict[str, Any] = {"all": names}
    train_names = names
    if base is not None and new is not None:
        out["base"] = [names[i] for i in base]
        out["new"] = [names[i] for i in new]
        train_names = out["base"]
    if counts is not None:
        out["train_counts"] = {c: int(n) for c, n in zip(train_names, counts)}
    if groups:
        out["groups"] = {g: [train_names[i] for i in idx] for g, idx in groups.items()}
    return out


def split_sizes(train_n: int, test_sizes: dict[str, int], target_sizes: dict[str, int] | None = None,
                scored: str = "test") -> dict[str, Any]:
    """Numbers of images: training (after few-shot sampling), each scored split, each target; ``scored``:
    the dataset split they were drawn from (``test``, or ``val`` under ``data.eval_split``)."""
    out: dict[str, Any] = {"train": int(train_n), "test": {k: int(v) for k, v in test_sizes.items()},
                           "scored": scored}
    if target_sizes:
        out["targets"] = {k: int(v) for k, v in target_sizes.items()}
    return out


def run_info(backbone: Any, classnames: Sequence[str], *, requested_model: str | None = None,
             base: np.ndarray | None = None, new: np.ndarray | None = None, counts: np.ndarray | None = None,
             groups: dict[str, np.ndarray] | None = None, train_n: int = 0, test_sizes: dict[str, int] | None = None,
             target_sizes: dict[str, int] | None = None, dataset_name: str | None = None,
             dataset_kind: str | None = None, root: str | None = None,
             templates: Sequence[str] | None = None, scored: str = "test") -> dict[str, Any]:
    """The ``info`` entry of results.json (see the module docstring); ``templates``: the dataset's prompt
    templates (the hand-written prompts the method was built with, read back by ``load_run``)."""
    info: dict[str, Any] = {
        "model": model_info(backbone, requested_model),
        "dataset": {k: v for k, v in (("name", dataset_name), ("kind", dataset_kind), ("root", root)) if v},
        "classes": class_info(classnames, base, new, counts, groups),
        "sizes": split_sizes(train_n, test_sizes or {}, target_sizes, scored),
    }
    if templates is not None:
        info["templates"] = list(templates)
    return info

