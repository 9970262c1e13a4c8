"""The issue-9 target table of the pocket model on the emoji suite, through the public training path.

Per dataset: zero-shot (all classes; base and new), 16-shot linear probe on cached features (all
classes, and the base classes alone: what the features give the base classes with 16 shots), CoOp
and KgCoOp trained on the base classes (16 shots) and tested on base and new, and CoOp under class
imbalance tau = 0.06 (tail-class accuracy against the same classes in the balanced run); then
zero-shot on the shifted variants of ``emoji_generic`` and the cross-artist probe. Every number
comes from :class:`ncprompt.protocols.experiment.Experiment` (what ``ncprompt train`` runs), with
the feature cache in ``--cache``.

    python benchmarks/pocket_targets.py                       # committed weights, whole suite
    python benchmarks/pocket_targets.py --weights runs/pocket-pretrain --datasets emoji_animals
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ncprompt.backbones.openclip import load_backbone
from ncprompt.config import RunConfig, method_options, preset
from ncprompt.data import get_dataset
from ncprompt.data.class_split import choose_base_classes
from ncprompt.data.sampling import restrict_classes
from ncprompt.pocket import suite as S
from ncprompt.protocols.experiment import Experiment

#: CoOp's and KgCoOp's options and training: the ``pocket_b2n`` and ``pocket_kgcoop_b2n`` presets
COOP = method_options("pocket_b2n")
KGCOOP = method_options("pocket_kgcoop_b2n")
TRAIN = dict(preset("pocket_b2n")["train"])
#: epochs of the base-to-new cells: ``pocket_b2n``'s 100 for both (KgCoOp's published B2N epochs; CoOp's
#: published 200 gave the same within 0.4 points on hands, animals and symbols, docs/pocket-model.md)
COOP_EPOCHS = KGCOOP_EPOCHS = TRAIN["epochs"]
#: fewer epochs for the ImageNet role, as CoOp trains ImageNet for a quarter of the others' epochs
EPOCH_SCALE = {"emoji_generic": 0.25}


def run(bb, dataset: str, method: str, protocol: str, cache: str, seed: int, base_only: bool = False, **extra: Any):
    """One cell through :class:`Experiment` (what ``ncprompt train`` runs); ``base_only``: protocol ``all`` on the
    dataset's base classes alone (the same 16-shot training images as its base-to-new cells)."""
    cfg: dict[str, Any] = {
        "run": {"model": bb.name, "cache_dir": cache, "diagnostics": False},
        "data": {
            "dataset": dataset,
            "protocol": protocol,
            "shots": extra.pop("shots", 16),
            "imbalance": extra.pop("imbalance", None),
        },
        "method": {"name": method, **extra.pop("options", {})},
        "train": {**TRAIN, "seed": seed, **extra.pop("train", {})},
    }
    cfg["train"]["epochs"] = max(1, round(cfg["train"]["epochs"] * EPOCH_SCALE.get(dataset, 1.0)))
    t0 = time.time()
    data = None
    if base_only:
        full = get_dataset(dataset, None)
        data = restrict_classes(full, choose_base_classes(full.classnames, None)[0], "base")
    res = Experiment(RunConfig.from_dict(cfg), backbone=bb, dataset=data).run(None)
    print(f"[targets] {dataset} {method} {protocol}{' (base classes)' * base_only} {time.time() - t0:.0f}s",
          file=sys.stderr, flush=True)
    return res


def top1(res, split: str) -> float:
    return float(res.splits[split].top1)


