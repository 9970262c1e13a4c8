"""Protocol grids: datasets x methods x seeds, one run folder each, summarised as tables and a plot.

A method spec is a registered method name, optionally with "+npt" (NPT on), e.g. ``coop+npt``.
Finished runs (a results.json in their folder) are skipped, so a killed grid resumes where it
stopped; ``workers > 1`` runs that many runs in parallel processes, each with cores / workers
torch threads.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncprompt.config import RunConfig, merge
from ncprompt.engine.progress import ProgressLog, quiet
from ncprompt.methods.base import options_for


@dataclass(frozen=True)
class MethodSpec:
    label: str
    method: str
    npt: bool
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, spec: str, options: dict[str, dict[str, Any]] | None = None) -> MethodSpec:
        name, _, flag = spec.partition("+")
        if flag not in ("", "npt"):
            raise ValueError(f"method spec {spec!r}: only the '+npt' suffix is known")
        opts = (options or {}).get(name, {})
        return cls(spec, name, flag == "npt", tuple(sorted(opts.items())))


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Run (or reuse) one grid cell; top-level so it can run in a worker process."""
    import torch

    from ncprompt.protocols.experiment import Experiment

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    out = Path(job["run_dir"])
    done = out / "results.json"
    if done.is_file():
        return json.loads(done.read_text())
    cfg = RunConfig.from_dict(job["config"])
    key = json.dumps([cfg.dataset, cfg.root, cfg.dataset_options], sort_keys=True, default=str)
    if key not in _DATASETS:
        from ncprompt.data import get_dataset

        _DATASETS.clear()  # keep one dataset in memory: the grid runs dataset by dataset
        _DATASETS[key] = get_dataset(cfg.dataset, cfg.root, **{"seed": 0, **cfg.dataset_options})
    with quiet():  # a run's epochs go to its train.log; the grid shows one line per run
        return Experiment(cfg, dataset=_DATASETS[key], log=lambda *a: None).run(out)


_DATASETS: dict[str, Any] = {}


def grid_jobs(base: dict[str, Any], datasets: list[str], methods: list[MethodSpec], seeds: list[int],
              out_dir: Path, shots: list[int | None] | None = None) -> list[dict[str, Any]]:
    jobs = []
    shot_list = shots or [base.get("shots", 16)]
    for ds, n, m, seed in ((d, n, m, s) for d in datasets for n in shot_list for m in methods for s in seeds):
        cfg = merge(base, {"dataset": ds, "method": m.method, "method_options": dict(m.options),
                           "train": {"seed": seed}, "npt": {"enabled": m.npt}, "shots": n})
        cfg["method_options"] = options_for(m.method, cfg.get("method_options", {}))
        if m.method == "zeroshot":
            cfg["shots"] = cfg.get("shots") if cfg.get("imbalance") else 0
        cfg["output"] = None
        RunConfig.from_dict(cfg)  # validate before anything runs
        sub = f"shots{n}/" if len(shot_list) > 1 else ""
        jobs.append({"run_dir": str(out_dir / ds / f"{sub}{m.label}" / f"seed{seed}"), "config": cfg,
                     "dataset": ds, "label": m.label, "seed": seed, "shots": n})
    return jobs


