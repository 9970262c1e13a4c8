"""Grid cells on a cluster's own engine: a SLURM job array through submitit, or Ray tasks.

A launcher is a thin layer over one function, :func:`ncprompt.protocols.grid.run_one` (one cell: check its
run folder, run or resume it, write results.json), so a local grid, a SLURM array task and a Ray task run the
same code. :func:`launch_cells` keeps the local grid's semantics: every cell's config was checked against its
run folder when the jobs were built (changed cells refused); finished cells are checked (weights and data,
``inputs.json``) and reused here, and cells another task still runs are refused, all before anything is
submitted. Job ids go to ``jobs.jsonl`` in the grid folder (:mod:`.records`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ncprompt.config import ConfigError
from ncprompt.config.grid import GridSection
from ncprompt.protocols.launchers.records import append_records

#: per launcher: the module that imports it and the pyproject extra that installs it
EXTRAS = {"submitit": "slurm", "ray": "ray"}


class LaunchError(ConfigError):
    """Cells a launcher could not run (or refused to submit); the message says what to do."""


def require(module: str) -> Any:
    """Import a launcher's package, or a one-line error naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS.get(module, module)
        raise LaunchError(f"the {module} launcher needs the {module} package: pip install 'ncprompt[{extra}]'") \
            from None


def launch_cells(section: GridSection, jobs: list[dict[str, Any]], out: Path,
                 on_done: Callable[[dict[str, Any], Any], None]) -> bool:
    """Run ``jobs`` on ``section.launcher``, calling ``on_done(job, RunResult)`` as each cell finishes (finished
    cells first, reused). True when every cell finished; False when the cells were submitted without waiting.
    Raises :class:`LaunchError` naming the failed cells once the others are done."""
    from ncprompt.engine.results import read_results
    from ncprompt.protocols.grid import run_one
    from ncprompt.protocols.launchers.status import cell_states

    busy = [s for s in cell_states(out, jobs) if s.state in ("running", "queued")]
    if busy:
        shown = ", ".join(f"{s.name} ({s.state}{', job ' + s.job_id if s.job_id else ''})" for s in busy[:3])
        raise LaunchError(f"{len(busy)} cell(s) of this grid are still running or queued: {shown}; wait for them "
                          f"(`ncprompt protocol --status {out}`) or cancel them first")
    todo = []
    for job in jobs:
        if job.get("resume", True) and (Path(job["run_dir"]) / "results.json").is_file():
            on_done(job, run_one(job))  # the same check and reuse as a local grid (other inputs: refused)
        else:
            todo.append(job)
    if not todo:
        return True
    runner = LAUNCHERS[section.launcher]
    failed: list[tuple[dict[str, Any], str]] = []

    def finished(job: dict[str, Any], error: str | None) -> None:
        if error is None:
            on_done(job, read_results(job["run_dir"]))
        else:
            failed.append((job, error))

    waited = runner(section, todo, out, finished)
    if failed:
        first = failed[0]
        raise LaunchError(f"{len(failed)} of {len(todo)} submitted cell(s) failed, e.g. {cell_name(first[0])}: "
                          f"{first[1]}; see `ncprompt protocol --status {out}`, then resubmit them with "
                          f"`ncprompt protocol --status {out} --resubmit-failed`")
    return waited


def cell_name(job: dict[str, Any]) -> str:
    """``dataset method seed N`` (with the shots when the grid sweeps them)."""
    shots = f" {job['shots']} shots" if "/shots" in job["run_dir"].replace("\\", "/") else ""
    return f"{job['dataset']}{shots} {job['label']} seed {job['seed']}"


def _submitit(section: GridSection, jobs: list[dict[str, Any]], out: Path,
              finished: Callable[[dict[str, Any], str | None], None]) -> bool:
    from ncprompt.protocols.launchers.slurm import run_submitit

    return run_submitit(section.slurm, jobs, out, finished)


def _ray(section: GridSection, jobs: list[dict[str, Any]], out: Path,
         finished: Callable[[dict[str, Any], str | None], None]) -> bool:
    from ncprompt.protocols.launchers.ray_tasks import run_ray

    return run_ray(section.ray, jobs, out, finished)


#: launcher name -> runner(section, jobs, out, finished(job, error or None)) -> waited for every cell
LAUNCHERS: dict[str, Callable[..., bool]] = {"submitit": _submitit, "ray": _ray}

__all__ = ["LAUNCHERS", "LaunchError", "append_records", "cell_name", "launch_cells", "require"]
