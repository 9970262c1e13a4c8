"""Grid cells as Ray tasks (``grid.launcher: ray``): one task per cell with its CPU/GPU needs.

Against a running cluster (``grid.ray.address``: ``auto``, ``ray://HOST:10001``) or a local Ray started for the
grid (address unset; ``num_cpus`` of this machine). Each task runs :func:`ncprompt.protocols.grid.run_one`;
Ray tasks belong to this driver, so the grid waits for them. Each outcome (done / failed with the error's
last line) is appended to ``jobs.jsonl``, with the driver's host and pid for ``--status`` while it runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ncprompt.config.grid import RaySection
from ncprompt.protocols.launchers.records import append_records, last_line, this_host


def run_ray(s: RaySection, jobs: list[dict[str, Any]], out: Path,
            finished: Callable[[dict[str, Any], str | None], None]) -> bool:
    """Run ``jobs`` as Ray tasks and report each as it ends; always waits (True)."""
    from ncprompt.protocols.grid import run_one
    from ncprompt.protocols.launchers import require

    ray = require("ray")
    started = not ray.is_initialized()
    if started:
        local = {"num_cpus": s.num_cpus, "include_dashboard": False}
        ray.init(**({"address": s.address} if s.address else local), log_to_driver=False)
    try:
        task = ray.remote(num_cpus=s.cpus_per_task, num_gpus=s.gpus_per_task, max_retries=0)(run_one)
        refs: dict[Any, dict[str, Any]] = {}
        for job in jobs:
            job["threads"] = max(1, round(s.cpus_per_task))
            refs[task.remote(job)] = job
        driver = {"launcher": "ray", "host": this_host(), "pid": os.getpid()}
        append_records(out, [{"run_dir": job["run_dir"], "state": "submitted", "job_id": ref.task_id().hex(),
                              **driver} for ref, job in refs.items()])
        print(f"submitted {len(jobs)} cell(s) as Ray tasks ({s.cpus_per_task:g} CPU, {s.gpus_per_task:g} GPU each)")
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                job, error = refs[ref], None
                try:
                    ray.get(ref)
                except ray.exceptions.RayError as e:
                    error = last_line(str(e)) or type(e).__name__
                append_records(out, [{"run_dir": job["run_dir"], "state": "failed" if error else "done",
                                      "error": error, **driver}])
                finished(job, error)
    finally:
        if started:
            ray.shutdown()
    return True
