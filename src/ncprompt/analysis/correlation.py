"""``ncprompt report DIR...``: the paper's analysis across runs.

For each model apart (runs of different models are never pooled), each NC metric m of the training
images (under each run's final prompts) and each accuracy a in {base, new, HM} (or top-1 for
all-class runs): the Pearson r and Spearman rho between m and a over the runs, with the number of
runs n, as tables (CSV + markdown) and one figure per model and accuracy. Zero-shot runs (hand-written
prompts, nothing trained) are counted in "all runs" and said so; when trained runs are there too, a
second scope "trained runs" leaves them out. A run without training images (zero-shot, 0 shots) has
only test-split NC: it is listed (``test_*`` columns) but never correlated as training NC.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import numpy as np

from ncprompt.analysis.names import display_name
from ncprompt.analysis.plots import ACC_LABELS, correlation_plot, nc_label
from ncprompt.analysis.run_report import run_model
from ncprompt.engine.results import read_results
from ncprompt.utils import atomic_write, atomic_write_bytes

NC_KEYS = ("nc1", "nc2_equinorm_img", "nc2_equiangle_etf_img", "nc2_equinorm_text", "nc2_equiangle_etf_text",
           "nc3_self_duality", "nc4")
ACC_COLS = ("acc_base", "acc_new", "acc_hm", "acc_all")
ALL_RUNS, TRAINED = "all runs", "trained runs"


def collect_runs(dirs: list[str | Path]) -> list[dict[str, Any]]:
    """Every results.json under the given folders, flattened to one row per run: ``train_{nc}`` from the
    training images when the run evaluated them, else ``test_{nc}`` of its base/all test split."""
    rows = []
    for d in dirs:
        p = Path(d)
        files = [p] if p.is_file() else sorted(p.rglob("results.json"))
        for f in files:
            r = read_results(f)
            row: dict[str, Any] = {"run": str(f.parent), "model": run_model(r), "method": r.method, "npt": r.npt,
                                   "dataset": r.dataset, "seed": r.seed, "shots": r.shots, "imbalance": r.imbalance,
                                   "trained": bool(r.epochs_run)}
            row.update({f"acc_{k}": v for k, v in r.accuracies().items()})
            first = r.splits.get("base") or r.splits.get("all")
            if r.train is not None and r.train.nc:
                nc, prefix = r.train.nc, "train_"
            else:
                nc, prefix = (first.nc if first is not None else {}) or {}, "test_"
            row.update({f"{prefix}{k}": nc[k] for k in NC_KEYS if k in nc})
            rows.append(row)
    return rows


def _correlate(rows: list[dict[str, Any]], metric: str, acc: str) -> dict[str, Any]:
    from scipy.stats import pearsonr, spearmanr

    pairs = [(r[metric], r[acc]) for r in rows if r.get(metric) is not None and r.get(acc) is not None]
    entry: dict[str, Any] = {"metric": metric, "accuracy": acc, "n": len(pairs), "pearson": None, "pearson_p": None,
                             "spearman": None, "spearman_p": None}
    if len(pairs) >= 3:
        x, y = np.array(pairs, dtype=float).T
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            pr, sr = pearsonr(x, y), spearmanr(x, y)
            entry.update(pearson=float(pr[0]), pearson_p=float(pr[1]), spearman=float(sr[0]),
                         spearman_p=float(sr[1]))
    return entry


def scopes(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """{"all runs": rows} plus {"trained runs": ...} when zero-shot and trained runs are mixed."""
    trained = [r for r in rows if r.get("trained")]
    return {ALL_RUNS: rows, **({TRAINED: trained} if 0 < len(trained) < len(rows) else {})}


def correlation_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pearson and Spearman correlation of each training NC metric with each accuracy column, computed
    for each model (and scope) apart; every entry names its model, scope and n."""
    out = []
    for model in dict.fromkeys(r.get("model") for r in rows):
        mine = [r for r in rows if r.get("model") == model]
        acc_cols = [c for c in ACC_COLS if any(c in r for r in mine)]
        nc_cols = [f"train_{k}" for k in NC_KEYS if any(f"train_{k}" in r for r in mine)]
        for scope, part in scopes(mine).items():
            out += [{"model": model, "scope": scope, **_correlate(part, m, a)} for m in nc_cols for a in acc_cols]
    return out


def between_datasets_only(rows: list[dict[str, Any]], metric: str) -> bool:
    """True when ``metric`` is the same for every run of each dataset (e.g. image-side NC of a frozen image
    encoder): it then varies only between datasets, and its correlation with accuracy is a dataset effect."""
    by_ds: dict[Any, list[float]] = {}
    for r in rows:
        if r.get(metric) is not None:
            by_ds.setdefault(r.get("dataset"), []).append(float(r[metric]))
    return all(np.ptp(v) <= 1e-9 * max(1.0, float(np.abs(v).max())) for v in by_ds.values())


def _slug(s: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(s)).strip("_") or "model"


