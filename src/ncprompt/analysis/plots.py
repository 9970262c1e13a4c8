"""Figures for a paper: one question per figure, labelled axes, class names where K is small,
bars from zero with the values printed, methods under their paper names (:mod:`ncprompt.analysis.names`),
the colour-blind-safe Okabe-Ito palette for methods and tab10 / tab20 for up to 20 classes. Layouts are
constrained, so titles, tick labels and legends never overlap (tests/test_figures.py checks every figure's
text boxes).

Every function takes plain arrays / dicts (no file reading) and writes one PNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ncprompt.analysis.names import display_name, is_zero_shot, method_order
from ncprompt.engine.progress import epoch_number

#: Okabe & Ito (2008), safe for the common colour-vision deficiencies
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
#: for markers and thin lines on white: without the yellow, which is hard to see there
MARKER_COLOURS = OKABE_ITO[:7]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
#: class names on the axes up to this many classes
MAX_NAMED_CLASSES = 24
#: one distinct colour per class up to this many classes (tab10 / tab20); beyond, base vs new
MAX_COLOURED_CLASSES = 20
#: correlation panels need at least this many runs
MIN_CORRELATION_POINTS = 5
#: gid of texts that label data points (class names in the geometry scatter): placed by the data
DATA_LABEL = "data-label"

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


def class_colours(k: int) -> list[Any]:
    """``k`` distinct qualitative colours (k <= ``MAX_COLOURED_CLASSES``): tab10 up to 10, tab20 up to 20."""
    from matplotlib import colormaps

    if k > MAX_COLOURED_CLASSES:
        raise ValueError(f"{k} classes: at most {MAX_COLOURED_CLASSES} distinct class colours")
    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return [cmap(i) for i in range(k)]


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


def _footnote(fig: Any, text: str) -> None:
    """A note under the panels, in the constrained layout (space is made for it), wrapped to the figure's width."""
    fig.supxlabel(text, x=0.01, ha="left", fontsize=7, wrap=True)


