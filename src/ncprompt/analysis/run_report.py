"""``ncprompt analyze RUN_DIR``: a JSON + markdown report of one run and its plots.

Plots: NC metrics over epochs (from metrics.jsonl), the text-feature cosine matrices before and
after tuning (with the ETF target -1/(K-1) marked), and the geometry of text features and image
class means (their cosine matrix, and both sets in the plane of the top-2 principal directions of
the centred image means).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ncprompt.engine.results import read_results
from ncprompt.utils import read_jsonl, write_json


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _cos(x: torch.Tensor) -> np.ndarray:
    x = F.normalize(x.double() - x.double().mean(0, keepdim=True), dim=-1)
    return (x @ x.T).numpy()


def analyze_run(run_dir: str | Path) -> dict[str, Any]:
    """Write analysis.json, analysis.md and plots/*.png into ``run_dir``; return the report."""
    d = Path(run_dir)
    res = read_results(d)
    log = read_jsonl(d / "metrics.jsonl")
    plots = d / "plots"
    plots.mkdir(exist_ok=True)
    plt = _plt()
    report: dict[str, Any] = {"run": str(d), "method": res.method, "npt": res.npt, "dataset": res.dataset,
                              "accuracy": res.accuracies(), "nc": {k: s.nc for k, s in res.splits.items()},
                              "plots": []}
    if res.train is not None:
        report["nc"]["train"] = res.train.nc
        report["nc"]["train_initial_text"] = res.train.nc_initial_text or {}

    # 1. NC metrics over epochs
    series = [r for r in log if r.get("nc_train")]
    if series:
        keys = [k for k in series[0]["nc_train"] if k != "n_samples"]
        cols = min(4, len(keys))
        rows = -(-len(keys) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.5 * rows), squeeze=False)
        for ax in axes.flat[len(keys):]:
            ax.axis("off")
        for ax, k in zip(axes.flat, keys):
            ax.plot([r["epoch"] + 1 for r in series], [r["nc_train"].get(k, np.nan) for r in series], marker=".")
            ax.set_title(k, fontsize=8)
            ax.set_xlabel("epoch", fontsize=7)
            ax.tick_params(labelsize=6)
        fig.tight_layout()
        fig.savefig(plots / "nc_over_epochs.png", dpi=110)
        plt.close(fig)
        report["plots"].append("plots/nc_over_epochs.png")
        report["nc_over_epochs"] = {k: [r["nc_train"].get(k) for r in series] for k in keys}

    # 2. text cosine heatmaps before / after, 3. text vs image geometry
    tf_file = d / "text_features.safetensors"
    if tf_file.is_file():
        tf = load_file(str(tf_file))
        k = tf["final"].shape[0]
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
        for ax, key in zip(axes, ("initial", "final")):
            c = _cos(tf[key])
            off = c[~np.eye(k, dtype=bool)]
            im = ax.imshow(c, vmin=-1, vmax=1, cmap="coolwarm")
            ax.set_title(f"{key} text cos (centred)\nmean off-diag {off.mean():.3f}, ETF {-1 / (k - 1):.3f}",
                         fontsize=8)
        fig.colorbar(im, ax=axes, shrink=0.8)
        fig.savefig(plots / "text_cosine_before_after.png", dpi=110)
        plt.close(fig)
        report["plots"].append("plots/text_cosine_before_after.png")
        means_file = d / "image_means.safetensors"
        if means_file.is_file():
            mu = load_file(str(means_file))["train_means"].double()
            _geometry_plot(plt, tf["final"].double(), mu, plots / "geometry.png")
            report["plots"].append("plots/geometry.png")
    write_json(d / "analysis.json", report)
    (d / "analysis.md").write_text(_markdown(report))
    return report


def _geometry_plot(plt: Any, text: torch.Tensor, means: torch.Tensor, path: Path) -> None:
    t = F.normalize(text, dim=-1)
    t = F.normalize(t - t.mean(0), dim=-1)
    m = F.normalize(means - means.mean(0), dim=-1)
    cross = (t @ m.T).numpy()
    _, _, v = torch.linalg.svd(m, full_matrices=False)
    basis = v[:2].T
    pt, pm = (t @ basis).numpy(), (m @ basis).numpy()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
    im = axes[0].imshow(cross, vmin=-1, vmax=1, cmap="coolwarm")
    axes[0].set_title("cos(text_k, image mean_j), centred", fontsize=8)
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    axes[1].scatter(pm[:, 0], pm[:, 1], marker="o", label="image means")
    axes[1].scatter(pt[:, 0], pt[:, 1], marker="x", label="text features")
    for i in range(len(pm)):
        axes[1].plot([pm[i, 0], pt[i, 0]], [pm[i, 1], pt[i, 1]], lw=0.5, color="grey")
    axes[1].legend(fontsize=7)
    axes[1].set_title("top-2 principal plane of the image means", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(r: dict[str, Any]) -> str:
    lines = [f"# Analysis of {r['run']}", "", f"method: {r['method']}{' + NPT' if r['npt'] else ''}, "
             f"dataset: {r['dataset']}", "", "## Accuracy", ""]
    lines += [f"- {k}: {v:.2f}" for k, v in r["accuracy"].items()]
    lines += ["", "## Neural-collapse metrics", ""]
    splits = [s for s in r["nc"] if r["nc"][s]]
    keys = sorted({k for s in splits for k in r["nc"][s] if k != "n_samples"})
    if splits:
        lines.append("| metric | " + " | ".join(splits) + " |")
        lines.append("|---|" + "---|" * len(splits))
        for k in keys:
            vals = [r["nc"][s].get(k) for s in splits]
            lines.append(f"| {k} | " + " | ".join("" if v is None else f"{v:.4f}" for v in vals) + " |")
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in r["plots"]]
    return "\n".join(lines) + "\n"
