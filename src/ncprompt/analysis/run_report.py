"""``ncprompt analyze RUN_DIR``: a JSON + markdown report of one run and its plots.

Plots (:func:`ncprompt.analysis.plots.plot_run`): training.png (loss, accuracy and the NC metrics
that move over the epochs), text_cosine_before_after.png (centred cosine between the classes' text
features before/after tuning, ETF target -1/(K-1) given) and geometry.png (text features against the
image class means), both with the new classes after the base ones under base-to-new.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ncprompt.analysis.names import display_name
from ncprompt.analysis.plots import nc_label, plot_run
from ncprompt.engine.results import RunResult, read_results
from ncprompt.utils import atomic_write_bytes, read_jsonl, write_json

#: what each NC column of the report was computed on
NC_SOURCES = {"train": "training images, tuned prompts", "train_initial_text": "training images, initial prompts"}


def run_model(res: RunResult) -> str:
    """The model that ran (results.json's info), else the one the config named."""
    return ((res.info or {}).get("model") or {}).get("name") or res.model


def analyze_run(run_dir: str | Path) -> dict[str, Any]:
    """Write analysis.json, analysis.md and plots/*.png into ``run_dir``; return the report."""
    d = Path(run_dir)
    res = read_results(d)
    log = read_jsonl(d / "metrics.jsonl")
    model = run_model(res)
    report: dict[str, Any] = {"run": str(d), "method": res.method, "npt": res.npt, "dataset": res.dataset,
                              "model": model, "epochs": res.epochs_run, "shots": res.shots,
                              "accuracy": res.accuracies(), "nc": {}, "plots": []}
    if res.train is not None:
        report["nc"]["train"] = res.train.nc
        initial = res.train.nc_initial_text or {}
        # prompts not tuned (zero-shot): the initial text's NC equals the final one's, no second column
        report["tuned"] = any(res.train.nc.get(k) != v for k, v in initial.items())
        if report["tuned"]:
            report["nc"]["train_initial_text"] = initial
    report["nc"].update({k: s.nc for k, s in res.splits.items()})
    series = [r for r in log if r.get("nc_train")]
    if series:
        keys = [k for k in series[0]["nc_train"] if k != "n_samples"]
        report["nc_over_epochs"] = {k: [r["nc_train"].get(k) for r in series] for k in keys}
    first = res.train or res.splits.get("base") or res.splits.get("all")
    new = res.splits.get("new")
    report["plots"] = plot_run(d, log, first.classnames if first is not None and first.classnames else None,
                               new.classnames if new is not None and new.classnames else None,
                               title=f"{display_name(res.label)} on {res.dataset} ({model})")
    write_json(d / "analysis.json", report)
    atomic_write_bytes(d / "analysis.md", markdown(report).encode())
    return report


def markdown(r: dict[str, Any]) -> str:
    """analysis.md: accuracies, the NC metrics of every split (rows named, lower = more collapsed), plots."""
    lines = [f"# Analysis of {r['run']}", "",
             f"method: {r['method']}{' + NPT' if r['npt'] else ''}, dataset: {r['dataset']}, model: {r['model']}, "
             f"shots: {r['shots']}, epochs run: {r['epochs']}", "", "## Accuracy (top-1 %)", ""]
    lines += [f"- {k}: {v:.2f}" for k, v in r["accuracy"].items()]
    lines += ["", "## Neural-collapse metrics (lower is more collapsed)", ""]
    splits = [s for s in r["nc"] if r["nc"][s]]
    keys = list(dict.fromkeys(k for s in splits for k in r["nc"][s] if k != "n_samples"))
    if splits:
        heads = [NC_SOURCES.get(s, f"{s} test images") for s in splits]
        if not r.get("tuned", True):
            heads = [h.replace("tuned prompts", "prompts not tuned") for h in heads]
        lines.append("| metric | " + " | ".join(heads) + " |")
        lines.append("|---|" + "---|" * len(splits))
        for k in keys:
            vals = [r["nc"][s].get(k) for s in splits]
            lines.append(f"| {nc_label(k)} (`{k}`) | " + " | ".join("" if v is None else f"{v:.4f}" for v in vals)
                         + " |")
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in r["plots"]]
    return "\n".join(lines) + "\n"
