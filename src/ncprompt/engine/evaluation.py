"""Evaluation shared by ``train``, ``eval``, grids and reports: predictions, accuracy, NC diagnostics.

For a split with labels y and predictions argmax_k logits_ik: top-1, per-class accuracy, macro-F1,
head/middle/tail group means (:mod:`ncprompt.metrics.classification`) and NC1-NC4 of the
(normalised) image features against the text features the method classifies with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ncprompt.data.base import LabeledImages
from ncprompt.data.cache import FeatureCache
from ncprompt.engine import distributed
from ncprompt.engine.results import SplitResult
from ncprompt.methods.base import PromptMethod
from ncprompt.metrics.classification import classification_report, named_confusion
from ncprompt.metrics.neural_collapse import NCAccumulator


@dataclass
class EvalSet:
    """A test split and its class names (e.g. base or new classes, or a target dataset)."""

    name: str
    classnames: list[str]
    images: LabeledImages

    @property
    def labels(self) -> torch.Tensor:
        return torch.as_tensor(self.images.labels)


def predict(method: PromptMethod, features: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """Predicted classes of image features and the (K, E) text features used."""
    logits, text = method.predict(features)
    return logits.argmax(-1).numpy(), text


def nc_diagnostics(features: torch.Tensor, labels: torch.Tensor, text: torch.Tensor,
                   preds: np.ndarray | None = None, reference_means: torch.Tensor | None = None) -> dict[str, float]:
    """NC1-NC4 of (normalised) image features against the text features of the same classes
    (empty when a class has no sample)."""
    k = text.shape[0]
    present = torch.bincount(labels, minlength=k) > 0
    if int(present.sum()) < 2 or not bool(present.all()):
        return {}
    acc = NCAccumulator(k, features.shape[1])
    lo, hi = distributed.shard_bounds(len(labels))  # under torchrun each rank accumulates a row shard
    acc.update(features[lo:hi], labels[lo:hi])
    distributed.reduce_nc(acc)
    if preds is not None:  # second pass, against the (global) class means
        nc4 = NCAccumulator(k, features.shape[1])
        means = reference_means if reference_means is not None else acc.class_means()
        nc4.update_nc4(features[lo:hi], torch.as_tensor(preds)[lo:hi], reference_means=means)
        acc.merge(distributed.reduce_nc(nc4))
    return acc.compute(text_features=text.detach().cpu())


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class means of the normalised features (the NC accumulator's), (K, E)."""
    acc = NCAccumulator(num_classes, features.shape[1])
    acc.update(features, labels)
    return acc.class_means()


def evaluate_features(method: PromptMethod, features: torch.Tensor, labels: torch.Tensor, classnames: list[str],
                      groups: dict[str, np.ndarray] | None = None, diagnostics: bool = True,
                      train_means: torch.Tensor | None = None, initial_text: torch.Tensor | None = None,
                      ) -> SplitResult:
    """Accuracy (and NC diagnostics) of ``method`` on already-encoded features."""
    preds, text = predict(method, features)
    rep = classification_report(labels.numpy(), preds, len(classnames), groups)
    res = SplitResult(top1=rep["top1"], mean_per_class=rep["mean_per_class"], macro_f1=rep["macro_f1"],
                      per_class=rep["per_class"], n=rep["n"], classnames=list(classnames), groups=rep.get("groups"),
                      confusion=named_confusion(rep["confusion"], list(classnames)))
    if diagnostics:
        res.nc = nc_diagnostics(features, labels, text, preds, reference_means=train_means)
        if initial_text is not None:
            res.nc_initial_text = nc_diagnostics(features, labels, initial_text)
    return res


def evaluate(method: PromptMethod, ev: EvalSet, cache: FeatureCache | None = None,
             groups: dict[str, np.ndarray] | None = None, diagnostics: bool = True,
             train_means: torch.Tensor | None = None) -> SplitResult:
    """``method`` (moved to the split's class names when they differ) on one split."""
    m = method if ev.classnames == method.classnames else method.for_classnames(ev.classnames)
    feats = m.image_features(ev.images, cache, desc=f"test {ev.name}")
    return evaluate_features(m, feats, ev.labels, ev.classnames, groups, diagnostics, train_means)
