"""Figures for a paper: one question per figure, labelled axes, class names where K is small,
zoomed axes with the values printed, and the colour-blind-safe Okabe-Ito palette.

Every function takes plain arrays / dicts (no file reading) and writes one PNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ncprompt.engine.progress import epoch_number

#: Okabe & Ito (2008), safe for the common colour-vision deficiencies
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
#: for markers and thin lines on white: without the yellow, which is hard to see there
MARKER_COLOURS = OKABE_ITO[:7]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
#: class names on the axes up to this many classes
MAX_NAMED_CLASSES = 24

NC_LABELS = {
    "nc1": "NC1: within-class variability",
    "nc2_equinorm_img": "NC2: image-mean norm spread",
    "nc2_equiangle_std_img": "NC2: image-mean angle spread",
    "nc2_equiangle_etf_img": "NC2: image means vs ETF angles",
    "nc2_equinorm_text": "NC2: text-feature norm spread",
    "nc2_equiangle_std_text": "NC2: text-feature angle spread",
    "nc2_equiangle_etf_text": "NC2: text features vs ETF angles",
    "nc3_self_duality": "NC3: text-image self-duality gap",
    "nc4": "NC4: mismatch with nearest class mean",
}
TITLES = {"base": "Base classes", "new": "New classes", "hm": "Harmonic mean of base and new", "all": "All classes"}
ACC_LABELS = {"base": "base accuracy", "new": "new accuracy", "hm": "harmonic mean (HM)", "all": "accuracy",
              "acc_base": "base accuracy (%)", "acc_new": "new accuracy (%)", "acc_hm": "HM (%)",
              "acc_all": "accuracy (%)"}


def nc_label(key: str) -> str:
    return NC_LABELS.get(key.removeprefix("train_"), key)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"axes.prop_cycle": plt.cycler(color=OKABE_ITO), "axes.spines.top": False,
                         "axes.spines.right": False, "font.size": 9})
    return plt


def _save(fig: Any, path: str | Path) -> Path:
    from ncprompt.utils import atomic_write

    p = Path(path)
    atomic_write(p, lambda q: fig.savefig(q, dpi=130, bbox_inches="tight", format="png"))
    import matplotlib.pyplot as plt

    plt.close(fig)
    return p


def zoomed_limits(values: Sequence[float], errors: Sequence[float] | None = None, pad: float = 0.15,
                  floor: float = 0.0, ceil: float = 100.0) -> tuple[float, float]:
    """y-limits around the data (± error bars) with ``pad`` of the range as margin, within [floor, ceil]."""
    v = np.asarray([x for x in values if x == x], dtype=float)
    if not len(v):
        return floor, ceil
    e = np.asarray([x if x == x else 0.0 for x in (errors or [0.0] * len(values))], dtype=float)[: len(v)]
    lo, hi = float((v - e).min()), float((v + e).max())
    span = max(hi - lo, 2.0)
    return max(floor, lo - pad * span - 1.0), min(ceil, hi + pad * span + 1.5)


# --- grid summary -----------------------------------------------------------------------------
def summary_plot(summary: list[dict[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Grouped bars per dataset, one panel per metric (base / new / HM, or accuracy), y zoomed to the
    data with each bar's value printed and ± std error bars."""
    plt = _plt()
    metrics = [k for k in ("base", "new", "hm") if any(k in s for s in summary)] or ["all"]
    datasets = list(dict.fromkeys(s["dataset"] for s in summary))
    methods = list(dict.fromkeys(s["method"] for s in summary))
    width = 0.8 / max(len(methods), 1)
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(3.6, 1.1 * len(datasets) * (0.6 + 0.3 * len(methods)))
                                                       * len(metrics), 3.8), squeeze=False)
    for ax, k in zip(axes[0], metrics):
        allv, alle = [], []
        for j, m in enumerate(methods):
            cell = {s["dataset"]: s for s in summary if s["method"] == m}
            vals = [cell.get(d, {}).get(k, np.nan) for d in datasets]
            errs = [cell.get(d, {}).get(f"{k}_std", 0.0) or 0.0 for d in datasets]
            x = np.arange(len(datasets)) + (j - (len(methods) - 1) / 2) * width
            ax.bar(x, vals, width * 0.92, yerr=[e if e else np.nan for e in errs], capsize=2, label=m,
                   color=OKABE_ITO[j % len(OKABE_ITO)], error_kw={"elinewidth": 0.8})
            for xi, v, e in zip(x, vals, errs):
                if v == v:
                    ax.text(xi, v + e, f"{v:.1f}", ha="center", va="bottom", fontsize=6.5,
                            rotation=90 if len(methods) > 3 else 0)
            allv += vals
            alle += errs
        lo, hi = zoomed_limits(allv, alle)
        ax.set_ylim(lo, hi + 0.08 * (hi - lo))
        ax.set_xticks(np.arange(len(datasets)))
        ax.set_xticklabels([str(d).replace("pocket_", "") for d in datasets], rotation=30, ha="right")
        ax.set_ylabel(f"{ACC_LABELS.get(k, k)} (%)")
        ax.set_title(TITLES.get(k, k) + " (higher is better)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(methods), 6), frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    seeds = sorted({int(x["seeds"]) for x in summary if x.get("seeds")})
    if seeds:
        fig.text(0.01, -0.02, f"bars: mean over n = {', '.join(map(str, seeds))} seed(s); error bars: sample std "
                 "over seeds; 'average': mean over the datasets", fontsize=7, ha="left", va="top")
    if title:
        fig.suptitle(title, y=1.1, va="bottom")
    return _save(fig, path)


# --- training curves and NC over epochs ---------------------------------------------------------
def _moving(series: list[float]) -> bool:
    v = np.asarray([x for x in series if x is not None and x == x], dtype=float)
    return len(v) > 1 and float(np.ptp(v)) > 1e-6 * max(1.0, float(np.abs(v).max()))


def moving_metrics(log: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The per-epoch NC metrics (``nc_train``) that change during training, and those that stay flat."""
    series = [r for r in log if r.get("nc_train")]
    keys = [k for k in (series[0]["nc_train"] if series else {}) if k != "n_samples"]
    moving = [k for k in keys if _moving([r["nc_train"].get(k) for r in series])]
    return moving, [k for k in keys if k not in moving]


def training_curves_plot(log: list[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Left: training loss per epoch (and learning rate); right: accuracies per epoch (train and any
    evaluated split). Then one panel per NC metric that changes over training — metrics of a
    frozen image encoder stay flat and are listed in a footnote instead of plotted. NC panels say
    "lower is better" (all NC metrics are distances to the collapsed geometry)."""
    if not log:
        return None
    plt = _plt()
    ep = [epoch_number(r) for r in log]
    series = [r for r in log if r.get("nc_train")]
    moving, flat = moving_metrics(log)
    n_panels = 2 + len(moving)
    cols = 3 if n_panels in (5, 6) else min(4, n_panels)
    rows = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.axis("off")
    ax = axes.flat[0]
    lines = ax.plot(ep, [r["loss"] for r in log], color=OKABE_ITO[0], label="training loss (left axis)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (lower is better)")
    ax.set_title("(a) training loss", fontsize=9)
    if "lr" in log[0]:
        ax2 = ax.twinx()
        lines += ax2.plot(ep, [r["lr"] for r in log], color="black", lw=0.8, ls=":",
                          label="learning rate (right axis)")
        ax2.set_ylabel("learning rate", fontsize=7)
        ax2.tick_params(labelsize=6)
        ax2.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax2.spines["right"].set_visible(True)
    # below the panel: a legend inside would cover one of the two curves (they live on two y-axes)
    ax.legend(handles=lines, fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    ax = axes.flat[1]
    acc_keys = ["train_acc"] + sorted({k for r in log for k in r if k.endswith("_acc") and k != "train_acc"})
    for i, k in enumerate(acc_keys):
        pts = [(epoch_number(r), r[k]) for r in log if r.get(k) is not None]
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, marker="." if len(pts) < 30 else None, color=MARKER_COLOURS[(i + 1) % 7],
                    label=k.removesuffix("_acc") + (" (training views)" if k == "train_acc" else " (test)"))
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("(b) accuracy (higher is better)", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    for i, (ax, k) in enumerate(zip(list(axes.flat)[2:], moving)):
        ax.plot([epoch_number(r) for r in series], [r["nc_train"].get(k, np.nan) for r in series],
                color=MARKER_COLOURS[(i + 3) % 7], marker="." if len(series) < 30 else None)
        ax.set_title(f"({chr(ord('c') + i)}) {nc_label(k)}", fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{nc_label(k).split(':')[0]} (lower is better)", fontsize=7)
    from matplotlib.ticker import MaxNLocator

    for ax in axes.flat[:n_panels]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    if title:
        fig.suptitle(title, fontsize=10)
    if flat:
        fig.text(0.01, -0.02, "constant during training (e.g. image metrics of a frozen image encoder), not plotted: "
                 + ", ".join(nc_label(k) for k in flat), fontsize=7, ha="left", va="top")
    fig.tight_layout()
    return _save(fig, path)


# --- class geometry ---------------------------------------------------------------------------
def _class_ticks(ax: Any, names: Sequence[str] | None, k: int, split_at: int | None = None,
                 xlabel: str = "class", ylabel: str = "class") -> None:
    """Class names (or indices) on both axes; with ``split_at``, a black line between base and new classes
    and the axes labelled "base | new"."""
    if names is not None and k <= MAX_NAMED_CLASSES:
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=6.5)
        ax.set_yticklabels(names, fontsize=6.5)
    else:
        xlabel, ylabel = f"{xlabel} index", f"{ylabel} index"
    if split_at is not None and 0 < split_at < k:
        for f in (ax.axhline, ax.axvline):
            f(split_at - 0.5, color="black", lw=1.0)
        xlabel, ylabel = f"{xlabel}: base | new", f"{ylabel}: base | new"
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)


def centred_cosine(x: np.ndarray) -> np.ndarray:
    """cos(x_i - x̄, x_j - x̄): the class geometry an ETF makes equal to -1/(K-1) off the diagonal."""
    x = np.asarray(x, dtype=float)
    x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    c = x - x.mean(0, keepdims=True)
    c = c / np.linalg.norm(c, axis=1, keepdims=True).clip(1e-12)
    return c @ c.T


def cosine_heatmaps_plot(before: np.ndarray, after: np.ndarray, path: str | Path, classnames: Sequence[str] | None
                         = None, n_base: int | None = None, title: str = "") -> Path:
    """Centred cosine between the text features of every pair of classes, before and after tuning
    (base classes first, then new ones after the black line when ``n_base`` is given). Untuned prompts
    (``before`` == ``after``, e.g. zero-shot) get one panel."""
    plt = _plt()
    k = before.shape[0]
    side = 3.2 + 0.13 * min(k, MAX_NAMED_CLASSES)
    panels = [("before tuning (hand-written prompt)", before), ("after tuning", after)]
    if np.allclose(before, after, rtol=0, atol=1e-7):
        panels = [("of the hand-written prompt (not tuned)", after)]
    fig, axes = plt.subplots(1, len(panels), figsize=(len(panels) * side + 1.6, side), squeeze=False)
    axes = list(axes[0])
    im = None
    for ax, (name, x) in zip(axes, panels):
        c = centred_cosine(x)
        off = c[~np.eye(k, dtype=bool)]
        im = ax.imshow(c, vmin=-1, vmax=1, cmap="PuOr_r")
        _class_ticks(ax, classnames, k, n_base)
        # the mean of centred cosines stays near -1/(K-1) for any equal-norm set: the spread is what an ETF zeroes
        ax.set_title(f"text features {name}\noff-diagonal cosine {off.mean():+.3f} ± {off.std():.3f} (std), "
                     f"max {off.max():+.2f}\nsimplex ETF: {-1 / (k - 1):+.3f} ± 0", fontsize=8)
    for ax in axes[1:]:
        ax.set_ylabel("")
    cb = fig.colorbar(im, ax=axes, shrink=0.8)
    cb.set_label("cosine of centred class text features")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def geometry_plot(text: np.ndarray, means: np.ndarray, path: str | Path, classnames: Sequence[str] | None = None,
                  n_base: int | None = None, title: str = "") -> Path:
    """Left: cos(text_k, image mean_j) of the centred features (a diagonal = text and image class
    structure aligned, NC3). Right: both sets projected on the top-2 principal directions of the
    centred image means, each class's text feature joined to its image mean; new classes (index
    >= ``n_base``) drawn hollow."""
    plt = _plt()
    k = text.shape[0]
    t = np.asarray(text, float)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    t = t - t.mean(0)
    t = t / np.linalg.norm(t, axis=1, keepdims=True).clip(1e-12)
    m = np.asarray(means, float)
    m = m - m.mean(0)
    m = m / np.linalg.norm(m, axis=1, keepdims=True).clip(1e-12)
    cross = t @ m.T
    _, s, vt = np.linalg.svd(m, full_matrices=False)
    basis = vt[:2].T
    var = (s[:2] ** 2 / max((s**2).sum(), 1e-12) * 100).round(0)
    pt, pm = t @ basis, m @ basis
    side = 3.4 + 0.13 * min(k, MAX_NAMED_CLASSES)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.5, side))
    im = axes[0].imshow(cross, vmin=-1, vmax=1, cmap="PuOr_r")
    _class_ticks(axes[0], classnames, k, n_base, xlabel="image class mean", ylabel="text feature of class")
    axes[0].set_title("cos(text feature, image class mean), centred\n(diagonal high = aligned)", fontsize=8)
    fig.colorbar(im, ax=axes[0], shrink=0.8).set_label("cosine")
    ax = axes[1]
    nb = k if n_base is None else n_base
    many = k > MAX_NAMED_CLASSES  # too many classes to tell apart by colour: colour base vs new instead
    size = 14 if many else 36
    for i in range(k):
        hollow = i >= nb
        col = OKABE_ITO[int(hollow)] if many else MARKER_COLOURS[i % len(MARKER_COLOURS)]
        ax.plot([pm[i, 0], pt[i, 0]], [pm[i, 1], pt[i, 1]], lw=0.4 if many else 0.6, color="grey", zorder=1)
        ax.scatter(pm[i, 0], pm[i, 1], marker="o", s=size, facecolor="none" if hollow else col, edgecolor=col,
                   zorder=2)
        ax.scatter(pt[i, 0], pt[i, 1], marker="X", s=size + 4, color=col, zorder=3, alpha=0.5 if hollow else 1.0)
        if classnames is not None and not many:
            ax.annotate(classnames[i], (pm[i, 0], pm[i, 1]), fontsize=6.5, xytext=(3, 3), textcoords="offset points")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color="grey", label="image class mean"),
               Line2D([], [], marker="X", ls="", color="grey", label="text feature"),
               Line2D([], [], ls="-", lw=0.6, color="grey", label="same class")]
    if nb < k:
        handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="none", color=OKABE_ITO[1] if many
                              else "grey", label=f"new class ({k - nb})"))
        if many:
            handles.insert(0, Line2D([], [], marker="o", ls="", color=OKABE_ITO[0], label=f"base class ({nb})"))
    ax.legend(handles=handles, fontsize=7, frameon=False, loc="best")
    ax.set_xlabel(f"principal direction 1 of image means ({var[0]:.0f}% var.)")
    ax.set_ylabel(f"principal direction 2 ({var[1]:.0f}% var.)" if len(var) > 1 else "")
    ax.set_title("class geometry in the image-mean plane", fontsize=8)
    ax.set_aspect("equal", adjustable="datalim")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# --- correlations -----------------------------------------------------------------------------
