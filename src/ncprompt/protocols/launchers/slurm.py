"""Grid cells as one SLURM job array through submitit (``grid.launcher: submitit``).

Each cell is one array task running :func:`ncprompt.protocols.grid.run_one` with ``cpus_per_cell`` torch threads;
submitit pickles the call into ``GRID/submitit/`` (with each task's stdout/stderr logs and result). The same code
runs without a cluster with ``grid.slurm.cluster: local`` (one process per cell on this machine; the tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ncprompt.config.grid import SlurmSection
from ncprompt.protocols.launchers.records import append_records, last_line

#: the folder of submitit's pickles and logs inside the grid folder
FOLDER = "submitit"


def executor(s: SlurmSection, out: Path) -> Any:
    """A submitit executor with one cell's resources (SLURM keys are ignored by the local executor)."""
    from ncprompt.protocols.launchers import LaunchError, require

    submitit = require("submitit")
    try:
        ex = submitit.AutoExecutor(folder=out / FOLDER, cluster=s.cluster)
    except RuntimeError as e:  # no srun / sbatch here
        raise LaunchError(f"--launcher submitit: {e} (without SLURM, --slurm-cluster local runs the array's cells "
                          "on this machine)") from None
    params: dict[str, Any] = {"name": f"ncprompt-{out.name}", "timeout_min": s.time_min,
                              "cpus_per_task": s.cpus_per_cell, "gpus_per_node": s.gpus_per_cell,
                              "slurm_array_parallelism": s.array_parallelism,
                              "slurm_additional_parameters": dict(s.sbatch), "slurm_setup": list(s.setup),
                              "local_setup": list(s.setup)}
    if s.mem_gb is not None:
        params["mem_gb"] = s.mem_gb
    for key in ("partition", "account"):
        if getattr(s, key):
            params[f"slurm_{key}"] = getattr(s, key)
    ex.update_parameters(**params)
    return ex


def run_submitit(s: SlurmSection, jobs: list[dict[str, Any]], out: Path,
                 finished: Callable[[dict[str, Any], str | None], None]) -> bool:
    """Submit ``jobs`` as one array, record the job ids, and (``s.wait``) report each as it ends."""
    from ncprompt.protocols.grid import run_one

    ex = executor(s, out)
    for job in jobs:
        job["threads"] = s.cpus_per_cell
    handles = ex.map_array(run_one, jobs)
    append_records(out, [{"run_dir": job["run_dir"], "launcher": "submitit", "state": "submitted",
                          "job_id": str(h.job_id), "folder": str(out / FOLDER),
                          "cluster": s.cluster} for job, h in zip(jobs, handles)])
    ids = list(dict.fromkeys(str(h.job_id).split("_")[0] for h in handles))  # a SLURM array: one id
    shown = ", ".join(ids[:4]) + (" ..." if len(ids) > 4 else "")
    print(f"submitted {len(jobs)} cell(s) to {s.cluster} (job {shown}); logs in {out / FOLDER}; follow with "
          f"`ncprompt protocol --status {out}`")
    if not s.wait:
        return False
    pending = dict(enumerate(handles))
    poll = 1.0 if s.cluster == "local" else 30.0
    while pending:
        for i in [i for i, h in pending.items() if h.done()]:
            h = pending.pop(i)
            error = h.exception()
            finished(jobs[i], None if error is None else _last_line(str(error)))
        if pending:
            time.sleep(poll)
    return True


def _last_line(text: str) -> str:
    """The last non-empty line of a task's error: of the traceback submitit puts between dashed lines (a failed
    cell), else of the stderr it quotes (a task that ended without a result: killed, out of time or memory)."""
    parts = text.split("-" * 22)
    body = parts[1] if len(parts) > 1 else text
    return last_line(body) or "failed"
