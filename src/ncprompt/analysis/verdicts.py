"""Verdicts on paired claims ("NPT raises HM on CoOp at tau 0.25") and within-dataset correlations.

A claim compares a treatment with its control on the same (dataset, seed) cell, so that the data sample,
the renders and the class split are shared: the unit of evidence is the paired difference
``d[dataset, seed] = treatment - control``. From the differences:

* the mean over all pairs, with a 95% interval from a two-level (hierarchical) bootstrap: draw datasets
  with replacement, then seeds with replacement within each drawn dataset, and take the mean of the drawn
  differences; the interval is the 2.5 / 97.5 percentiles of ``n_boot`` such means (seeded, so a report
  regenerates the same interval). Resampling datasets first keeps a dataset whose seeds agree with each other
  from counting as many independent samples;
* a two-sided Wilcoxon signed-rank test over the per-dataset mean differences (datasets are the independent
  units; with n datasets the smallest possible p is 2 / 2^n, so below 6 datasets p never reaches 0.05 and
  the verdict says so);
* the number of datasets whose mean difference is positive.

Verdict: ``held`` when the interval lies above 0 and the Wilcoxon p is below ``alpha``; ``not held`` when the
interval lies at or below 0 (no gain, or a loss, excluded from chance); otherwise ``inconclusive``.

Multiplicity: a report decides many claims at once, so one per-claim ``held`` at alpha 0.05 among 60 claims is
what chance alone gives.  :func:`holm` adjusts the Wilcoxon p-values of a family of claims (Holm's step-down:
the i-th smallest of m p-values times ``m - i + 1``, made non-decreasing, capped at 1), which bounds the chance of
any false ``held`` in the family by alpha; :func:`min_wilcoxon_p` is the floor the test puts on p with n
datasets, so a report can say when no claim of a family could survive the adjustment at all.

Correlations (NC metric vs accuracy): a Spearman rho per dataset, only where a dataset has at least
``min_n`` runs; and one pooled over datasets with dataset as a fixed effect: both variables are centred on
their dataset's mean and the Pearson r of the residuals is tested with ``n - n_datasets - 1`` degrees of
freedom (the partial correlation given dataset dummies), so that differences between datasets' levels
cannot create or hide a within-dataset relation (Simpson's paradox).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"


@dataclass
class PairedVerdict:
    """The evidence for one paired claim and its verdict (see the module docstring)."""

    claim: str
    n_pairs: int
    n_datasets: int
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    wilcoxon_p: float | None
    datasets_helped: int
    verdict: str
    notes: list[str] = field(default_factory=list)
    per_dataset: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hierarchical_bootstrap(diffs: Mapping[tuple[str, Any], float], n_boot: int = 10000, seed: int = 0,
                           level: float = 0.95) -> tuple[float, float]:
    """The ``level`` percentile interval of the mean of ``diffs`` (keyed (dataset, seed)) under resampling of
    datasets, then of seeds within each drawn dataset."""
    by_ds = _by_dataset(diffs)
    groups = [np.asarray(v, dtype=np.float64) for v in by_ds.values()]
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for b in range(n_boot):
        picked = rng.integers(0, len(groups), len(groups))
        total, count = 0.0, 0
        for g in picked:
            vals = groups[g]
            draw = vals[rng.integers(0, len(vals), len(vals))]
            total += float(draw.sum())
            count += len(draw)
        means[b] = total / count
    lo, hi = np.percentile(means, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def paired_verdict(claim: str, diffs: Mapping[tuple[str, Any], float], alpha: float = 0.05, n_boot: int = 10000,
                   seed: int = 0) -> PairedVerdict:
    """Verdict on ``claim`` from paired differences keyed (dataset, seed): positive supports the claim."""
    from scipy.stats import wilcoxon

    clean = {k: float(v) for k, v in diffs.items() if v is not None and math.isfinite(float(v))}
    notes: list[str] = []
    if len(clean) < len(diffs):
        notes.append(f"{len(diffs) - len(clean)} pair(s) without a finite value left out")
    by_ds = _by_dataset(clean)
    per_ds = {d: float(np.mean(v)) for d, v in sorted(by_ds.items())}
    if not clean:
        return PairedVerdict(claim, 0, 0, None, None, None, None, 0, INCONCLUSIVE, notes + ["no pairs"])
    mean = float(np.mean(list(clean.values())))
    lo, hi = hierarchical_bootstrap(clean, n_boot=n_boot, seed=seed)
    p: float | None = None
    ds_vals = np.asarray(list(per_ds.values()))
    if len(ds_vals) >= 2 and np.any(ds_vals != 0):
        p = float(wilcoxon(ds_vals, alternative="two-sided").pvalue)
    else:
        notes.append("Wilcoxon needs at least 2 datasets with a non-zero mean difference")
    if len(ds_vals) < 6:
        floor = min_wilcoxon_p(len(ds_vals))
        notes.append(f"with {len(ds_vals)} dataset(s) the Wilcoxon p cannot fall below {floor:.3g}")
    if len(by_ds) == 1:
        notes.append("one dataset: the interval covers its seeds only")
    helped = int(np.sum(ds_vals > 0))
    if lo > 0 and p is not None and p < alpha:
        verdict = HELD
    elif hi <= 0:
        verdict = NOT_HELD
    else:
        verdict = INCONCLUSIVE
    return PairedVerdict(claim, len(clean), len(per_ds), mean, lo, hi, p, helped, verdict, notes, per_ds)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the input order (``None`` stays ``None`` and does not count in m).

    With the m present p-values sorted ascending, ``p_(i) -> max_{j <= i} min(1, (m - j + 1) p_(j))``."""
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    out: list[float | None] = [None] * len(pvalues)
    m, running = len(present), 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * float(p)))
        out[i] = running
    return out