def run_grid(base: dict[str, Any], datasets: list[str], methods: list[MethodSpec], seeds: list[int],
             out_dir: str | Path, workers: int = 1, log: Callable[[str], None] = print,
             shots: list[int | None] | None = None) -> list[dict[str, Any]]:
    """Run every (dataset, shots, method, seed) cell; returns one summary row per cell."""
    out = Path(out_dir)
    jobs = grid_jobs(base, datasets, methods, seeds, out, shots)
    rows: list[dict[str, Any]] = []
    threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    plog = ProgressLog("grid", len(jobs), out / "grid.log", unit="run")
    reused = {job["run_dir"] for job in jobs if (Path(job["run_dir"]) / "results.json").is_file()}

    def record(job: dict[str, Any], res: dict[str, Any]) -> None:
        row = {"dataset": job["dataset"], "shots": job["shots"], "method": job["label"], "seed": job["seed"]}
        for k in ("all", "base", "new"):
            if k in res:
                row[k] = res[k]["top1"]
                for g, v in (res[k].get("groups") or {}).items():
                    row[f"{k}_{g}"] = v
        if "hm" in res:
            row["hm"] = res["hm"]
        for name, rep in (res.get("targets") or {}).items():
            row[f"target:{name}"] = rep["top1"]
        row["seconds"] = res.get("seconds")
        rows.append(row)
        shown = ", ".join(f"{k} {row[k]:.1f}" for k in ("all", "base", "new", "hm") if k in row)
        took = "reused" if job["run_dir"] in reused else f"{res.get('seconds', 0):.0f} s"
        plog.step(f"run {len(rows)}/{len(jobs)} {job['dataset']} {job['label']} seed {job['seed']}: {shown} ({took})",
                  ran=job["run_dir"] not in reused)

    if workers <= 1:
        for job in jobs:
            record(job, run_one(job))
    else:
        for job in jobs:
            job["threads"] = threads
        with cf.ProcessPoolExecutor(max_workers=workers) as pool:
            for job, res in zip(jobs, pool.map(run_one, jobs)):
                record(job, res)
    plog.close()
    write_tables(rows, out)
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds of each (dataset, method), plus an "average" row per method."""
    metrics = _metric_columns(rows)
    out = []
    multi_shot = len({r.get("shots") for r in rows}) > 1
    keys = list(dict.fromkeys((r["dataset"], r.get("shots"), r["method"]) for r in rows))
    for ds, n, m in keys:
        cell = [r for r in rows if r["dataset"] == ds and r["method"] == m and r.get("shots") == n]
        s: dict[str, Any] = {"dataset": f"{ds} ({n} shots)" if multi_shot else ds, "method": m,
                             "seeds": len(cell)}
        for k in metrics:
            v = np.array([r[k] for r in cell if k in r], dtype=float)
            if len(v):
                s[k] = float(v.mean())
                s[f"{k}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        out.append(s)
    for m in dict.fromkeys(r["method"] for r in rows):
        cells = [s for s in out if s["method"] == m]
        avg: dict[str, Any] = {"dataset": "average", "method": m, "seeds": cells[0]["seeds"]}
        for k in metrics:
            vals = [c[k] for c in cells if k in c]
            if vals:
                avg[k] = float(np.mean(vals))
        if "base" in avg and "new" in avg:  # HM of the averages, as the literature reports it
            avg["hm"] = 2 * avg["base"] * avg["new"] / max(avg["base"] + avg["new"], 1e-9)
        out.append(avg)
    return out


def _metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    cols = [k for k in ("all", "base", "new", "hm") if any(k in r for r in rows)]
    cols += [k for k in ("base_head", "base_middle", "base_tail", "all_head", "all_middle", "all_tail")
             if any(k in r for r in rows)]
    cols += sorted({k for r in rows for k in r if k.startswith("target:")})
    return cols


def markdown_table(summary: list[dict[str, Any]]) -> str:
    metrics = _metric_columns(summary)
    lines = ["| dataset | method | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for s in summary:
        cells = []
        for k in metrics:
            if k not in s:
                cells.append("")
            elif s.get(f"{k}_std") and not math.isclose(s[f"{k}_std"], 0.0, abs_tol=1e-9):
                cells.append(f"{s[k]:.2f} ± {s[f'{k}_std']:.2f}")
            else:
                cells.append(f"{s[k]:.2f}")
        lines.append(f"| {s['dataset']} | {s['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(rows: list[dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    summary = summarise(rows)
    scols = list(dict.fromkeys(k for s in summary for k in s))
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=scols)
        w.writeheader()
        w.writerows(summary)
    (out / "summary.md").write_text(markdown_table(summary))
    plot_summary(summary, out / "summary.png")


def plot_summary(summary: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars per dataset and metric, zoomed y-axis with values (see analysis.plots.summary_plot)."""
    from ncprompt.analysis.plots import summary_plot

    summary_plot(summary, path)
