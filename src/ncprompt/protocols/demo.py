"""The main job (``ncprompt demo``) and the ``ncprompt protocol`` grid command.

The demo runs part of pocket bench 3 (the ``b3_`` suite: test images of artworks that neither the shots nor
pretraining saw) in base-to-new mode with its shipped model ``pocket-b3``: zero-shot, CoOp, CoOp + NPT and
KgCoOp, 16 shots, one seed, and
prints the base / new / HM table per dataset with the average, writing tables and a plot. Its run
settings are the ``pocket_b2n`` preset (:mod:`ncprompt.config.presets`). The command-line parsers
live in :mod:`ncprompt.cli` (so ``--help`` stays light); these are the handlers.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ncprompt.config import ConfigError, RunConfig, merge_layers, method_options, preset
from ncprompt.protocols.grid import MethodSpec, markdown_table, run_grid, summarise

#: a representative part of bench 3 (docs/datasets.md): the OxfordPets, StanfordCars, DTD and EuroSAT roles,
#: 5-36 base classes each
DEMO_DATASETS = ["b3_animals", "b3_transport", "b3_symbols", "b3_hands"]
#: the model of bench 3 (pretrained without the b3_ sets' training, validation or test artworks)
DEMO_MODEL = "pocket-b3"
DEMO_METHODS = ["zeroshot", "coop", "coop+npt", "kgcoop"]
#: epochs of the demo's trained cells (None: the preset's 50)
DEMO_EPOCHS: int | None = None
#: KgCoOp's cells take the pocket_kgcoop_b2n preset's method options (the preset's reach the coop cells only)
DEMO_METHOD_OPTIONS = {"kgcoop": method_options("pocket_kgcoop_b2n")}
#: the demo's run settings: the pocket recipe (its CoOp options apply to the coop cells only)
DEMO_PRESET = "pocket_b2n"


def per_method_options(base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pop ``per_method`` (or the older ``method_options_by_method``) from a grid's base config."""
    out: dict[str, dict[str, Any]] = {}
    for key in ("method_options_by_method", "per_method"):
        value = base.pop(key, None) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must map method names to their options, e.g. per_method: {{coop: {{n_ctx: 4}}}}")
        out.update(value)
    return out


def cmd_demo(a: argparse.Namespace) -> int:
    methods = [MethodSpec.parse(m, DEMO_METHOD_OPTIONS) for m in (a.methods or DEMO_METHODS)]
    base = preset(DEMO_PRESET)
    base["run"] = {**base["run"], "model": DEMO_MODEL}
    base["train"] = {**base["train"], "epochs": a.epochs or DEMO_EPOCHS or base["train"]["epochs"]}
    t0 = time.time()
    print(f"ncprompt demo: {DEMO_MODEL} model, pocket bench 3 (held-out artworks), base-to-new, "
          f"{base['data']['shots']} shots, methods {[m.label for m in methods]}")
    rows = run_grid(base, a.datasets or DEMO_DATASETS, methods, a.seeds, a.output, workers=a.workers,
                    resume=not a.no_resume)
    print()
    print(markdown_table(summarise(rows)))
    print(f"done in {time.time() - t0:.0f} s; tables and plot in {a.output}/ (summary.md, summary.csv, summary.png)")
    return 0


def run_protocol(base: dict[str, Any], datasets: list[str], methods: list[str], seeds: list[int],
                 output: str | Path, shots: list[int] | None = None, workers: int = 1, resume: bool = True) -> int:
    """``ncprompt protocol``: ``base`` is the merged (unvalidated) base config of every cell; its ``grid`` section
    (:mod:`ncprompt.config.grid`) says where the cells run."""
    from ncprompt.config.grid import pop_grid_section

    launcher = pop_grid_section(base)
    options = per_method_options(base)
    specs = [MethodSpec.parse(m, options) for m in methods]
    rows = run_grid(base, datasets, specs, seeds, output, workers=workers, shots=shots, resume=resume,
                    launcher=launcher)
    if rows:  # (none: submitted without waiting)
        print(markdown_table(summarise(rows)))
    return 0


#: keys each grid cell sets from the grid's lists (left out of the printed base config)
PER_CELL = (("data", "dataset"), ("data", "shots"), ("train", "seed"), ("npt", "enabled"), ("run", "output"))


def protocol_config(base: dict[str, Any], datasets: list[str], methods: list[str], seeds: list[int],
                    output: str | Path, shots: list[int] | None = None, workers: int = 1) -> dict[str, Any]:
    """What ``ncprompt protocol`` runs, resolved (``--print-config``): ``grid`` (its lists: datasets, shots,
    methods, seeds; output, workers), the base config of every cell with defaults filled (run, data, train,
    npt; less the keys a cell sets: dataset, shots, seed, npt on/off; NAME=ROOT also sets the root) and
    ``methods``: each method spec's method section as its cells get it (base options, then per_method)."""
    base = dict(base)
    options = per_method_options(base)
    specs = list({m.label: m for m in (MethodSpec.parse(x, options) for x in methods)}.values())
    seeds = list(dict.fromkeys(seeds))
    cells = {m.label: RunConfig.from_dict(merge_layers(base, {
        "method": {"name": m.method, **dict(m.options)}, "npt": {"enabled": m.npt}, "train": {"seed": seeds[0]},
        "run": {"output": None}}), where=f"grid cell {m.label}").to_dict() for m in specs}
    first = next(iter(cells.values()))
    grid = {"datasets": list(dict.fromkeys(datasets)),
            "shots": list(dict.fromkeys(shots or [first["data"]["shots"]])),
            "methods": [m.label for m in specs], "seeds": seeds, "output": str(output), "workers": workers}
    out: dict[str, Any] = {"grid": grid}
    for section in ("run", "data", "train", "npt"):
        out[section] = {k: v for k, v in first[section].items() if (section, k) not in PER_CELL}
    out["methods"] = {label: {**cfg["method"], "npt": cfg["npt"]["enabled"]} for label, cfg in cells.items()}
    return out
