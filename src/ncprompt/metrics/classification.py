"""Classification metrics: top-1, per-class accuracy, macro-F1, head/middle/tail, base/new/HM."""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """C[i, j] = number of samples of class i predicted as j."""
    return np.bincount(num_classes * labels.astype(np.int64) + preds, minlength=num_classes**2).reshape(
        num_classes, num_classes)


def named_confusion(cm: np.ndarray, classnames: list[str]) -> dict[str, dict[str, int]]:
    """The confusion matrix keyed by class name: {true class: {predicted class: count}}, non-zero counts only
    (sparse, so 1000 classes stay small), every true class present (empty when it has no sample)."""
    return {classnames[i]: {classnames[j]: int(cm[i, j]) for j in np.flatnonzero(cm[i])} for i in range(len(cm))}


def classification_report(labels: np.ndarray, preds: np.ndarray, num_classes: int,
                          groups: dict[str, np.ndarray] | None = None) -> dict[str, object]:
    """top1 (%), per-class accuracy (%), macro-F1 (%), and the mean per-class accuracy of each group."""
    labels = np.asarray(labels)
    preds = np.asarray(preds)
    cm = confusion_matrix(labels, preds, num_classes)
    support = cm.sum(1)
    predicted = cm.sum(0)
    tp = np.diag(cm).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        f1 = np.where(precision + np.nan_to_num(recall) > 0,
                      2 * precision * np.nan_to_num(recall) / (precision + np.nan_to_num(recall)), 0.0)
    present = support > 0
    out: dict[str, object] = {
        "top1": 100.0 * float(tp.sum() / max(len(labels), 1)),
        "mean_per_class": 100.0 * float(np.nanmean(recall[present])) if present.any() else float("nan"),
        "macro_f1": 100.0 * float(f1[present].mean()) if present.any() else float("nan"),
        "per_class": [None if np.isnan(r) else round(100.0 * float(r), 4) for r in recall],
        "n": int(len(labels)),
        "confusion": cm,
    }
    if groups:
        out["groups"] = {
            g: 100.0 * float(np.nanmean(recall[idx][present[idx]])) if present[idx].any() else float("nan")
            for g, idx in groups.items()
        }
    return out


def harmonic_mean(base: float, new: float) -> float:
    """HM = 2 B N / (B + N)."""
    return 0.0 if base + new == 0 else 2.0 * base * new / (base + new)