def _legend_above(fig: Any, handles: list[Any], labels: list[str] | None = None, x: float = 0.5,
                  loc: str = "lower center", title: str | None = None, **kw: Any) -> Any:
    """A figure legend just above the figure (outside its constrained layout, so neither a panel title nor the
    note at the bottom can meet it; the saved image's tight box takes it in). ``title``: the figure's title,
    drawn as the legend's heading so that the two never meet."""
    if labels is not None:
        kw["labels"] = labels
    if title:
        kw["title"] = title
        kw.setdefault("title_fontsize", 10)
    return fig.legend(handles=handles, loc=loc, bbox_to_anchor=(x, 1.0), frameon=False, **kw)


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
    """Grouped bars per dataset, one panel per metric (base / new / HM, or accuracy), bars from zero with
    each bar's value printed and ± std error bars; methods under their paper names, zero-shot first."""
    plt = _plt()
    metrics = [k for k in ("base", "new", "hm") if any(k in s for s in summary)] or ["all"]
    datasets = list(dict.fromkeys(s["dataset"] for s in summary))
    methods = method_order(s["method"] for s in summary)
    width = 0.8 / max(len(methods), 1)
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(3.6, 1.1 * len(datasets) * (0.6 + 0.3 * len(methods)))
                                                       * len(metrics), 4.2), squeeze=False, layout="constrained")
    for ax, k in zip(axes[0], metrics):
        top = 0.0
        for j, m in enumerate(methods):
            cell = {s["dataset"]: s for s in summary if s["method"] == m}
            vals = [cell.get(d, {}).get(k, np.nan) for d in datasets]
            errs = [cell.get(d, {}).get(f"{k}_std", 0.0) or 0.0 for d in datasets]
            x = np.arange(len(datasets)) + (j - (len(methods) - 1) / 2) * width
            ax.bar(x, vals, width * 0.92, yerr=[e if e else np.nan for e in errs], capsize=2,
                   label=display_name(m), color=OKABE_ITO[j % len(OKABE_ITO)], error_kw={"elinewidth": 0.8})
            for xi, v, e in zip(x, vals, errs):
                if v == v:
                    ax.annotate(f"{v:.1f}", (xi, v + e), xytext=(0, 2.5), textcoords="offset points", ha="center",
                                va="bottom", fontsize=6, rotation=90 if len(methods) > 2 else 0)
                    top = max(top, v + e)
        ax.set_ylim(0, max(10.0, top) * (1.22 if len(methods) > 2 else 1.1))  # room for the printed values
        ax.set_xticks(np.arange(len(datasets)))
        ax.set_xticklabels([str(d).replace("pocket_", "") for d in datasets], rotation=30, ha="right")
        ax.set_ylabel(f"{ACC_LABELS.get(k, k)} (%)")
        ax.set_title(TITLES.get(k, k) + " (higher is better)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    _legend_above(fig, handles, labels, ncol=min(len(methods), 6), title=title)
    seeds = sorted({int(x["seeds"]) for x in summary if x.get("seeds")})
    if seeds:
        _footnote(fig, f"bars: mean over n = {', '.join(map(str, seeds))} seed(s); error bars: sample std over seeds; "
                  "'average': mean over the datasets")
    return _save(fig, path)


def few_shot_points(rows: list[dict[str, Any]], metric: str) -> dict[str, dict[str, dict[int, list[float]]]]:
    """{dataset: {method: {shots: [value per seed]}}} plus an "Average" dataset: per (method, shots, seed) the
    mean over the datasets, where that seed ran on every dataset. Zero-shot rows (no shots) go under shots 0."""
    by_seed: dict[str, dict[str, dict[int, dict[Any, float]]]] = {}
    per_seed: dict[tuple[str, int, Any], dict[str, float]] = {}
    for r in rows:
        if r.get(metric) is None:
            continue
        shots = 0 if is_zero_shot(r["method"]) else int(r.get("shots") or 0)
        if not is_zero_shot(r["method"]) and not shots:
            continue
        # keyed by seed: a grid runs zero-shot once per shots value, the same run each time
        by_seed.setdefault(r["dataset"], {}).setdefault(r["method"], {}).setdefault(shots, {})[r.get("seed")] = \
            float(r[metric])
        per_seed.setdefault((r["method"], shots, r.get("seed")), {})[r["dataset"]] = float(r[metric])
    out = {d: {m: {n: list(v.values()) for n, v in by.items()} for m, by in ms.items()} for d, ms in by_seed.items()}
    if len(out) > 1:
        avg: dict[str, dict[int, list[float]]] = {}
        for (m, shots, _), vals in per_seed.items():
            if len(vals) == len(out):
                avg.setdefault(m, {}).setdefault(shots, []).append(float(np.mean(list(vals.values()))))
        out["Average"] = avg
    return out


def few_shot_plot(rows: list[dict[str, Any]], path: str | Path, metric: str | None = None,
                  title: str = "") -> Path | None:
    """Accuracy against shots per class, as CoOp's Figure 3: one panel per dataset and one for the average
    over datasets; per method the mean over seeds (line, markers) and a band of ± one sample std where
    n >= 2; zero-shot CLIP as a dashed horizontal line. x on a log2 scale at the shots that ran. ``rows``:
    :func:`ncprompt.analysis.tables.run_row` rows or a grid's runs.csv rows (dataset, method, shots, seed)."""
    metric = metric or ("all" if any(r.get("all") is not None for r in rows) else "base")
    points = few_shot_points(rows, metric)
    shots = sorted({n for d in points.values() for m in d.values() for n in m if n})
    if len(shots) < 2:
        return None
    plt = _plt()
    panels = list(points)
    cols = min(4, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.9 * nrows + 0.6), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    methods = method_order(m for d in points.values() for m in d)
    colours = {m: OKABE_ITO[i % len(MARKER_COLOURS)] for i, m in enumerate(methods)}
    for i, (ax, ds) in enumerate(zip(axes.flat, panels)):
        for m, by in points[ds].items():
            if is_zero_shot(m):
                v = [x for vals in by.values() for x in vals]
                ax.axhline(float(np.mean(v)), color=colours[m], ls="--", lw=1.0, label=display_name(m))
                continue
            xs = [n for n in shots if by.get(n)]
            mean = np.array([np.mean(by[n]) for n in xs])
            std = np.array([np.std(by[n], ddof=1) if len(by[n]) > 1 else 0.0 for n in xs])
            ax.plot(xs, mean, marker=MARKERS[methods.index(m) % len(MARKERS)], ms=4, color=colours[m],
                    label=display_name(m))
            if (std > 0).any():
                ax.fill_between(xs, mean - std, mean + std, color=colours[m], alpha=0.18, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots)
        ax.set_xticklabels([str(n) for n in shots])
        ax.minorticks_off()
        ax.set_xlabel("shots per class")
        ax.set_ylabel(f"{ACC_LABELS.get(metric, metric)} (%)")
        name = str(ds).replace("pocket_", "")
        ax.set_title(f"({chr(ord('a') + i)}) {name}" + (" over datasets" if ds == "Average" else ""), fontsize=9)
        ax.grid(alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    order = [display_name(m) for m in methods if display_name(m) in handles]
    _legend_above(fig, [handles[k] for k in order], order, ncol=min(6, len(order)), title=title or None)
    seeds = sorted({len(v) for d in points.values() for m in d.values() for v in m.values()})
    _footnote(fig, f"lines: mean over n = {', '.join(map(str, seeds))} seed(s); bands: ± one sample std over seeds"
              + ("; Average: per seed, the mean over the datasets" if "Average" in points else ""))
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
    """(a) training loss per epoch: the total and, under NPT, the method's base loss (total - NPT), with the
    learning rate; (b) under NPT, its terms LC and MI (unweighted) and their weighted sum; then accuracies
    per epoch (train and any evaluated split), then one panel per NC metric that changes over training —
    metrics of a frozen image encoder stay flat and are listed in a footnote instead of plotted. NC
    panels say "lower is better" (all NC metrics are distances to the collapsed geometry)."""
    if not log:
        return None
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    ep = [epoch_number(r) for r in log]
    series = [r for r in log if r.get("nc_train")]
    moving, flat = moving_metrics(log)
    npt = [k for k in ("npt_lc", "npt_mi", "npt_img_anchor", "npt") if any(k in r for r in log)]
    n_panels = 2 + bool(npt) + len(moving)
    cols = 3 if n_panels in (5, 6) else min(4, n_panels)
    rows = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.1 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[n_panels:]:
        ax.axis("off")
    panels = iter(axes.flat)
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    ax = next(panels)
    lines = ax.plot(ep, [r["loss"] for r in log], color=OKABE_ITO[0], label="total")
    if "npt" in npt:
        lines += ax.plot(ep, [r["loss"] - r.get("npt", 0.0) for r in log], color=OKABE_ITO[2], ls="-.",
                         label="base (method) loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (lower is better)")
    ax.set_title(f"({next(letters)}) training loss", fontsize=9)
    if "lr" in log[0]:
        ax2 = ax.twinx()
        lines += ax2.plot(ep, [r["lr"] for r in log], color="black", lw=0.8, ls=":", label="learning rate (right)")
        ax2.set_ylabel("learning rate", fontsize=7)
        ax2.tick_params(labelsize=6)
        ax2.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax2.spines["right"].set_visible(True)
    # below the panel: a legend inside would cover one of the curves (they live on two y-axes)
    ax.legend(handles=lines, fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.25),
              ncol=min(3, len(lines)))
    if npt:
        ax = next(panels)
        names = {"npt_lc": "LC (language collapse)", "npt_mi": "MI (modality isomorphism)",
                 "npt_img_anchor": "image anchor", "npt": "weighted sum λ·terms"}
        for i, k in enumerate(npt):
            pts = [(epoch_number(r), r[k]) for r in log if r.get(k) is not None]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, color=MARKER_COLOURS[(i + 3) % 7], ls=":" if k == "npt" else "-", label=names[k],
                        marker="." if len(pts) < 30 else None)
        ax.set_xlabel("epoch")
        ax.set_ylabel("NPT term (lower is better)")
        ax.set_title(f"({next(letters)}) NPT regulariser terms", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
    ax = next(panels)
    acc_keys = ["train_acc"] + sorted({k for r in log for k in r if k.endswith("_acc") and k != "train_acc"})
    for i, k in enumerate(acc_keys):
        pts = [(epoch_number(r), r[k]) for r in log if r.get(k) is not None]
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, marker="." if len(pts) < 30 else None, color=MARKER_COLOURS[(i + 1) % 7],
                    label=k.removesuffix("_acc") + (" (training views)" if k == "train_acc" else " (test)"))
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"({next(letters)}) accuracy (higher is better)", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    for i, (ax, k) in enumerate(zip(panels, moving)):
        ax.plot([epoch_number(r) for r in series], [r["nc_train"].get(k, np.nan) for r in series],
                color=MARKER_COLOURS[(i + 3) % 7], marker="." if len(series) < 30 else None)
        ax.set_title(f"({next(letters)}) {nc_label(k)}", fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{nc_label(k).split(':')[0]} (lower is better)", fontsize=7)
    for ax in axes.flat[:n_panels]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    if title:
        fig.suptitle(title, fontsize=10)
    if flat:
        _footnote(fig, "constant during training (e.g. image metrics of a frozen image encoder), not plotted: "
                  + ", ".join(nc_label(k) for k in flat))
    return _save(fig, path)


# --- class geometry ---------------------------------------------------------------------------
def _class_ticks(ax: Any, names: Sequence[str] | None, k: int, split_at: int | None = None,
                 xlabel: str = "class", ylabel: str = "class", y_names: bool = True) -> None:
    """Class names (or indices) on both axes (``y_names`` False: on x only, for a panel right of one that names
    them); with ``split_at``, a black line between base and new classes and the axes labelled "base | new"."""
    if names is not None and k <= MAX_NAMED_CLASSES:
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels(names, rotation=60, ha="right", rotation_mode="anchor", fontsize=6.5)
        ax.set_yticklabels(names if y_names else [], fontsize=6.5)
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
    # constrained layout: the figure title above the panel titles, the right panel beside the left one's labels
    fig, axes = plt.subplots(1, len(panels), figsize=(len(panels) * side + 1.6, side + 0.8), squeeze=False,
                             layout="constrained")
    axes = list(axes[0])
    im = None
    for i, (ax, (name, x)) in enumerate(zip(axes, panels)):
        c = centred_cosine(x)
        off = c[~np.eye(k, dtype=bool)]
        im = ax.imshow(c, vmin=-1, vmax=1, cmap="PuOr_r")
        _class_ticks(ax, classnames, k, n_base, y_names=i == 0)  # the same classes: named once, on the left
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
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.5, side + 0.8), layout="constrained")
    im = axes[0].imshow(cross, vmin=-1, vmax=1, cmap="PuOr_r")
    _class_ticks(axes[0], classnames, k, n_base, xlabel="image class mean", ylabel="text feature of class")
    axes[0].set_title("cos(text feature, image class mean), centred\n(diagonal high = aligned)", fontsize=8)
    fig.colorbar(im, ax=axes[0], shrink=0.8).set_label("cosine")
    ax = axes[1]
    nb = k if n_base is None else n_base
    many = k > MAX_COLOURED_CLASSES  # too many classes to tell apart by colour: colour base vs new instead
    size = 14 if many else 36
    colours = None if many else class_colours(k)
    for i in range(k):
        hollow = i >= nb
        col = OKABE_ITO[int(hollow)] if colours is None else colours[i]
        ax.plot([pm[i, 0], pt[i, 0]], [pm[i, 1], pt[i, 1]], lw=0.4 if many else 0.6, color="grey", zorder=1)
        ax.scatter(pm[i, 0], pm[i, 1], marker="o", s=size, facecolor="none" if hollow else col, edgecolor=col,
                   zorder=2)
        ax.scatter(pt[i, 0], pt[i, 1], marker="X", s=size + 4, color=col, zorder=3, alpha=0.5 if hollow else 1.0)
        if classnames is not None and k <= MAX_NAMED_CLASSES:
            ax.annotate(classnames[i], (pm[i, 0], pm[i, 1]), fontsize=6.5, xytext=(3, 3), textcoords="offset points",
                        gid=DATA_LABEL)
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
    return _save(fig, path)


