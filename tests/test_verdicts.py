"""Verdicts on paired claims and within-dataset correlations (analysis/verdicts.py): analytic cases and
brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr, wilcoxon

from ncprompt.analysis.verdicts import (
    HELD,
    INCONCLUSIVE,
    NOT_HELD,
    fixed_effect_correlation,
    hierarchical_bootstrap,
    holm,
    min_wilcoxon_p,
    pair,
    paired_verdict,
    spearman_by_dataset,
)

DATASETS = [f"d{i}" for i in range(8)]


def _diffs(fn):
    return {(d, s): fn(i, s) for i, d in enumerate(DATASETS) for s in range(1, 6)}


def test_a_constant_gain_is_held_with_a_degenerate_interval():
    v = paired_verdict("c", _diffs(lambda i, s: 1.5), n_boot=500)
    assert v.verdict == HELD and v.mean == pytest.approx(1.5)
    assert v.ci_low == pytest.approx(1.5) and v.ci_high == pytest.approx(1.5)
    assert v.datasets_helped == 8 and v.n_pairs == 40 and v.n_datasets == 8
    assert v.wilcoxon_p == pytest.approx(wilcoxon(np.full(8, 1.5)).pvalue)


def test_a_constant_loss_is_not_held_and_noise_is_inconclusive():
    assert paired_verdict("c", _diffs(lambda i, s: -0.5), n_boot=300).verdict == NOT_HELD
    rng = np.random.default_rng(0)
    noise = {k: float(x) for k, x in zip(_diffs(lambda i, s: 0.0), rng.normal(0, 1, 40))}
    noise = {k: v - np.mean(list(noise.values())) for k, v in noise.items()}  # mean exactly 0
    v = paired_verdict("c", noise, n_boot=2000)
    assert v.verdict == INCONCLUSIVE and v.ci_low < 0 < v.ci_high


def test_few_datasets_cannot_be_held_and_say_why():
    diffs = {(d, s): 2.0 + 0.1 * s for d in ("a", "b", "c") for s in range(5)}
    v = paired_verdict("c", diffs, n_boot=300)
    assert v.ci_low > 0 and v.wilcoxon_p >= 0.25 and v.verdict == INCONCLUSIVE
    assert any("cannot fall below 0.25" in n for n in v.notes)


def test_bootstrap_resamples_datasets_first():
    """One dataset with a large gain and five with none: the hierarchical interval reaches 0 (the gain rests on
    one dataset), whereas resampling the 30 pairs alone would exclude it."""
    diffs = {("big", s): 10.0 for s in range(5)} | {(f"z{i}", s): 0.0 for i in range(5) for s in range(5)}
    lo, hi = hierarchical_bootstrap(diffs, n_boot=4000, seed=1)
    assert lo == 0.0 and hi > 1.0
    assert hierarchical_bootstrap(diffs, n_boot=500, seed=3) == hierarchical_bootstrap(diffs, n_boot=500, seed=3)


def test_bootstrap_interval_matches_a_brute_force_reference():
    rng = np.random.default_rng(5)
    diffs = {(d, s): float(rng.normal(1, 2)) for d in DATASETS[:4] for s in range(3)}
    lo, hi = hierarchical_bootstrap(diffs, n_boot=3000, seed=7)
    groups = [[diffs[(d, s)] for s in range(3)] for d in DATASETS[:4]]
    ref = np.random.default_rng(7)
    means = []
    for _ in range(3000):
        picked = ref.integers(0, 4, 4)
        vals = [v for g in picked for v in np.asarray(groups[g])[ref.integers(0, 3, 3)]]
        means.append(np.mean(vals))
    assert (lo, hi) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))


def test_pairing_names_the_cells_only_one_side_has():
    d, unpaired = pair({("a", 1): 3.0, ("a", 2): 4.0}, {("a", 1): 1.0, ("b", 1): 0.0})
    assert d == {("a", 1): 2.0} and unpaired == [("a", 2), ("b", 1)]
    v = paired_verdict("c", {("a", 1): float("nan"), ("a", 2): 1.0}, n_boot=50)
    assert v.n_pairs == 1 and "left out" in v.notes[0]


def test_spearman_per_dataset_needs_enough_runs():
    rng = np.random.default_rng(0)
    rows = [{"dataset": "a", "nc": float(x), "acc": float(2 * x + rng.normal(0, 0.1))} for x in rng.normal(size=20)]
    rows += [{"dataset": "b", "nc": float(x), "acc": float(x)} for x in range(4)]
    out = spearman_by_dataset(rows, "nc", "acc", min_n=15)
    xs, ys = zip(*[(r["nc"], r["acc"]) for r in rows if r["dataset"] == "a"])
    assert out["a"]["rho"] == pytest.approx(spearmanr(xs, ys).statistic) and out["a"]["n"] == 20
    assert out["b"]["rho"] is None and "n = 4 < 15" in out["b"]["why"]


def test_fixed_effect_correlation_sees_through_simpsons_paradox():
    """Within each dataset accuracy rises with the metric; across datasets the levels fall: pooled naively
    the relation is negative, with dataset as a fixed effect it is the within-dataset +1."""
    rows = [{"dataset": f"d{k}", "nc": k * 10 + x, "acc": -k * 30 + x} for k in range(4) for x in range(6)]
    naive = pearsonr([r["nc"] for r in rows], [r["acc"] for r in rows]).statistic
    fe = fixed_effect_correlation(rows, "nc", "acc")
    assert naive < -0.9 and fe["r"] == pytest.approx(1.0) and fe["n"] == 24 and fe["datasets"] == 4
    # a partial correlation given dataset dummies: the r of residuals of both on the dummies
    rng = np.random.default_rng(2)
    rows = [{"dataset": f"d{k}", "nc": float(rng.normal(k)), "acc": float(rng.normal(-k))}
            for k in range(3) for _ in range(10)]
    fe = fixed_effect_correlation(rows, "nc", "acc")
    dummies = np.eye(3)[[int(r["dataset"][1]) for r in rows]]
    res = [np.asarray([r[c] for r in rows]) - dummies @ np.linalg.lstsq(dummies, [r[c] for r in rows], rcond=None)[0]
           for c in ("nc", "acc")]
    assert fe["r"] == pytest.approx(pearsonr(*res).statistic)
    assert fixed_effect_correlation(rows[:3], "nc", "acc")["r"] is None


def test_holm_adjustment_analytic_case_and_step_down_rejections():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, None, 0.03, 0.005]) == pytest.approx([0.03, 0.06, None, 0.06, 0.02])
    assert holm([0.9, 0.8]) == [1.0, 1.0] and holm([]) == [] and holm([None]) == [None]
    rng = np.random.default_rng(3)
    for _ in range(200):  # Holm's step-down test, written as the procedure: adjusted p <= alpha <=> rejected
        p = list(rng.uniform(0, 0.2, int(rng.integers(1, 12))))
        alpha = float(rng.uniform(0.01, 0.1))
        order = sorted(range(len(p)), key=lambda i: p[i])
        rejected = set()
        for k, i in enumerate(order):
            if p[i] > alpha / (len(p) - k):
                break
            rejected.add(i)
        assert {i for i, a in enumerate(holm(p)) if a <= alpha} == rejected


@pytest.mark.parametrize("n", [2, 4, 6, 8, 11])
def test_min_wilcoxon_p_is_the_exact_test_with_every_difference_positive(n):
    assert min_wilcoxon_p(n) == pytest.approx(wilcoxon(np.arange(1.0, n + 1)).pvalue)