def correlation_plot(rows: list[dict[str, Any]], metrics: list[str], accuracy: str, path: str | Path,
                     stats: dict[str, dict[str, Any]] | None = None, title: str = "",
                     footnote: str = "") -> Path | None:
    """One accuracy against each NC metric, a labelled panel (a), (b), ... per metric, points coloured
    by dataset and shaped by method, with Pearson r / Spearman rho and n in each panel. ``rows`` must
    come from ONE model (the caller splits by model); ``footnote`` goes under the panels."""
    models = {r.get("model") for r in rows}
    if len(models) > 1:
        raise ValueError(f"correlation_plot got runs of several models {sorted(map(str, models))}: plot each apart")
    metrics = [m for m in metrics if any(m in r and accuracy in r for r in rows)]
    if not metrics:
        return None
    plt = _plt()
    cols = 2 if len(metrics) in (2, 4) else min(3, len(metrics))
    nrows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.4 * cols, 3.0 * nrows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    datasets = list(dict.fromkeys(r.get("dataset") for r in rows))
    methods = list(dict.fromkeys(f"{r.get('method')}{'+npt' if r.get('npt') else ''}" for r in rows))
    for i, (ax, m) in enumerate(zip(axes.flat, metrics)):
        for r in rows:
            if m in r and accuracy in r and r[m] is not None:
                meth = f"{r.get('method')}{'+npt' if r.get('npt') else ''}"
                ax.scatter(r[m], r[accuracy], s=18, color=MARKER_COLOURS[datasets.index(r.get("dataset")) % 7],
                           marker=MARKERS[methods.index(meth) % len(MARKERS)], alpha=0.85, linewidths=0.3,
                           edgecolors="white")
        st = (stats or {}).get(m) or {}
        txt = f"n = {st.get('n', sum(m in r and accuracy in r for r in rows))}"
        if st.get("pearson") is not None:
            txt = f"Pearson r = {st['pearson']:+.2f}, Spearman ρ = {st['spearman']:+.2f}, " + txt
        ax.set_title(f"({chr(ord('a') + i)}) {nc_label(m)}\n{txt}", fontsize=8)
        ax.set_xlabel(f"{nc_label(m).split(': ')[0]} (lower = more collapsed)", fontsize=7)
        ax.set_ylabel(ACC_LABELS.get(accuracy, accuracy), fontsize=7)
        ax.tick_params(labelsize=6.5)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=MARKER_COLOURS[i % 7], label=str(d))
               for i, d in enumerate(datasets)]
    handles += [Line2D([], [], marker=MARKERS[i % len(MARKERS)], ls="", color="grey", label=m)
                for i, m in enumerate(methods)]
    fig.tight_layout()
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(title or f"NC metrics vs {ACC_LABELS.get(accuracy, accuracy)}", fontsize=10,
                 y=1.0 + 0.035 * (1 + math.ceil(len(handles) / 6)) / nrows, va="bottom")
    if footnote:
        fig.text(0.01, -0.01, footnote, fontsize=7, ha="left", va="top", wrap=True)
    return _save(fig, path)


