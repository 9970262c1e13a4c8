"""``ncprompt report DIR...``: the paper's analysis across runs.

Runs are correlated within one *family* only: the same model and weights, dataset (the same data:
:mod:`ncprompt.config.setting`), protocol and shots; ``pool=True`` (``--pool``) pools a model's runs over
datasets, protocols and shots (models are never pooled). For each family, each NC metric m of the training
images (under each run's final prompts) and each accuracy a in {base, new, HM} (or top-1 for all-class
runs): the Pearson r and Spearman rho between m and a over the runs, with n, as tables (CSV, JSON and
markdown) and one figure per family and accuracy. Below n = 5 runs there is no r, no p and no figure (the
entry says why): a correlation of 2-4 points says nothing. A seed found in two runs of one setting is
counted once, with a warning. Zero-shot runs (hand-written prompts, nothing trained) are counted in "all
runs" and said so; when trained runs are there too, a second scope "trained runs" leaves them out. A run
without training images (zero-shot, 0 shots) has only test-split NC: it is listed (``test_*`` columns) but
never correlated as training NC.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ncprompt.analysis.names import display_name
from ncprompt.analysis.plots import ACC_LABELS, correlation_plot, nc_label
from ncprompt.analysis.run_report import run_model
from ncprompt.analysis.runs import drop_repeated_seeds, results_files, row_setting, run_setting, setting_labels
from ncprompt.config.setting import setting_id, setting_key, split_data
from ncprompt.engine.results import read_results
from ncprompt.utils import atomic_write, atomic_write_bytes

NC_KEYS = ("nc1", "nc2_equinorm_img", "nc2_equiangle_etf_img", "nc2_equinorm_text", "nc2_equiangle_etf_text",
           "nc3_self_duality", "nc4")
ACC_COLS = ("acc_base", "acc_new", "acc_hm", "acc_all")
ALL_RUNS, TRAINED = "all runs", "trained runs"
#: fewest runs a correlation is computed (and drawn) from
MIN_N = 5


def collect_runs(dirs: list[str | Path]) -> list[dict[str, Any]]:
    """Every results.json under the given folders, flattened to one row per run: ``train_{nc}`` from the
    training images when the run evaluated them, else ``test_{nc}`` of its base/all test split; ``setting``
    (the run's setting items, from its config.yaml and inputs.json beside)."""
    rows = []
    for f in results_files(dirs):
        r = read_results(f)
        row: dict[str, Any] = {"run": str(f.parent), "model": run_model(r), "method": r.method, "npt": r.npt,
                               "dataset": r.dataset, "protocol": r.protocol, "seed": r.seed, "shots": r.shots,
                               "imbalance": r.imbalance, "trained": bool(r.epochs_run) or r.method != "zeroshot",
                               "setting": run_setting(f, r.to_dict())}
        row.update({f"acc_{k}": v for k, v in r.accuracies().items()})
        first = r.splits.get("base") or r.splits.get("all")
        if r.train is not None and r.train.nc:
            nc, prefix = r.train.nc, "train_"
        else:
            nc, prefix = (first.nc if first is not None else {}) or {}, "test_"
        row.update({f"{prefix}{k}": nc[k] for k in NC_KEYS if k in nc})
        rows.append(row)
    return rows


def family(row: dict[str, Any], pool: bool = False) -> tuple[str, str]:
    """(key, label) of the runs ``row`` is correlated with: its model and weights, data, protocol and shots
    (the shots it ran with, so zero-shot runs join the trained runs beside them); ``pool``: its model only."""
    s = row_setting(row)
    if pool:
        key = {"model": row.get("model"), "weights": s.get("inputs.weights")}
        return setting_key(key), f"{row.get('model')} (pooled)"
    data = split_data(s)[1] if "setting" in row else {"dataset": row.get("dataset")}
    key = {"model": row.get("model"), "weights": s.get("inputs.weights"), **data,
           "protocol": row.get("protocol"), "shots": row.get("shots")}
    parts = [row.get("model"), row.get("dataset"), row.get("protocol"),
             None if row.get("shots") is None else f"{row['shots']} shots"]
    return setting_key(key), " · ".join(str(p) for p in parts if p is not None)


def families(rows: list[dict[str, Any]], pool: bool = False) -> dict[str, list[dict[str, Any]]]:
    """{label: runs} per family, labels made unique (a setting digest appended where two would read alike)."""
    keyed: dict[str, list[dict[str, Any]]] = {}
    label: dict[str, str] = {}
    for r in rows:
        k, lab = family(r, pool)
        keyed.setdefault(k, []).append(r)
        label[k] = lab
    count = {lab: list(label.values()).count(lab) for lab in label.values()}
    return {(lab if count[lab] == 1 else f"{lab} [{setting_id(json.loads(k))[:8]}]"): keyed[k]
            for k, lab in label.items()}


def _correlate(rows: list[dict[str, Any]], metric: str, acc: str) -> dict[str, Any]:
    from scipy.stats import pearsonr, spearmanr

    pairs = [(r[metric], r[acc]) for r in rows if r.get(metric) is not None and r.get(acc) is not None]
    entry: dict[str, Any] = {"metric": metric, "accuracy": acc, "n": len(pairs), "pearson": None, "pearson_p": None,
                             "spearman": None, "spearman_p": None, "note": ""}
    if len(pairs) < MIN_N:
        entry["note"] = f"n = {len(pairs)} < {MIN_N}: too few runs for r and p"
        return entry
    x, y = np.array(pairs, dtype=float).T
    if np.ptp(x) > 0 and np.ptp(y) > 0:
        pr, sr = pearsonr(x, y), spearmanr(x, y)
        entry.update(pearson=float(pr[0]), pearson_p=float(pr[1]), spearman=float(sr[0]),
                     spearman_p=float(sr[1]))
    else:
        entry["note"] = "constant over the runs: no correlation"
    return entry


def scopes(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """{"all runs": rows} plus {"trained runs": ...} when zero-shot and trained runs are mixed."""
    trained = [r for r in rows if r.get("trained")]
    return {ALL_RUNS: rows, **({TRAINED: trained} if 0 < len(trained) < len(rows) else {})}


def correlation_table(rows: list[dict[str, Any]], pool: bool = False) -> list[dict[str, Any]]:
    """Pearson and Spearman correlation of each training NC metric with each accuracy column, computed
    for each family (and scope) apart (:func:`family`; a seed repeated within a setting counted once);
    every entry names its model, family, scope and n, and says why it has no r below n = 5."""
    rows, _ = drop_repeated_seeds(rows)
    out = []
    for fam, mine in families(rows, pool).items():
        acc_cols = [c for c in ACC_COLS if any(c in r for r in mine)]
        nc_cols = [f"train_{k}" for k in NC_KEYS if any(f"train_{k}" in r for r in mine)]
        for scope, part in scopes(mine).items():
            out += [{"model": mine[0].get("model"), "family": fam, "scope": scope, **_correlate(part, m, a)}
                    for m in nc_cols for a in acc_cols]
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


def write_report(rows: list[dict[str, Any]], out_dir: str | Path, pool: bool = False) -> dict[str, Any]:
    """runs.csv, correlations.{csv,json,md}, nc_by_method.md and correlations_{family}_{accuracy}.png (one
    figure per family and accuracy with n >= 5 runs) in ``out_dir``; ``pool``: one family per model.

    A seed repeated within a setting is counted once; the returned ``repeated_seeds`` name them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, repeated = drop_repeated_seeds(rows)
    table = correlation_table(rows, pool)
    flat = [{**{k: v for k, v in r.items() if k != "setting"}, "setting_id": setting_id(row_setting(r))} for r in rows]
    _write_csv(out / "runs.csv", flat, sorted({k for r in flat for k in r}, key=lambda c: (c != "run", c)))
    _write_csv(out / "correlations.csv", table, list(table[0]) if table else ["model", "family", "metric"])
    scope_text = ("Each model's runs pooled over datasets, protocols and shots (--pool)." if pool else
                  "Each family apart: one model and weights, dataset, protocol and shots (--pool pools a model's "
                  "runs).")
    md = [f"# NC metrics of the training images vs test accuracy over {len(rows)} runs", "",
          f"{scope_text} Models are never pooled. NC under each run's final prompts; lower = more collapsed. "
          f"No r, p or figure below n = {MIN_N} runs.", ""]
    md += [f"**{w[0].upper() + w[1:]}**" for w in repeated] + ([""] if repeated else [])
    plots = []
    for fam, mine in families(rows, pool).items():
        md += [f"## {fam}", "", _composition(mine), "",
               "| scope | NC metric (training images) | accuracy | n | Pearson r | p | Spearman ρ | p | note |",
               "|---|---|---|---|---|---|---|---|---|"]
        md += [f"| {e['scope']} | {nc_label(e['metric'])} | {e['accuracy'].removeprefix('acc_')} | {e['n']} | "
               f"{_f(e['pearson'], '+.3f')} | {_f(e['pearson_p'], '.3g')} | {_f(e['spearman'], '+.3f')} | "
               f"{_f(e['spearman_p'], '.3g')} | {e['note']} |" for e in table if e["family"] == fam]
        md.append("")
        entries = [e for e in table if e["family"] == fam and e["scope"] == ALL_RUNS]
        nc_cols = list(dict.fromkeys(e["metric"] for e in entries))
        fixed = [m for m in nc_cols if pool and between_datasets_only(mine, m)]
        if fixed:
            md += [f"Constant within each dataset (frozen image features), so only a dataset effect: "
                   f"{', '.join(nc_label(m) for m in fixed)}; left out of the figures.", ""]
        note = ("not plotted, constant within each dataset (frozen image features): "
                + ", ".join(nc_label(m) for m in fixed)) if fixed else ""
        for acc in dict.fromkeys(e["accuracy"] for e in entries):
            stats = {e["metric"]: e for e in entries if e["accuracy"] == acc}
            drawn = [m for m in nc_cols if m not in fixed and stats[m]["pearson"] is not None]  # n >= MIN_N
            if not drawn:
                continue
            path = out / f"correlations_{_slug(fam)}_{acc.removeprefix('acc_')}.png"
            if correlation_plot(mine, drawn, acc, path, stats=stats,
                                title=f"{fam}: NC of the training images vs "
                                      f"{ACC_LABELS.get(acc.removeprefix('acc_'), acc)} ({len(mine)} runs)",
                                footnote=note) is not None:
                plots.append(path.name)
    md += ["## Figures", ""] + ([f"![{p}]({p})" for p in plots] or [f"None: no family has {MIN_N} runs."])
    atomic_write_bytes(out / "correlations.md", ("\n".join(md) + "\n").encode())
    report = {"runs": len(rows), "pooled": pool, "min_n": MIN_N, "repeated_seeds": repeated, "table": table,
              "plots": plots}
    atomic_write_bytes(out / "correlations.json", (json.dumps(report, indent=1) + "\n").encode())
    atomic_write_bytes(out / "nc_by_method.md", nc_by_method(rows).encode())
    return report


def nc_by_method(rows: list[dict[str, Any]]) -> str:
    """Mean of each NC metric and accuracy over the seeds of each setting (model, dataset, method with or
    without NPT, imbalance, and what else tells settings of one method apart), with the number of runs."""
    rows, _ = drop_repeated_seeds(rows)
    keyed: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        keyed.setdefault(setting_key(row_setting(r)), []).append(r)
    labels = setting_labels([(k, (c[0].get("model"), c[0].get("dataset"), c[0]["method"], bool(c[0].get("npt"))),
                              row_setting(c[0])) for k, c in keyed.items()],
                            ("run.model", "dataset", "method.name", "npt.enabled", "data.imbalance"))
    cols = [c for c in [f"{p}_{k}" for p in ("train", "test") for k in NC_KEYS] + list(ACC_COLS)
            if any(c in r for r in rows)]
    lines = ["| model | dataset | method | tau | setting | runs | "
             + " | ".join(c.replace("_", " ", 1) if not c.startswith("acc_") else c for c in cols) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(cols)]
    for k, cell in keyed.items():
        r0 = cell[0]
        vals = [np.mean([r[c] for r in cell if c in r]) if any(c in r for r in cell) else np.nan for c in cols]
        name = display_name(r0["method"] + ("+npt" if r0.get("npt") else ""))
        lines.append(f"| {r0.get('model')} | {r0.get('dataset')} | {name} | "
                     f"{r0.get('imbalance')} | {labels[k]} | {len(cell)} | "
                     + " | ".join("" if v != v else f"{v:.2f}" if c.startswith("acc_") else f"{v:.4f}"
                                  for c, v in zip(cols, vals)) + " |")
    return "\n".join(lines) + "\n"


def _f(v: float | None, spec: str) -> str:
    return "" if v is None else format(v, spec)
