"""The main job (``ncprompt demo``) and the ``ncprompt protocol`` grid command.

The demo runs the pocket suite in base-to-new mode with the shipped pocket model: zero-shot,
CoOp and CoOp + NPT (and further registered methods as they land), 16 shots, one seed, and
prints the base / new / HM table per dataset with the average, writing tables and a plot.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import yaml

from ncprompt.protocols.grid import MethodSpec, markdown_table, run_grid, summarise

DEMO_DATASETS = ["pocket_garments", "pocket_digits", "pocket_colours", "pocket_textures", "pocket_colour_garment",
                 "pocket_fmnist_real"]
DEMO_METHODS = ["zeroshot", "coop", "coop+npt"]
DEMO_BASE: dict[str, Any] = {
    "model": "pocket",
    "protocol": "base2new",
    "shots": 16,
    "method_options": {},
    "max_test_per_class": 100,
    "train": {"epochs": 100, "batch_size": 32, "lr": 0.01, "views": 4},  # see configs/pocket_b2n.yaml
}
DEMO_METHOD_OPTIONS = {"coop": {"n_ctx": 4, "ctx_init": "a photo of a"}}


def cmd_demo(a: argparse.Namespace) -> int:
    from ncprompt.backbones.pocket import pocket_backbone

    if pocket_backbone() is None:
        print("note: the pocket weights are missing: the demo runs on RANDOM weights (numbers mean nothing)")
    methods = [MethodSpec.parse(m, DEMO_METHOD_OPTIONS) for m in (a.methods or DEMO_METHODS)]
    base = dict(DEMO_BASE)
    if a.epochs:
        base["train"] = {**base["train"], "epochs": a.epochs}
    t0 = time.time()
    print(f"ncprompt demo: pocket model, base-to-new, {base['shots']} shots, methods {[m.label for m in methods]}")
    rows = run_grid(base, a.datasets or DEMO_DATASETS, methods, a.seeds, a.output, workers=a.workers)
    print()
    print(markdown_table(summarise(rows)))
    print(f"done in {time.time() - t0:.0f} s; tables and plot in {a.output}/ (summary.md, summary.csv, summary.png)")
    return 0


def cmd_protocol(a: argparse.Namespace) -> int:
    base: dict[str, Any] = yaml.safe_load(Path(a.config).read_text()) if a.config else {}
    base = {**base, "protocol": a.protocol}
    for key in ("model", "pretrained", "root", "device"):
        if getattr(a, key, None):
            base[key] = getattr(a, key)
    if a.targets:
        base["targets"] = a.targets
    if a.imbalance is not None:
        base["imbalance"] = a.imbalance
    if a.epochs:
        base.setdefault("train", {})["epochs"] = a.epochs
    methods = [MethodSpec.parse(m, base.pop("method_options_by_method", None)) for m in a.methods]
    rows = run_grid(base, a.datasets, methods, a.seeds, a.output, workers=a.workers, shots=a.shots)
    print(markdown_table(summarise(rows)))
    return 0


def add_commands(sub: Any) -> None:
    s = sub.add_parser("demo", help="the main job: zero-shot, CoOp, CoOp+NPT on the pocket suite (base-to-new)")
    s.add_argument("--output", default="outputs/demo")
    s.add_argument("--datasets", nargs="+")
    s.add_argument("--methods", nargs="+", help="e.g. zeroshot coop coop+npt")
    s.add_argument("--seeds", nargs="+", type=int, default=[1])
    s.add_argument("--epochs", type=int)
    s.add_argument("--workers", type=int, default=1, help="parallel runs (processes)")
    s.set_defaults(func=cmd_demo)
    s = sub.add_parser("protocol", help="a grid of runs (datasets x shots x methods x seeds) with summary tables")
    s.add_argument("--protocol", choices=["all", "base2new"], default="base2new")
    s.add_argument("--datasets", nargs="+", required=True)
    s.add_argument("--methods", nargs="+", required=True, help="e.g. zeroshot coop coop+npt")
    s.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    s.add_argument("--shots", type=int, nargs="+", help="shots per class; several values: a few-shot sweep")
    s.add_argument("--targets", nargs="+", help="datasets to evaluate after training (cross-dataset / domain shift)")
    s.add_argument("--imbalance", type=float)
    s.add_argument("--epochs", type=int)
    s.add_argument("--model")
    s.add_argument("--pretrained")
    s.add_argument("--root")
    s.add_argument("--device")
    s.add_argument("--config", help="YAML with base run options (method_options_by_method: {coop: {...}})")
    s.add_argument("--output", required=True)
    s.add_argument("--workers", type=int, default=1)
    s.set_defaults(func=cmd_protocol)
