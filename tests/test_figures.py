"""Figures a reviewer accepts: every figure is rendered and its texts (titles, tick labels, axis labels,
legends, notes) checked for overlap with the renderer's text boxes (rotated labels as rotated rectangles);
class colours distinct, bars from zero, the few-shot curve, NPT terms in the training plot, paper names."""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from matplotlib.text import Text  # noqa: E402

from ncprompt.analysis import plots  # noqa: E402
from ncprompt.analysis.names import display_name, method_order  # noqa: E402

LONG = ["a very long class name number one", "another rather long class name", "short", "tiny",
        "yet another extremely long label", "mid-length name", "seventh class", "eighth", "ninth class here",
        "tenth and final class"]


@pytest.fixture()
def figures(monkeypatch):
    """Every figure a plot function saves, kept open (drawn) instead of closed."""
    saved: list[Any] = []
    original = plots._save

    def keep(fig: Any, path: Any) -> Any:
        saved.append(fig)
        fig.savefig(path, dpi=130, bbox_inches="tight")
        return path

    monkeypatch.setattr(plots, "_save", keep)
    yield saved
    import matplotlib.pyplot as plt

    for fig in saved:
        plt.close(fig)
    assert original is not None


def _corners(t: Text, renderer: Any) -> np.ndarray:
    """The four corners (display px) of a text's rotated box: its unrotated size about its box's centre."""
    box = t.get_window_extent(renderer)
    angle = t.get_rotation()
    if angle % 90 == 0:
        return np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]])
    t.set_rotation(0)
    flat = t.get_window_extent(renderer)
    t.set_rotation(angle)
    w, h, a = flat.width / 2, flat.height / 2, math.radians(angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    centre = np.array([(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2])
    return centre + np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) @ rot.T


def _overlap(p: np.ndarray, q: np.ndarray, tol: float = 0.5) -> bool:
    """Separating-axis test of two convex quadrilaterals (overlap deeper than ``tol`` px)."""
    for poly in (p, q):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            axis = np.array([-edge[1], edge[0]]) / (np.hypot(*edge) or 1.0)
            a, b = p @ axis, q @ axis
            if a.max() - tol <= b.min() or b.max() - tol <= a.min():
                return False
    return True


def drawn_texts(fig: Any) -> list[tuple[str, np.ndarray]]:
    """(text, corners) of every non-empty text the renderer draws when the figure is saved, except labels of
    data points."""
    drawn: dict[int, tuple[str, np.ndarray]] = {}  # the last draw of each text: the one in the file
    original = Text.draw

    def draw(self: Text, renderer: Any) -> None:
        original(self, renderer)
        if self.get_visible() and self.get_text().strip() and self.get_gid() != plots.DATA_LABEL:
            drawn[id(self)] = (self.get_text(), _corners(self, renderer))  # measured as drawn (this dpi)

    Text.draw = draw  # type: ignore[method-assign]
    try:  # drawn as plots._save writes the file (dpi, tight bounding box): the layout the PNG shows
        fig.savefig(io.BytesIO(), dpi=130, bbox_inches="tight", format="png")
    finally:
        Text.draw = original  # type: ignore[method-assign]
    return list(drawn.values())


def assert_no_overlap(fig: Any) -> None:
    texts = drawn_texts(fig)
    assert texts
    clashes = [(a, b) for i, (a, p) in enumerate(texts) for b, q in texts[i + 1 :] if _overlap(p, q)]
    assert not clashes, clashes[:5]


def test_the_overlap_check_sees_overlaps():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.set_title("a title")
    fig.suptitle("a figure title", y=0.9, va="center")  # drawn over the panel title, as the old heatmap did
    assert pytest.raises(AssertionError, assert_no_overlap, fig)
    fig2, ax2 = plt.subplots(figsize=(3, 3))
    ax2.set_xticks(range(30))
    ax2.set_xticklabels(["a long rotated tick label"] * 30, rotation=60, ha="right")
    assert pytest.raises(AssertionError, assert_no_overlap, fig2)
    plt.close(fig)
    plt.close(fig2)


def _features(k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(k, 16)), rng.normal(size=(k, 16))


def test_zero_shot_heatmap_title_and_long_class_names(figures, tmp_path):
    before, after = _features(10)
    plots.cosine_heatmaps_plot(before, before, tmp_path / "zs.png", LONG, title="zeroshot on a set (pocket)")
    plots.cosine_heatmaps_plot(before, after, tmp_path / "b2n.png", LONG, n_base=5, title="coop+npt on a set")
    for fig in figures:
        assert_no_overlap(fig)
    right = figures[1].axes[1]
    assert not [t for t in right.get_yticklabels() if t.get_text()]  # the classes are named once, on the left


def test_geometry_gives_each_of_ten_classes_its_own_colour(figures, tmp_path):
    text, means = _features(10, 1)
    plots.geometry_plot(text, means, tmp_path / "g.png", LONG, n_base=5, title="coop on a set")
    fig = figures[0]
    assert_no_overlap(fig)
    colours = {tuple(np.round(c.get_edgecolor()[0][:3], 3)) for c in fig.axes[1].collections}
    assert len(colours) == 10
    assert len(plots.class_colours(20)) == len(set(plots.class_colours(20))) == 20


SUMMARY = [{"dataset": d, "method": m, "seeds": 3, "base": b, "base_std": 1.0, "new": b - 10, "new_std": 0.5,
            "hm": b - 5} for d, off in (("pocket_emoji_animals", 0), ("a_long_dataset_name", 5), ("average", 2))
           for m, b in (("coop", 80 + off), ("zeroshot", 70 + off), ("coop+npt", 82 + off), ("kgcoop", 81 + off))]


def test_summary_bars_start_at_zero_with_paper_names_and_zero_shot_first(figures, tmp_path):
    plots.summary_plot(SUMMARY, tmp_path / "s.png", title="a grid")
    assert figures[0].legends[0].get_title().get_text() == "a grid"  # the title heads the legend above the panels
    fig = figures[0]
    assert_no_overlap(fig)
    assert all(ax.get_ylim()[0] == 0 for ax in fig.axes)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["CLIP", "CoOp", "CoOp + NPT", "KgCoOp"]


def _log(npt: bool, epochs: int = 6) -> list[dict[str, Any]]:
    out = []
    for e in range(epochs):
        r: dict[str, Any] = {"epoch": e, "lr": 0.002 * (1 - e / epochs), "train_acc": 40 + e, "ce": 2 - 0.1 * e,
                             "base_acc": 30 + e, "new_acc": 20 + e,
                             "nc_train": {"nc1": 3 - 0.2 * e, "nc2_equinorm_text": 0.1 + 0.01 * e,
                                          "nc2_equinorm_img": 0.5, "n_samples": 10}}
        if npt:
            r.update(npt_lc=0.5 - 0.03 * e, npt_mi=0.8 - 0.05 * e, npt=0.1 * (1.3 - 0.08 * e))
        r["loss"] = r["ce"] + r.get("npt", 0.0)
        out.append(r)
    return out


def test_training_plot_shows_the_base_loss_and_the_npt_terms(figures, tmp_path):
    plots.training_curves_plot(_log(True), tmp_path / "t.png", title="coop+npt on a set (pocket)")
    plots.training_curves_plot(_log(False), tmp_path / "t0.png", title="coop on a set (pocket)")
    for fig in figures:
        assert_no_overlap(fig)
    labels = [line.get_label() for ax in figures[0].axes for line in ax.get_lines()]
    assert {"total", "base (method) loss", "LC (language collapse)", "MI (modality isomorphism)"} <= set(labels)
    assert "LC (language collapse)" not in [line.get_label() for ax in figures[1].axes for line in ax.get_lines()]


def _few_shot_rows() -> list[dict[str, Any]]:
    rows = []
    for ds, off in (("pocket_emoji_animals", 0.0), ("emoji_transport", 8.0)):
        for seed in (1, 2, 3):
            rows.append({"dataset": ds, "method": "zeroshot", "shots": None, "seed": seed, "all": 50.0 + off})
            for shots in (1, 2, 4, 8, 16):
                for m, gain in (("coop", 3.0), ("coop+npt", 3.5)):
                    rows.append({"dataset": ds, "method": m, "shots": shots, "seed": seed,
                                 "all": 45.0 + off + gain * math.log2(shots) + seed})
    return rows


def test_few_shot_curve_mean_and_band_per_dataset_and_average(figures, tmp_path):
    rows = _few_shot_rows()
    assert plots.few_shot_plot(rows, tmp_path / "f.png") is not None
    fig = figures[0]
    assert_no_overlap(fig)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert titles == ["(a) emoji_animals", "(b) emoji_transport", "(c) Average over datasets"]
    avg = fig.axes[2]
    coop = next(line for line in avg.get_lines() if line.get_label() == "CoOp")
    assert list(coop.get_xdata()) == [1, 2, 4, 8, 16]
    # the average over datasets of the mean over seeds: 45 + 4 (dataset offsets) + 3 log2(shots) + 2 (seeds)
    assert np.allclose(coop.get_ydata(), [51.0 + 3.0 * math.log2(n) for n in (1, 2, 4, 8, 16)])
    assert avg.collections  # the band over seeds
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["CLIP", "CoOp", "CoOp + NPT"]
    assert plots.few_shot_plot([r for r in rows if r["shots"] in (None, 16)], tmp_path / "g.png") is None


def test_few_shot_tables_and_grid_summary_write_the_curve(tmp_path):
    from ncprompt.analysis.tables import write_paper_tables
    from ncprompt.protocols.grid import summarise, write_tables

    rows = _few_shot_rows()
    assert (tmp_path / "t" / "few_shot.png") in write_paper_tables(rows, tmp_path / "t")
    grid_rows = [{**r, "shots": r["shots"] or 16} for r in rows]  # a grid runs zero-shot at every shots value
    write_tables(grid_rows, tmp_path / "g")
    assert (tmp_path / "g" / "summary.png").stat().st_size > 1000
    averages = {s["dataset"] for s in summarise(grid_rows) if s["dataset"].startswith("average")}
    assert averages == {f"average ({n} shots)" for n in (1, 2, 4, 8, 16)}  # never averaged across shots
    assert "| CoOp + NPT |" in (tmp_path / "g" / "summary.md").read_text()


def _corr_rows(n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    return [{"model": "pocket", "dataset": f"dataset_{i % 3}", "method": ["zeroshot", "coop"][i % 2], "npt": i % 4 == 3,
             "acc_hm": float(rng.uniform(40, 80)), "train_nc1": float(rng.uniform(0.001, 0.0125)),
             "train_nc4": float(rng.uniform(0, 1))} for i in range(n)]


def test_correlation_plot_needs_five_runs_and_has_two_legends(figures, tmp_path):
    assert plots.correlation_plot(_corr_rows(4), ["train_nc1", "train_nc4"], "acc_hm", tmp_path / "c.png") is None
    assert plots.correlation_plot(_corr_rows(12), ["train_nc1", "train_nc4"], "acc_hm", tmp_path / "c.png",
                                  footnote="a note under the panels") is not None
    fig = figures[0]
    assert_no_overlap(fig)
    titles = sorted(leg.get_title().get_text() for leg in fig.legends)
    assert titles == ["dataset (colour)", "method (marker)"]
    marker = next(leg for leg in fig.legends if leg.get_title().get_text() == "method (marker)")
    assert [t.get_text() for t in marker.get_texts()] == ["CLIP", "CoOp", "CoOp + NPT"]


def test_display_names_and_order():
    assert [display_name(m) for m in ("zeroshot", "coop+npt", "kgcoop", "maple+npt", "mine")] == \
        ["CLIP", "CoOp + NPT", "KgCoOp", "MaPLe + NPT", "mine"]
    assert method_order(["coop", "coop+npt", "zeroshot", "coop"]) == ["zeroshot", "coop", "coop+npt"]
