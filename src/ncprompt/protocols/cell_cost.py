"""Estimated seconds of one grid cell (a method trained and evaluated on one dataset), fitted to measured cells.

Used to order cells (longest first) and to pack grids into parts; an estimate, never a result.

Model, per method ``m``::

    seconds = a_m + (b_m * K + c_m * K^2) * s(K, tau)

``K`` the classes the prompts are trained on (the base half, ``ceil(classes / 2)``, of a base-to-new cell; every
class under protocol ``all``) and ``s`` the share of the 16-shot training images left at imbalance ``tau``
(:func:`train_share`, 1 when balanced). The number of optimisation steps grows with the training images
(``K * shots * s / batch`` per epoch), and each step costs a fixed part (the image batch, the optimiser) and a
part that grows with K (every class prompt through the text tower): steps x step = ``(b K + c K^2) s``; ``a``
holds what does not scale with training (model load, evaluation, part of the feature build). The bench-3 pilot
measured the quadratic term: on 500 classes a cell takes 6-17x a per-class figure fitted on 10-85 classes.

Coefficients: :data:`COEFFICIENTS`, a fit by non-negative least squares in relative error (:func:`fit`) to the
cells measured on the 2-core machine (one thread each, two workers); ``benchmarks/cell_costs.py`` refits them
from the committed part files and prints the table and the fit's errors (docs/evidence.md, "Cost per cell").
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ncprompt.data.sampling import imbalanced_shots

#: (a, b, c) per method, seconds on one core of the 2-core machine (benchmarks/cell_costs.py; fitted 2026-12-05 to
#: benchmarks/results/evidence-b3-pilot/b2n-{1..5}.json and whole_suite_b3_on.partial.json)
COEFFICIENTS: dict[str, tuple[float, float, float]] = {
    "cocoop": (0.7583, 0.7888, 0.08638),  # 181 cells, median relative error 0.10, largest 0.40
    "coop": (1.087, 0.752, 0.0117),  # 181 cells, median relative error 0.10, largest 0.57
    "kgcoop": (1.495, 0.6057, 0.0114),  # 180 cells, median relative error 0.11, largest 0.75
    "maple": (1.447, 0.6487, 0.03278),  # 180 cells, median relative error 0.16, largest 0.59
    "promptsrc": (0.0, 3.799, 0.04055),  # 3 cells (b3_food, b3_generic), median relative error 0.01
    "tcp": (1.105, 0.1356, 0.01068),  # 180 cells, median relative error 0.09, largest 0.36
}
#: methods not measured yet, costed as the measured method they resemble (same prompts and training loop)
LIKE = {"ivlp": "maple", "prograd": "coop"}
#: methods that do not train prompts (a probe on cached features, zero-shot): seconds per class
NO_PROMPT_TRAINING = {"linear_probe": 0.05, "zeroshot": 0.01}
SHOTS = 16


def train_share(classes: int, tau: float | None) -> float:
    """The share of ``classes x 16`` training images that the exponential imbalance profile at ``tau`` keeps."""
    if tau is None or tau >= 1.0:
        return 1.0
    return float(imbalanced_shots(classes, SHOTS, tau, 0).sum()) / (SHOTS * classes)


def trained_classes(classes: int, protocol: str = "base2new") -> int:
    """The classes the prompts see in training: the base half of a base-to-new cell, all otherwise."""
    return math.ceil(classes / 2) if protocol == "base2new" else classes


def design_row(classes: int, tau: float | None, protocol: str = "base2new") -> list[float]:
    """``[1, K s, K^2 s]``: the model's terms for one cell."""
    k = trained_classes(classes, protocol)
    s = train_share(k, tau)
    return [1.0, k * s, k * k * s]


def fit(cells: Iterable[tuple[int, float | None, str, float]]) -> tuple[float, float, float]:
    """(a, b, c) >= 0 minimising the squared *relative* error over measured ``(classes, tau, protocol,
    seconds)`` cells, so that the many small cells and the few large ones count alike."""
    from scipy.optimize import nnls

    rows, secs = [], []
    for classes, tau, protocol, seconds in cells:
        rows.append(design_row(classes, tau, protocol))
        secs.append(float(seconds))
    if not rows:
        raise ValueError("no measured cells to fit")
    x, y = np.asarray(rows), np.asarray(secs)
    w = 1.0 / np.maximum(y, 1e-9)
    coef, _ = nnls(x * w[:, None], y * w)
    return float(coef[0]), float(coef[1]), float(coef[2])


def estimate(method: str, classes: int, tau: float | None = None, protocol: str = "base2new",
             coefficients: dict[str, tuple[float, float, float]] | None = None) -> float:
    """Estimated seconds of one cell of ``method`` (``+npt`` costs as its base method: measured within 5%)."""
    name = method.split("+")[0]
    if name in NO_PROMPT_TRAINING:
        return NO_PROMPT_TRAINING[name] * classes
    coefs = COEFFICIENTS if coefficients is None else coefficients
    a, b, c = coefs[name if name in coefs else LIKE[name]]
    _, ks, kks = design_row(classes, tau, protocol)
    return a + b * ks + c * kks


__all__ = ["COEFFICIENTS", "design_row", "estimate", "fit", "train_share", "trained_classes"]
