"""Whole pocket base-to-new cells with ``train.shared_prefix`` off (before) and on (after): time and results.

Each cell is what ``ncprompt train --preset PRESET --dataset DATASET`` runs (:class:`Experiment`, no run folder
kept), at the preset's epochs (``--epochs`` overrides them for a quick check). Per dataset one untimed 1-epoch run
first fills the feature cache (``--cache``), so no timed cell pays the extraction; then each (preset, dataset)
runs off and on, in alternating order over ``--rounds`` rounds (interleaved). Recorded per run: wall time, training
time (the trainer's epoch times), base / new / HM top-1 and the final training loss; the two switch settings must
agree to rounding (differences are listed). Results: ``benchmarks/results/suite_shared_prefix.json`` and the
``bench_suite`` section of docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_suite.py                       # CoOp + KgCoOp on the 70-100-class sets
    .venv/bin/python benchmarks/bench_suite.py --presets pocket_b2n pocket_kgcoop_b2n pocket_cocoop_b2n \\
        pocket_maple_b2n pocket_ivlp_b2n pocket_promptsrc_b2n pocket_prograd_b2n pocket_tcp_b2n --datasets all
    .venv/bin/python benchmarks/bench_suite.py --datasets emoji_hands_openmoji --epochs 2 --no-doc   # smoke
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, CpuMonitor, finish_info, fmt_s, machine_info, markdown_table, write_json  # noqa: E402
from doc_sections import write_sections  # noqa: E402

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "bench_suite"
RESULT = RESULTS_DIR / "suite_shared_prefix.json"
#: the suite's 70-100-class sets, where the prompt step dominates a cell (issue 20)
LARGE = ["emoji_food", "emoji_transport", "emoji_plants"]


def cell(backbone, preset: str, dataset: str, shared: bool, cache: str, epochs: int | None) -> dict[str, Any]:
    """One cell through :class:`Experiment`; its wall and training time and results."""
    from ncprompt.config import RunConfig
    from ncprompt.config import preset as get_preset
    from ncprompt.protocols.experiment import Experiment

    cfg = get_preset(preset)
    train = {**cfg.get("train", {}), "shared_prefix": shared, **({"epochs": epochs} if epochs else {})}
    cfg = {**cfg, "run": {**cfg.get("run", {}), "cache_dir": cache, "diagnostics": False},
           "data": {**cfg.get("data", {}), "dataset": dataset}, "train": train}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = Experiment(RunConfig.from_dict(cfg), backbone=backbone).run(Path(tmp) / "run")
        wall = time.perf_counter() - t0
        metrics = Path(tmp) / "run" / "metrics.jsonl"  # none for methods without SGD epochs (linear probe)
        log = [json.loads(x) for x in metrics.read_text().splitlines()] if metrics.is_file() else []
    return {"preset": preset, "dataset": dataset, "shared_prefix": shared, "wall_s": wall,
            "train_s": sum(r["epoch_time_s"] for r in log) if log else wall, "epochs": len(log),
            "base": _top1(res, "base"), "new": _top1(res, "new"), "hm": res.hm,
            "final_loss": log[-1]["loss"] if log else None}


def _top1(res, split: str) -> float | None:
    """top-1 of ``split``; a preset of protocol "all" (the linear probe) has only "all": its top-1 as "base"."""
    s = res.splits.get(split) or (res.splits.get("all") if split == "base" else None)
    return None if s is None else s.top1


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ncprompt.backbones.openclip import load_backbone
    from ncprompt.pocket import suite

    torch.set_num_threads(args.threads)
    logging.getLogger().setLevel(logging.ERROR)
    datasets = list(suite.SUITE) if args.datasets == ["all"] else args.datasets
    info = machine_info(args.threads)
    if args.note:
        info["note"] = args.note
    monitor = CpuMonitor()
    backbone = load_backbone("pocket", device="cpu")
    out: dict[str, Any] = {"presets": args.presets, "datasets": datasets, "epochs": args.epochs,
                           "rounds": args.rounds, "machine": info, "runs": []}
    for dataset in datasets:
        cell(backbone, args.presets[0], dataset, True, args.cache, 1)  # fills the feature cache (untimed)
        for preset in args.presets:
            for r in range(args.rounds):
                for shared in ((False, True) if r % 2 == 0 else (True, False)):
                    res = cell(backbone, preset, dataset, shared, args.cache, args.epochs)
                    out["runs"].append(res)
                    print(f"{preset} {dataset} shared_prefix={shared}: {fmt_s(res['wall_s'])} (train "
                          f"{fmt_s(res['train_s'])}), base {res['base']} new {res['new']}", flush=True)
                    write_json(args.out.with_suffix(".partial.json"), out)
    finish_info(info, monitor)
    return out


def summarise(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (preset, dataset): median wall / train time off and on, their ratio, and the result differences."""
    import statistics

    rows = []
    keys = sorted({(r["preset"], r["dataset"]) for r in data["runs"]}, key=lambda k: (k[0], k[1]))
    for preset, dataset in keys:
        runs = [r for r in data["runs"] if (r["preset"], r["dataset"]) == (preset, dataset)]
        off = [r for r in runs if not r["shared_prefix"]]
        on = [r for r in runs if r["shared_prefix"]]
        if not off or not on:
            continue
        med = {name: {"off": statistics.median(r[name] for r in off), "on": statistics.median(r[name] for r in on)}
               for name in ("wall_s", "train_s")}
        diff = {m: max((abs(a[m] - b[m]) for a, b in zip(off, on) if a[m] is not None and b[m] is not None),
                       default=0.0) for m in ("base", "new", "hm", "final_loss")}
        rows.append({"preset": preset, "dataset": dataset, "median": med,
                     "speedup_wall": med["wall_s"]["off"] / med["wall_s"]["on"],
                     "speedup_train": med["train_s"]["off"] / med["train_s"]["on"], "max_abs_diff": diff,
                     "base": on[0]["base"], "new": on[0]["new"], "hm": on[0]["hm"]})
    return rows


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def section(data: dict[str, Any] | None) -> str:
    lines = ["## Whole pocket cells, shared prefix off / on (`bench_suite.py`)", ""]
    if data is None:
        return "\n".join(lines + ["Not measured yet (command in the script's docstring).", ""])
    info = data["machine"]
    lines += [f"{info['cpu']}, {info['torch_threads']} torch threads, {info['date']}; load average at start "
              f"{info['loadavg_at_start'][0]:.2f}, others' CPU share during the run "
              f"{100 * info.get('cpu_during_run', {}).get('others_share', 0):.0f}%; epochs: "
              f"{data['epochs'] or 'the presets'}; {data['rounds']} interleaved round(s). {info.get('note', '')}", ""]
    rows = [[r["preset"], r["dataset"], fmt_s(r["median"]["wall_s"]["off"]), fmt_s(r["median"]["wall_s"]["on"]),
             f"{r['speedup_wall']:.2f}x", f"{r['speedup_train']:.2f}x", f"{_num(r['base'])} / {_num(r['new'])}",
             "{base:.2f} / {new:.2f} / {final_loss:.1e}".format(**r["max_abs_diff"])] for r in summarise(data)]
    lines += [markdown_table(["preset", "dataset", "cell off", "cell on", "off / on (cell)", "off / on (training)",
                              "base / new top-1 (on)", "max abs diff base / new / loss"], rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["pocket_b2n", "pocket_kgcoop_b2n"])
    p.add_argument("--datasets", nargs="+", default=LARGE, help="suite datasets, or 'all'")
    p.add_argument("--epochs", type=int, default=None, help="override the presets' epochs (quick checks)")
    p.add_argument("--rounds", type=int, default=1, help="off/on pairs per cell (alternating order)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "ncprompt-bench-suite-cache"))
    p.add_argument("--note", help="what else ran on the machine (stored, shown in the docs)")
    p.add_argument("--out", type=Path, default=RESULT)
    p.add_argument("--no-doc", action="store_true", help="do not rewrite the docs section")
    p.add_argument("--doc", action="store_true", help="only rewrite the docs section from the saved JSON")
    a = p.parse_args(argv)
    if a.doc:
        data = json.loads(a.out.read_text()) if a.out.is_file() else None
    else:
        data = run(a)
        write_json(a.out, data)
        a.out.with_suffix(".partial.json").unlink(missing_ok=True)
        print("\n" + section(data))
    if not a.no_doc:
        write_sections(DOC, {SECTION: section(data)})


if __name__ == "__main__":
    main()