# --- one run folder ---------------------------------------------------------------------------
def plot_run(run_dir: str | Path, log: list[dict[str, Any]], classnames: Sequence[str] | None,
             new_classnames: Sequence[str] | None = None, title: str = "") -> list[str]:
    """The plots of one run folder into ``run_dir/plots``; returns their paths relative to run_dir.

    training.png (loss, accuracy, the NC metrics that move), text_cosine_before_after.png and
    geometry.png from text_features.safetensors (``initial``/``final``; ``initial_new``/``final_new``
    add the new classes) and image_means.safetensors (``train_means``; ``test_means_new`` adds the
    new classes' test-image means)."""
    from safetensors.torch import load_file

    d = Path(run_dir)
    out: list[str] = []
    if training_curves_plot(log, d / "plots" / "training.png", title) is not None:
        out.append("plots/training.png")
    tf_file, im_file = d / "text_features.safetensors", d / "image_means.safetensors"
    if not tf_file.is_file():
        return out
    tf = {k: v.double().numpy() for k, v in load_file(str(tf_file)).items()}
    names = list(classnames) if classnames is not None else None
    before, after, n_base = tf["initial"], tf["final"], None
    if "final_new" in tf and "initial_new" in tf:
        n_base = before.shape[0]
        before, after = np.concatenate([before, tf["initial_new"]]), np.concatenate([after, tf["final_new"]])
        names = names + list(new_classnames) if names is not None and new_classnames is not None else None
    if before.shape[0] >= 2:
        cosine_heatmaps_plot(before, after, d / "plots" / "text_cosine_before_after.png", names, n_base, title)
        out.append("plots/text_cosine_before_after.png")
    if im_file.is_file():
        im = {k: v.double().numpy() for k, v in load_file(str(im_file)).items()}
        means = im.get("train_means")
        if means is not None and n_base is not None and "test_means_new" in im:
            means = np.concatenate([means, im["test_means_new"]])
        if means is not None and means.shape[0] == after.shape[0] and after.shape[0] >= 3:
            geometry_plot(after, means, d / "plots" / "geometry.png", names, n_base, title)
            out.append("plots/geometry.png")
        elif means is not None and means.shape[0] == tf["final"].shape[0] >= 3:
            geometry_plot(tf["final"], means, d / "plots" / "geometry.png", classnames, None, title)
            out.append("plots/geometry.png")
    return out