# --- correlations -----------------------------------------------------------------------------
def correlation_plot(rows: list[dict[str, Any]], metrics: list[str], accuracy: str, path: str | Path,
                     stats: dict[str, dict[str, Any]] | None = None, title: str = "",
                     footnote: str = "") -> Path | None:
    """One accuracy against each NC metric, a labelled panel (a), (b), ... per metric with at least
    ``MIN_CORRELATION_POINTS`` runs (None when no metric has), points coloured by dataset and shaped by
    method (two legends), with Pearson r / Spearman rho and n in each panel. ``rows`` must come from ONE
    model (the caller splits by model); ``footnote`` goes under the panels."""
    models = {r.get("model") for r in rows}
    if len(models) > 1:
        raise ValueError(f"correlation_plot got runs of several models {sorted(map(str, models))}: plot each apart")

    def points(m: str) -> list[dict[str, Any]]:
        return [r for r in rows if r.get(m) is not None and r.get(accuracy) is not None]

    metrics = [m for m in metrics if len(points(m)) >= MIN_CORRELATION_POINTS]
    if not metrics:
        return None
    plt = _plt()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    cols = 2 if len(metrics) in (2, 4) else min(3, len(metrics))
    nrows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.2 * nrows + 0.8), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    datasets = list(dict.fromkeys(r.get("dataset") for r in rows))
    methods = method_order(f"{r.get('method')}{'+npt' if r.get('npt') else ''}" for r in rows)
    for i, (ax, m) in enumerate(zip(axes.flat, metrics)):
        for r in points(m):
            meth = f"{r.get('method')}{'+npt' if r.get('npt') else ''}"
            ax.scatter(r[m], r[accuracy], s=18, color=MARKER_COLOURS[datasets.index(r.get("dataset")) % 7],
                       marker=MARKERS[methods.index(meth) % len(MARKERS)], alpha=0.85, linewidths=0.3,
                       edgecolors="white")
        st = (stats or {}).get(m) or {}
        txt = f"n = {st.get('n', len(points(m)))}"
        if st.get("pearson") is not None:
            txt = f"Pearson r = {st['pearson']:+.2f}, Spearman ρ = {st['spearman']:+.2f}, " + txt
        ax.set_title(f"({chr(ord('a') + i)}) {nc_label(m)}\n{txt}", fontsize=8)
        ax.set_xlabel(f"{nc_label(m).split(': ')[0]} (lower = more collapsed)", fontsize=7)
        ax.set_ylabel(ACC_LABELS.get(accuracy, accuracy), fontsize=7)
        ax.tick_params(labelsize=6.5)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))  # few ticks: labels like 0.0125 never collide
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    colour = [Line2D([], [], marker="o", ls="", color=MARKER_COLOURS[i % 7], label=str(d).replace("pocket_", ""))
              for i, d in enumerate(datasets)]
    shape = [Line2D([], [], marker=MARKERS[i % len(MARKERS)], ls="", color="grey", label=display_name(m))
             for i, m in enumerate(methods)]
    _legend_above(fig, colour, title="dataset (colour)", x=0.0, loc="lower left", ncol=min(3, len(colour)),
                  fontsize=7, title_fontsize=7)
    _legend_above(fig, shape, title="method (marker)", x=1.0, loc="lower right", ncol=min(2, len(shape)),
                  fontsize=7, title_fontsize=7)
    fig.suptitle(title or f"NC metrics vs {ACC_LABELS.get(accuracy, accuracy)}", fontsize=10)
    if footnote:
        _footnote(fig, footnote)
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