def tail_gap(bb, dataset: str, cache: str, seed: int, tau: float) -> tuple[float, float]:
    """CoOp (all classes) at ``tau``: mean accuracy of its tail third and of the same classes when balanced."""
    imb = run(bb, dataset, "coop", "all", cache, seed, imbalance=tau, options=COOP)
    bal = run(bb, dataset, "coop", "all", cache, seed, options=COOP)
    counts = np.asarray(imb.train_counts)
    tail = np.argsort(counts, kind="stable")[: max(1, len(counts) // 3)]
    pi = np.asarray([np.nan if v is None else v for v in imb.splits["all"].per_class], dtype=float)
    pb = np.asarray([np.nan if v is None else v for v in bal.splits["all"].per_class], dtype=float)
    return float(np.nanmean(pi[tail])), float(np.nanmean(pb[tail]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None, help="a local-dir model folder (default: the shipped pocket model)")
    ap.add_argument("--datasets", nargs="+", default=None)
    ap.add_argument("--variants", nargs="*", default=None)
    ap.add_argument("--tail-datasets", nargs="*", default=None, help="datasets for the tau=0.06 row (default: all)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cache", default="cache/pocket-targets")
    ap.add_argument("--json", default=None, help="write the numbers here too")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (the committed table ran on the CPU)")
    ap.add_argument("--skip", nargs="*", default=[], help="parts to skip: probe coop kgcoop tail variants xartist")
    ap.add_argument("--coop-epochs", type=int, default=COOP_EPOCHS, help="CoOp's base-to-new epochs")
    ap.add_argument("--kgcoop-epochs", type=int, default=KGCOOP_EPOCHS, help="KgCoOp's base-to-new epochs")
    ap.add_argument("--epochs", type=int, default=TRAIN["epochs"], help="epochs of the tail row's CoOp runs")
    ap.add_argument("--crop-min", type=float, default=TRAIN["crop_min"], help="random resized crop's smallest area")
    ap.add_argument("--flip", action=argparse.BooleanOptionalAction, default=TRAIN["flip"], help="random flips")
    ap.add_argument("--views", type=int, default=TRAIN["views"], help="augmented views per training image")
    ap.add_argument("--merge", nargs="+", help="only print the table of these --json files (parts run in parallel)")
    a = ap.parse_args(argv)
    if a.merge:
        parts = [json.loads(Path(f).read_text()) for f in a.merge]
        merged: dict[str, dict[str, Any]] = {k: {} for k in ("datasets", "shifted", "xartist")}
        for part in parts:  # field by field: a later part's numbers replace an earlier part's
            for k in merged:
                for n, v in part[k].items():
                    merged[k][n] = {**merged[k].get(n, {}), **v} if isinstance(v, dict) else v
        order = {n: i for i, n in enumerate(list(S.SETS))}
        left = sorted(set(merged["datasets"]) - set(S.SUITE))
        if left:  # a role's earlier dataset (docs/datasets.md): its row leaves the table and its averages
            print(f"[targets] not in the suite, left out: {', '.join(left)}", file=sys.stderr)
        kept = ((n, v) for n, v in merged["datasets"].items() if n in S.SUITE)
        rows = dict(sorted(kept, key=lambda kv: order[kv[0]]))
        _dump(a.json, rows, merged["shifted"], merged["xartist"])
        print_table(rows, merged["shifted"], merged["xartist"])
        return
    torch.set_num_threads(a.threads)
    TRAIN.update(epochs=a.epochs, crop_min=a.crop_min, flip=a.flip, views=a.views)
    bb = load_backbone(f"local-dir:{a.weights}" if a.weights else "pocket", device=a.device)
    datasets = a.datasets or S.SUITE
    variants = S.VARIANTS if a.variants is None else a.variants
    rows: dict[str, dict[str, float]] = {}
    for d in datasets:
        r: dict[str, float] = {"classes": len(S.SETS[d].select())}
        zs = run(bb, d, "zeroshot", "base2new", a.cache, a.seed)
        r["zs_base"], r["zs_new"] = top1(zs, "base"), top1(zs, "new")
        r["zs_all"] = top1(run(bb, d, "zeroshot", "all", a.cache, a.seed), "all")
        if "probe" not in a.skip:
            r["probe"] = top1(run(bb, d, "linear_probe", "all", a.cache, a.seed), "all")
            r["probe_base"] = top1(run(bb, d, "linear_probe", "all", a.cache, a.seed, base_only=True), "all")
        if "coop" not in a.skip:
            c = run(bb, d, "coop", "base2new", a.cache, a.seed, options=COOP, train={"epochs": a.coop_epochs})
            r["coop_base"], r["coop_new"] = top1(c, "base"), top1(c, "new")
        if "kgcoop" not in a.skip:
            k = run(bb, d, "kgcoop", "base2new", a.cache, a.seed, options=KGCOOP, train={"epochs": a.kgcoop_epochs})
            r["kg_base"], r["kg_new"] = top1(k, "base"), top1(k, "new")
        if "tail" not in a.skip and (a.tail_datasets is None or d in a.tail_datasets):
            r["tail_006"], r["tail_bal"] = tail_gap(bb, d, a.cache, a.seed, 0.06)
        rows[d] = r
        _dump(a.json, rows, {}, {})
        print(f"[targets] {d}: " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()), file=sys.stderr, flush=True)
    shifted: dict[str, dict[str, float]] = {}
    for v in variants:
        src = S.SETS[v].source
        zs_v = top1(run(bb, v, "zeroshot", "all", a.cache, a.seed), "all")
        src_zs = rows[src]["zs_all"] if src in rows else top1(run(bb, src, "zeroshot", "all", a.cache, a.seed), "all")
        shifted[v] = {"classes": len(S.SETS[v].select()), "zs": zs_v, "source_zs": src_zs}
        _dump(a.json, rows, shifted, {})
    xartist: dict[str, float] = {}
    if "xartist" not in a.skip:
        xa = run(bb, "emoji_generic_xartist", "linear_probe", "all", a.cache, a.seed)
        same = rows["emoji_generic"]["probe"] if "probe" in rows.get("emoji_generic", {}) else float("nan")
        zsx = top1(run(bb, "emoji_generic_xartist", "zeroshot", "all", a.cache, a.seed), "all")
        xartist = {"probe_cross": top1(xa, "all"), "zs_cross": zsx, "probe_same": same}
    _dump(a.json, rows, shifted, xartist)
    print_table(rows, shifted, xartist)


def _dump(path: str | None, rows, shifted, xartist) -> None:
    if path:
        Path(path).write_text(json.dumps({"datasets": rows, "shifted": shifted, "xartist": xartist}, indent=1))


def _gap(rows: dict[str, dict[str, float]], a: str, b: str) -> float:
    """Mean of ``r[a] - r[b]`` over the datasets that have both (paired)."""
    vals = [r[a] - r[b] for r in rows.values() if a in r and b in r]
    return float(np.mean(vals)) if vals else float("nan")


def _mean(rows: dict[str, dict[str, float]], key: str) -> float:
    vals = [r[key] for r in rows.values() if key in r]
    return float(np.mean(vals)) if vals else float("nan")


COLUMNS = [
    ("classes", "K"),
    ("zs_all", "ZS"),
    ("probe", "probe"),
    ("zs_base", "ZS base"),
    ("zs_new", "ZS new"),
    ("probe_base", "probe base"),
    ("coop_base", "CoOp base"),
    ("coop_new", "CoOp new"),
    ("kg_base", "KgCoOp base"),
    ("kg_new", "KgCoOp new"),
    ("tail_006", "CoOp tail @0.06"),
    ("tail_bal", "same classes @1"),
]


def print_table(rows, shifted, xartist) -> None:
    cols = [(k, h) for k, h in COLUMNS if any(k in r for r in rows.values())]
    print("| dataset | role | " + " | ".join(h for _, h in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for d, r in rows.items():
        cells = [f"{r[k]:.0f}" if k == "classes" else (f"{r[k]:.1f}" if k in r else "") for k, _ in cols]
        print(f"| {d} | {S.SETS[d].role} | " + " | ".join(cells) + " |")
    print("| **average** | | " + " | ".join("" if k == "classes" else f"{_mean(rows, k):.1f}" for k, _ in cols) + " |")
    m = {k: _mean(rows, k) for k, _ in COLUMNS}
    print()
    print("| target | measured | met |\n|---|---|---|")
    chance_ok = all(r["zs_all"] >= 3 * 100 / r["classes"] for r in rows.values())
    checks = [
        (
            "zero-shot >= 3x chance on every dataset",
            "min ratio " + f"{min(r['zs_all'] * r['classes'] / 100 for r in rows.values()):.1f}x",
            chance_ok,
        ),
        ("average zero-shot base >= 50", f"{m['zs_base']:.1f}", m["zs_base"] >= 50),
        ("probe - zero-shot >= +10", f"{_gap(rows, 'probe', 'zs_all'):+.1f}", _gap(rows, "probe", "zs_all") >= 10),
        (
            "CoOp base - zero-shot base >= +8",
            f"{_gap(rows, 'coop_base', 'zs_base'):+.1f}",
            _gap(rows, "coop_base", "zs_base") >= 8,
        ),
        (
            "CoOp new <= zero-shot new - 3",
            f"{_gap(rows, 'coop_new', 'zs_new'):+.1f}",
            _gap(rows, "coop_new", "zs_new") <= -3,
        ),
        (
            "KgCoOp recovers >= half of CoOp's new-class loss",
            f"{_gap(rows, 'kg_new', 'coop_new'):+.1f} of {-_gap(rows, 'coop_new', 'zs_new'):.1f}",
            _gap(rows, "coop_new", "zs_new") < 0
            and _gap(rows, "kg_new", "coop_new") >= -0.5 * _gap(rows, "coop_new", "zs_new"),
        ),
        (
            "CoOp tail @0.06 <= balanced - 5",
            f"{_gap(rows, 'tail_006', 'tail_bal'):+.1f}",
            _gap(rows, "tail_006", "tail_bal") <= -5,
        ),
    ]
    for v, s in shifted.items():
        checks.append(
            (
                f"{v}: zero-shot <= source - 5 and >= 3x chance",
                f"{s['zs']:.1f} vs {s['source_zs']:.1f} (chance {100 / s['classes']:.2f})",
                s["zs"] <= s["source_zs"] - 5 and s["zs"] >= 300 / s["classes"],
            )
        )
    for name, val, ok in checks:
        if "nan" not in val:
            print(f"| {name} | {val} | {'yes' if ok else '**no**'} |")
    if xartist:
        print(
            "\ncross-artist probe on emoji_generic (train Noto + Twemoji, test OpenMoji): "
            f"{xartist['probe_cross']:.1f} (zero-shot on the same test {xartist['zs_cross']:.1f}; "
            f"probe within the artist mix {xartist['probe_same']:.1f})"
        )


if __name__ == "__main__":
    main()