def _composition(rows: list[dict[str, Any]]) -> str:
    """One line saying what a model's runs are: methods with counts, datasets, untrained runs."""
    methods: dict[str, int] = {}
    for r in rows:
        lab = f"{r['method']}{'+npt' if r.get('npt') else ''}"
        methods[lab] = methods.get(lab, 0) + 1
    datasets = ", ".join(map(str, dict.fromkeys(r.get("dataset") for r in rows)))
    text = (f"{len(rows)} runs ({', '.join(f'{m} {n}' for m, n in methods.items())}); datasets: {datasets}; "
            f"{sum(not r.get('trained') for r in rows)} untrained (zero-shot prompts)")
    no_train = sum(not any(k.startswith("train_") for k in r) for r in rows)
    if no_train:
        text += f"; {no_train} without training images (test-split NC only, not correlated)"
    return text + "."


def _write_csv(path: Path, rows: list[dict[str, Any]], cols: list[str]) -> None:
    def write(p: Path) -> None:
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


def write_report(rows: list[dict[str, Any]], out_dir: str | Path) -> dict[str, Any]:
    """runs.csv, correlations.csv, correlations.md, nc_by_method.md and correlations_{model}_{accuracy}.png
    (one figure per model and accuracy, over all of that model's runs) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = correlation_table(rows)
    _write_csv(out / "runs.csv", rows, sorted({k for r in rows for k in r}, key=lambda c: (c != "run", c)))
    _write_csv(out / "correlations.csv", table, list(table[0]) if table else ["model", "metric"])
    md = [f"# NC metrics of the training images vs test accuracy over {len(rows)} runs", "",
          "Each model apart (never pooled). NC under each run's final prompts; lower = more collapsed.", ""]
    plots = []
    for model in dict.fromkeys(r.get("model") for r in rows):
        mine = [r for r in rows if r.get("model") == model]
        md += [f"## {model}", "", _composition(mine), "",
               "| scope | NC metric (training images) | accuracy | n | Pearson r | p | Spearman ρ | p |",
               "|---|---|---|---|---|---|---|---|"]
        md += [f"| {e['scope']} | {nc_label(e['metric'])} | {e['accuracy'].removeprefix('acc_')} | {e['n']} | "
               f"{_f(e['pearson'], '+.3f')} | {_f(e['pearson_p'], '.3g')} | {_f(e['spearman'], '+.3f')} | "
               f"{_f(e['spearman_p'], '.3g')} |" for e in table if e["model"] == model]
        md.append("")
        entries = [e for e in table if e["model"] == model and e["scope"] == ALL_RUNS]
        nc_cols = list(dict.fromkeys(e["metric"] for e in entries))
        fixed = [m for m in nc_cols if between_datasets_only(mine, m)]
        if fixed:
            md += [f"Constant within each dataset (frozen image features), so only a dataset effect: "
                   f"{', '.join(nc_label(m) for m in fixed)}; left out of the figures.", ""]
        note = ("not plotted, constant within each dataset (frozen image features): "
                + ", ".join(nc_label(m) for m in fixed)) if fixed else ""
        for acc in dict.fromkeys(e["accuracy"] for e in entries):
            path = out / f"correlations_{_slug(model)}_{acc.removeprefix('acc_')}.png"
            stats = {e["metric"]: e for e in entries if e["accuracy"] == acc}
            if correlation_plot(mine, [m for m in nc_cols if m not in fixed], acc, path, stats=stats,
                                title=f"{model}: NC of the training images vs "
                                      f"{ACC_LABELS.get(acc.removeprefix('acc_'), acc)} ({len(mine)} runs)",
                                footnote=note) is not None:
                plots.append(path.name)
    md += ["## Figures", ""] + [f"![{p}]({p})" for p in plots]
    atomic_write_bytes(out / "correlations.md", ("\n".join(md) + "\n").encode())
    atomic_write_bytes(out / "nc_by_method.md", nc_by_method(rows).encode())
    return {"runs": len(rows), "table": table, "plots": plots}


def nc_by_method(rows: list[dict[str, Any]]) -> str:
    """Mean of each NC metric and accuracy per model, method (with/without NPT) and imbalance, with n."""
    keys = list(dict.fromkeys((r.get("model"), r["method"], bool(r.get("npt")), r.get("imbalance")) for r in rows))
    cols = [c for c in [f"{p}_{k}" for p in ("train", "test") for k in NC_KEYS] + list(ACC_COLS)
            if any(c in r for r in rows)]
    lines = ["| model | method | tau | runs | " + " | ".join(c.replace("_", " ", 1) if not c.startswith("acc_")
                                                             else c for c in cols) + " |",
             "|---|---|---|---|" + "---|" * len(cols)]
    for model, m, npt, tau in keys:
        cell = [r for r in rows if r.get("model") == model and r["method"] == m and bool(r.get("npt")) == npt
                and r.get("imbalance") == tau]
        vals = [np.mean([r[c] for r in cell if c in r]) if any(c in r for r in cell) else np.nan for c in cols]
        lines.append(f"| {model} | {display_name(m + ('+npt' if npt else ''))} | {tau} | {len(cell)} | "
                     + " | ".join("" if v != v else f"{v:.2f}" if c.startswith("acc_") else f"{v:.4f}"
                                  for c, v in zip(cols, vals)) + " |")
    return "\n".join(lines) + "\n"


def _f(v: float | None, spec: str) -> str:
    return "" if v is None else format(v, spec)