def min_wilcoxon_p(n_datasets: int) -> float:
    """The smallest two-sided exact Wilcoxon signed-rank p with ``n_datasets`` non-zero differences: 2 / 2^n."""
    return min(1.0, 2.0 / 2.0 ** n_datasets)


def pair(treatment: Mapping[tuple[str, Any], float], control: Mapping[tuple[str, Any], float]
         ) -> tuple[dict[tuple[str, Any], float], list[tuple[str, Any]]]:
    """``treatment - control`` on the (dataset, seed) keys both have, and the keys only one has (named in a
    report so a missing cell is never silently dropped)."""
    both = sorted(set(treatment) & set(control), key=str)
    unpaired = sorted(set(treatment) ^ set(control), key=str)
    return {k: float(treatment[k]) - float(control[k]) for k in both}, unpaired


def spearman_by_dataset(rows: Sequence[Mapping[str, Any]], x: str, y: str, min_n: int = 15
                        ) -> dict[str, dict[str, Any]]:
    """Spearman rho of ``x`` vs ``y`` within each dataset (rows carry ``dataset``); fewer than ``min_n`` runs
    with both values: no rho, and the reason."""
    from scipy.stats import spearmanr

    out: dict[str, dict[str, Any]] = {}
    for ds, pts in sorted(_points(rows, x, y).items()):
        n = len(pts)
        if n < min_n:
            out[ds] = {"n": n, "rho": None, "p": None, "why": f"n = {n} < {min_n} runs"}
            continue
        xs, ys = zip(*pts)
        if len(set(xs)) < 2 or len(set(ys)) < 2:
            out[ds] = {"n": n, "rho": None, "p": None, "why": "a constant variable"}
            continue
        r = spearmanr(xs, ys)
        out[ds] = {"n": n, "rho": float(r.statistic), "p": float(r.pvalue), "why": ""}
    return out


def fixed_effect_correlation(rows: Sequence[Mapping[str, Any]], x: str, y: str, min_n: int = 5) -> dict[str, Any]:
    """Pearson r of ``x`` and ``y`` after centring both on each dataset's mean (dataset as a fixed effect),
    with its two-sided p on ``n - n_datasets - 1`` degrees of freedom. Datasets with a single run carry no
    within-dataset information and are left out."""
    from scipy.stats import t as student_t

    groups = {d: p for d, p in _points(rows, x, y).items() if len(p) >= 2}
    n = sum(len(p) for p in groups.values())
    dof = n - len(groups) - 1
    if n < min_n or dof < 1:
        return {"n": n, "datasets": len(groups), "r": None, "p": None, "why": f"n = {n} < {min_n} runs"}
    rx, ry = [], []
    for pts in groups.values():
        a = np.asarray(pts, dtype=np.float64)
        rx.extend(a[:, 0] - a[:, 0].mean())
        ry.extend(a[:, 1] - a[:, 1].mean())
    vx, vy = np.asarray(rx), np.asarray(ry)
    denom = math.sqrt(float(vx @ vx) * float(vy @ vy))
    if denom == 0:
        return {"n": n, "datasets": len(groups), "r": None, "p": None, "why": "no within-dataset variation"}
    r = float(np.clip(vx @ vy / denom, -1.0, 1.0))
    tstat = r * math.sqrt(dof / max(1e-300, 1 - r * r))
    p = float(2 * student_t.sf(abs(tstat), dof))
    return {"n": n, "datasets": len(groups), "r": r, "p": p, "why": ""}


def _by_dataset(diffs: Mapping[tuple[str, Any], float]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for (ds, _seed), v in sorted(diffs.items(), key=lambda kv: str(kv[0])):
        out[str(ds)].append(float(v))
    return dict(out)


def _points(rows: Sequence[Mapping[str, Any]], x: str, y: str) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        a, b = r.get(x), r.get(y)
        if a is None or b is None or not (math.isfinite(float(a)) and math.isfinite(float(b))):
            continue
        out[str(r.get("dataset"))].append((float(a), float(b)))
    return dict(out)
