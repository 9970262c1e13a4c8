"""Protocol grids: datasets x methods x seeds, one run folder each, summarised as tables and a plot.

A method spec is a registered method name, optionally with "+npt" (NPT on), e.g. ``coop+npt``.
Cells are deduplicated (a dataset, method or seed given twice runs once). Before anything runs,
every cell's config is validated and checked against its run folder; when a cell comes to run, a
finished one with the same fingerprint and the same inputs (weights and data content, the run
folder's inputs.json) is reused, and one with other settings or inputs stops the grid with a
one-line error naming what differs (``--no-resume`` starts the cells over). So a killed grid
resumes where it stopped, and a rerun with other settings, weights or data never reports old
results. ``workers > 1`` runs cells in parallel
processes (cores / workers torch threads each) that die with the grid's process.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncprompt.analysis.names import display_name
from ncprompt.analysis.runs import run_setting
from ncprompt.config import ConfigError, RunConfig, merge_layers
from ncprompt.config.grid import GridSection
from ncprompt.engine.progress import ProgressLog, quiet
from ncprompt.engine.results import RunResult, read_results
from ncprompt.engine.run_folder import RunFolder


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
            raise ConfigError(f"method spec {spec!r}: only the '+npt' suffix is known (e.g. coop+npt)")
        opts = (options or {}).get(name, {})
        if not isinstance(opts, dict):
            raise ConfigError(f"per_method.{name}: must be a mapping of method options, got {opts!r}")
        return cls(spec, name, flag == "npt", tuple(sorted(opts.items())))


def cell_experiment(job: dict[str, Any]) -> tuple[RunConfig, Any]:
    """(the cell's config, its :class:`~ncprompt.protocols.experiment.Experiment`), the dataset kept in memory
    for the next cell of the same dataset (a worker runs the grid dataset by dataset)."""
    from ncprompt.protocols.experiment import Experiment

    cfg = RunConfig.from_dict(job["config"])
    data = cfg.data
    from ncprompt.data import dataset_options

    options = dataset_options(data.dataset, data.options, cfg.seed)
    key = repr((job["dataset"], data.dataset, data.root, sorted(options.items())))
    if key not in _DATASETS:
        from dataclasses import replace

        from ncprompt.data import get_dataset

        _DATASETS.clear()  # keep one dataset in memory: the grid runs dataset by dataset
        # the grid's name for it (NAME of NAME=ROOT) is the one results.json and the tables show
        _DATASETS[key] = replace(get_dataset(data.dataset, data.root, **options), name=job["dataset"])
    return cfg, Experiment(cfg, dataset=_DATASETS[key])


def run_one(job: dict[str, Any]) -> RunResult:
    """Run (or reuse) one grid cell; top-level so it can run in a worker process."""
    import torch

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    folder = RunFolder(job["run_dir"])
    folder.acquire()
    try:
        with quiet():  # a run's epochs go to its train.log; the grid shows one line per run
            cfg, exp = cell_experiment(job)
            if job.get("resume", True) and folder.finished(cfg, exp.inputs()):  # same settings, weights and data
                return read_results(folder.path)
            res = exp.run(resume=job.get("resume", True), folder=folder)
        assert isinstance(res, RunResult)
        return res
    finally:
        folder.release()


_DATASETS: dict[str, Any] = {}


def grid_jobs(base: dict[str, Any], datasets: list[str], methods: list[MethodSpec], seeds: list[int],
              out_dir: Path, shots: list[int | None] | None = None, resume: bool = True) -> list[dict[str, Any]]:
    """One job per distinct (dataset, shots, method, seed) cell, each config validated and its run
    folder checked (read only) before any job runs. A dataset is ``NAME`` (registered) or ``NAME=ROOT``
    (its own root; an unregistered NAME names an image folder or CSV file, :mod:`ncprompt.data.specs`)."""
    from ncprompt.data import check_dataset_args
    from ncprompt.data.specs import parse_dataset_specs

    base = merge_layers(base)
    specs = {s.label: s for s in parse_dataset_specs(list(dict.fromkeys(datasets)))}
    shot_list = list(dict.fromkeys(shots or [base.get("data", {}).get("shots", 16)]))
    datasets, seeds = list(specs), list(dict.fromkeys(seeds))
    methods = list({m.label: m for m in reversed(methods)}.values())[::-1]  # first of each label
    # every cell is one tracked run (train.report_to), grouped by the grid: its folder's name unless set
    group = (base.get("train") or {}).get("report_group") or out_dir.resolve().name
    jobs = []
    for ds, n, m, seed in ((d, n, m, s) for d in datasets for n in shot_list for m in methods for s in seeds):
        data = {"dataset": specs[ds].dataset, "shots": n, **({"root": specs[ds].root} if specs[ds].root else {})}
        cell = {"data": data, "method": {"name": m.method, **dict(m.options)},
                "train": {"seed": seed, "report_group": group}, "npt": {"enabled": m.npt}, "run": {"output": None}}
        merged = merge_layers(base, cell)
        sub = f"shots{n}/" if len(shot_list) > 1 else ""
        run_dir = out_dir / ds / f"{sub}{m.label}" / f"seed{seed}"
        cfg = RunConfig.from_dict(merged, where=f"grid cell {ds} {m.label} seed {seed}")
        check_dataset_args(cfg.data.dataset, cfg.data.root, cfg.data.options)
        RunFolder(run_dir).check(cfg, resume)
        jobs.append({"run_dir": str(run_dir), "config": cfg.to_dict(), "dataset": ds, "label": m.label,
                     "seed": seed, "shots": n, "resume": resume})
    return jobs


def _die_with_parent(parent: int) -> None:
    """Worker initialiser: the kernel kills this process when the grid's process dies
    (PR_SET_PDEATHSIG), and a watchdog thread exits when it is re-parented (other systems)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def run_grid(base: dict[str, Any], datasets: list[str], methods: list[MethodSpec], seeds: list[int],
             out_dir: str | Path, workers: int = 1, log: Callable[[str], None] | None = None,
             shots: list[int | None] | None = None, resume: bool = True,
             launcher: GridSection | None = None) -> list[dict[str, Any]]:
    """Run every distinct (dataset, shots, method, seed) cell; returns one summary row per cell (none when a
    launcher submitted the cells without waiting). ``launcher``: where the cells run (the ``grid`` section;
    default this machine, ``workers`` processes); every launcher runs :func:`run_one`."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output {out} is an existing file; give a folder for the grid")
    launcher = launcher or GridSection()
    if launcher.launcher != "local":  # tasks may run elsewhere (another working directory)
        out = out.resolve()
    jobs = grid_jobs(base, datasets, methods, seeds, out, shots, resume)
    from ncprompt.protocols.launchers.records import write_grid_record

    write_grid_record(out, jobs, launcher.model_dump(mode="json"))  # for --status and --resubmit-failed
    _DATASETS.clear()  # a dataset is read again by each grid: its files may have changed since the last one
    rows: list[dict[str, Any]] = []
    threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    plog = ProgressLog("grid", len(jobs), out / "grid.log", unit="run")
    reused = {job["run_dir"] for job in jobs if resume and (Path(job["run_dir"]) / "results.json").is_file()}

    def record(job: dict[str, Any], res: RunResult) -> None:
        row = cell_row(job, res)
        rows.append(row)
        shown = ", ".join(f"{k} {row[k]:.1f}" for k in ("all", "base", "new", "hm") if k in row)
        took = "reused" if job["run_dir"] in reused else f"{res.seconds or 0:.0f} s"
        line = f"run {len(rows)}/{len(jobs)} {job['dataset']} {job['label']} seed {job['seed']}: {shown} ({took})"
        plog.step(line, ran=job["run_dir"] not in reused)
        if log is not None:
            log(line)

    if launcher.launcher != "local":
        from ncprompt.protocols.launchers import launch_cells

        if not launch_cells(launcher, jobs, out, record):  # submitted, not waited for: --status writes the tables
            plog.close()
            return []
    elif workers <= 1:
        for job in jobs:
            record(job, run_one(job))
    else:
        for job in jobs:
            job["threads"] = threads
        from ncprompt.engine.distributed import grid_pool_kwargs  # several GPUs: spawned workers, one device each

        pool = cf.ProcessPoolExecutor(max_workers=workers,
                                      **grid_pool_kwargs(workers, _die_with_parent, (os.getpid(),)))
        try:
            for job, res in zip(jobs, pool.map(run_one, jobs)):
                record(job, res)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.kill()
            raise
        pool.shutdown()
    order = {(j["dataset"], j["shots"], j["label"], j["seed"]): i for i, j in enumerate(jobs)}
    rows.sort(key=lambda r: order[(r["dataset"], r["shots"], r["method"], r["seed"])])  # launchers: any order
    for w in finish_grid(rows, out, jobs):
        plog.note(w)
        if log is not None:
            log(w)
    plog.close()
    return rows


def cell_row(job: dict[str, Any], res: RunResult) -> dict[str, Any]:
    """A cell's row of runs.csv: dataset, shots, method, seed, run folder, setting (:mod:`ncprompt.config.setting`),
    each split's top-1 (and groups), hm, targets."""
    row: dict[str, Any] = {"dataset": job["dataset"], "shots": job["shots"], "method": job["label"],
                           "seed": job["seed"], "run": job["run_dir"],
                           "setting": run_setting(Path(job["run_dir"]) / "results.json", res.to_dict())}
    for k, split in res.splits.items():
        row[k] = split.top1
        for g, v in (split.groups or {}).items():
            row[f"{k}_{g}"] = v
    if res.hm is not None:
        row["hm"] = res.hm
    for name, rep in res.targets.items():
        row[f"target:{name}"] = rep.top1
    row["seconds"] = res.seconds
    return row


def finish_grid(rows: list[dict[str, Any]], out: Path, jobs: list[dict[str, Any]]) -> list[str]:
    """The grid's summary tables and plot, and the paper tables of its cells (not of other runs in the folder);
    returns the warnings of seeds counted once (a setting run twice)."""
    write_tables(rows, out)
    from ncprompt.analysis.tables import collect_rows, write_paper_tables

    # the paper tables of this grid's cells (not of other runs left in the folder)
    repeated: list[str] = []
    write_paper_tables(collect_rows([Path(job["run_dir"]) for job in jobs]), out / "tables", repeated)
    return repeated  # e.g. zero-shot CLIP at several shots: one setting (it reads no training images)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over the seeds of each (dataset, shots, method) cell of one setting (runs of other
    settings are never pooled: :mod:`ncprompt.config.setting`), plus an "average" row per method; a few-shot
    sweep (several shots) gets an average per method and number of shots, never across shots."""
    from ncprompt.config.setting import setting_key

    metrics = _metric_columns(rows)
    out = []
    multi_shot = len({r.get("shots") for r in rows}) > 1
    key = {id(r): (r["dataset"], r.get("shots"), r["method"], setting_key(r.get("setting") or {})) for r in rows}
    for k in dict.fromkeys(key.values()):
        ds, n, m, _ = k
        cell = [r for r in rows if key[id(r)] == k]
        s: dict[str, Any] = {"dataset": f"{ds} ({n} shots)" if multi_shot else ds, "method": m,
                             "seeds": len(cell), **({"shots": n} if multi_shot else {})}
        for k in metrics:
            v = np.array([r[k] for r in cell if k in r], dtype=float)
            if len(v):
                s[k] = float(v.mean())
                s[f"{k}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        out.append(s)
    per_dataset = list(out)
    for m, n in dict.fromkeys((r["method"], r.get("shots")) if multi_shot else (r["method"], None) for r in rows):
        cells = [s for s in per_dataset if s["method"] == m and (not multi_shot or s["shots"] == n)]
        avg: dict[str, Any] = {"dataset": f"average ({n} shots)" if multi_shot else "average", "method": m,
                               "seeds": cells[0]["seeds"]}
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
        lines.append(f"| {s['dataset']} | {display_name(s['method'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(rows: list[dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    from ncprompt.config.setting import setting_id

    flat = [{**{k: v for k, v in r.items() if k != "setting"}, "setting_id": setting_id(r.get("setting") or {})}
            for r in rows]
    cols = list(dict.fromkeys(k for r in flat for k in r))
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(flat)
    summary = summarise(rows)
    scols = list(dict.fromkeys(k for s in summary for k in s))
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=scols)
        w.writeheader()
        w.writerows(summary)
    (out / "summary.md").write_text(markdown_table(summary))
    if len({r.get("shots") for r in rows}) > 1:  # a few-shot sweep: accuracy against shots, as CoOp's figure
        from ncprompt.analysis.plots import few_shot_plot

        few_shot_plot(rows, out / "summary.png")
    else:
        plot_summary(summary, out / "summary.png")


def plot_summary(summary: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars per dataset and metric, zoomed y-axis with values (see analysis.plots.summary_plot)."""
    from ncprompt.analysis.plots import summary_plot

    summary_plot(summary, path)
