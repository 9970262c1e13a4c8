"""``ncprompt report DIR...``: the paper's analysis across runs.

For each NC metric m and each accuracy a in {base, new, HM} (or top-1 for all-class runs): the
Pearson r and Spearman rho between m and a over the runs, with the number of runs n, as a table
(CSV + markdown) and a scatter-plot grid.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from ncprompt.engine.results import read_results

NC_KEYS = ("nc1", "nc2_equinorm_img", "nc2_equiangle_etf_img", "nc2_equinorm_text", "nc2_equiangle_etf_text",
           "nc3_self_duality", "nc4")


def collect_runs(dirs: list[str | Path]) -> list[dict[str, Any]]:
    """Every results.json under the given folders, flattened to one row per run."""
    rows = []
    for d in dirs:
        p = Path(d)
        files = [p] if p.is_file() else sorted(p.rglob("results.json"))
        for f in files:
            r = read_results(f)
            row: dict[str, Any] = {"run": str(f.parent), "method": r.method, "npt": r.npt, "dataset": r.dataset,
                                   "seed": r.seed, "imbalance": r.imbalance}
            row.update({f"acc_{k}": v for k, v in r.accuracies().items()})
            first = r.splits.get("base") or r.splits.get("all")
            nc = (r.train.nc if r.train is not None else {}) or (first.nc if first is not None else {}) or {}
            for k in NC_KEYS:
                if k in nc:
                    row[f"train_{k}"] = nc[k]
            rows.append(row)
    return rows


def correlation_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pearson and Spearman correlation of each NC metric with each accuracy column."""
    from scipy.stats import pearsonr, spearmanr

    acc_cols = [c for c in ("acc_base", "acc_new", "acc_hm", "acc_all") if any(c in r for r in rows)]
    nc_cols = [f"train_{k}" for k in NC_KEYS if any(f"train_{k}" in r for r in rows)]
    out = []
    for m in nc_cols:
        for a in acc_cols:
            pairs = [(r[m], r[a]) for r in rows if m in r and a in r and r[m] is not None]
            n = len(pairs)
            entry: dict[str, Any] = {"metric": m, "accuracy": a, "n": n, "pearson": None, "pearson_p": None,
                                     "spearman": None, "spearman_p": None}
            if n >= 3:
                x, y = np.array(pairs, dtype=float).T
                if np.ptp(x) > 0 and np.ptp(y) > 0:
                    pr = pearsonr(x, y)
                    sr = spearmanr(x, y)
                    entry.update(pearson=float(pr[0]), pearson_p=float(pr[1]), spearman=float(sr[0]),
                                 spearman_p=float(sr[1]))
            out.append(entry)
    return out


def write_report(rows: list[dict[str, Any]], out_dir: str | Path) -> dict[str, Any]:
    """runs.csv, correlations.csv, correlations.md and correlations.png in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = correlation_table(rows)
    cols = sorted({k for r in rows for k in r}, key=lambda c: (c != "run", c))
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    with open(out / "correlations.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0].keys()) if table else ["metric"])
        w.writeheader()
        w.writerows(table)
    md = [f"# NC metrics vs accuracy over {len(rows)} runs", "",
          "| metric (train) | accuracy | n | Pearson r | p | Spearman rho | p |", "|---|---|---|---|---|---|---|"]
    md += [f"| {e['metric']} | {e['accuracy']} | {e['n']} | {_f(e['pearson'], '+.3f')} | {_f(e['pearson_p'], '.3g')} "
           f"| {_f(e['spearman'], '+.3f')} | {_f(e['spearman_p'], '.3g')} |" for e in table]
    (out / "correlations.md").write_text("\n".join(md) + "\n")
    (out / "nc_by_method.md").write_text(nc_by_method(rows))
    _scatter(rows, table, out / "correlations.png")
    return {"runs": len(rows), "table": table}


def nc_by_method(rows: list[dict[str, Any]]) -> str:
    """Mean of each training NC metric and accuracy per method (with/without NPT) and imbalance."""
    keys = list(dict.fromkeys((r["method"], bool(r.get("npt")), r.get("imbalance")) for r in rows))
    cols = [c for c in [f"train_{k}" for k in NC_KEYS] + ["acc_base", "acc_new", "acc_hm", "acc_all"]
            if any(c in r for r in rows)]
    lines = ["| method | tau | runs | " + " | ".join(c.replace("train_", "") for c in cols) + " |",
             "|---|---|---|" + "---|" * len(cols)]
    for m, npt, tau in keys:
        cell = [r for r in rows if r["method"] == m and bool(r.get("npt")) == npt and r.get("imbalance") == tau]
        vals = [np.mean([r[c] for r in cell if c in r]) if any(c in r for r in cell) else np.nan for c in cols]
        lines.append(f"| {m}{'+npt' if npt else ''} | {tau} | {len(cell)} | "
                     + " | ".join(f"{v:.4f}" if c.startswith("train_") else f"{v:.2f}" for c, v in zip(cols, vals))
                     + " |")
    return "\n".join(lines) + "\n"


def _f(v: float | None, spec: str) -> str:
    return "" if v is None else format(v, spec)


def _scatter(rows: list[dict[str, Any]], table: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = sorted({e["metric"] for e in table})
    accs = sorted({e["accuracy"] for e in table})
    if not metrics or not accs:
        return
    fig, axes = plt.subplots(len(accs), len(metrics), figsize=(2.2 * len(metrics), 2.1 * len(accs)), squeeze=False)
    for i, a in enumerate(accs):
        for j, m in enumerate(metrics):
            ax = axes[i][j]
            for npt, marker in ((False, "o"), (True, "x")):
                pts = [(r[m], r[a]) for r in rows if m in r and a in r and bool(r.get("npt")) == npt]
                if pts:
                    x, y = zip(*pts)
                    ax.scatter(x, y, marker=marker, s=14, label="NPT" if npt else "no NPT")
            e = next(e for e in table if e["metric"] == m and e["accuracy"] == a)
            r = "" if e["pearson"] is None else f" r={e['pearson']:+.2f}"
            ax.set_title(f"{m.replace('train_', '')}{r}", fontsize=7)
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel(a, fontsize=7)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
