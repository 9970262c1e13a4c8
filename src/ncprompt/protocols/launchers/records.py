"""What a grid folder records about its cells and where they were sent.

* ``grid.json``: the cells of the grid's last invocation (each cell's job: absolute run folder, full config, dataset,
  method label, seed, shots) and its ``grid`` section (launcher settings), rewritten atomically each time the
  grid is started. ``ncprompt protocol --status GRID`` and ``--resubmit-failed`` read it.
* ``jobs.jsonl``: one line per submission or outcome, appended: ``{"run_dir", "launcher", "job_id", "time",
  ...}`` (submitit: its log folder and cluster; Ray: the driver's host and pid, then ``state`` done / failed
  with the error). The last line of a cell is its current record.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ncprompt.config import ConfigError

GRID_RECORD = "grid.json"
JOBS_RECORD = "jobs.jsonl"


def write_grid_record(out: Path, jobs: list[dict[str, Any]], section: dict[str, Any]) -> None:
    """Record the grid's cells and launcher settings (atomically)."""
    from ncprompt.utils import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    # absolute run folders: --status may be asked from another working directory
    cells = [{**{k: v for k, v in job.items() if k != "threads"}, "run_dir": str(Path(job["run_dir"]).absolute())}
             for job in jobs]
    blob = json.dumps({"grid": section, "cells": cells}, indent=1) + "\n"
    atomic_write_bytes(out / GRID_RECORD, blob.encode())


def read_grid_record(out: Path) -> dict[str, Any]:
    """The grid folder's ``grid.json``; a :class:`ConfigError` when the folder holds none."""
    f = Path(out) / GRID_RECORD
    if not f.is_file():
        raise ConfigError(f"{out} is not a grid folder (no {GRID_RECORD}); give the --output of `ncprompt protocol`")
    try:
        data = json.loads(f.read_text())
        assert isinstance(data, dict) and isinstance(data.get("cells"), list)
    except (OSError, ValueError, AssertionError):
        raise ConfigError(f"{f} cannot be read; rerun the `ncprompt protocol` command that made the grid") from None
    return data


def append_records(out: Path, records: list[dict[str, Any]]) -> None:
    """Append launcher records (one JSON line each, one write, flushed to disk)."""
    if not records:
        return
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    text = "".join(json.dumps({"time": stamp, **r}) + "\n" for r in records)
    with open(Path(out) / JOBS_RECORD, "a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def last_records(out: Path) -> dict[str, dict[str, Any]]:
    """The latest record of each run folder (later lines update earlier ones; a torn last line is skipped)."""
    f = Path(out) / JOBS_RECORD
    latest: dict[str, dict[str, Any]] = {}
    if not f.is_file():
        return latest
    for line in f.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "run_dir" in rec:
            latest[rec["run_dir"]] = {**latest.get(rec["run_dir"], {}), **rec}
    return latest


def this_host() -> str:
    return socket.gethostname()


def last_line(text: str) -> str:
    """The last non-empty line of ``text`` (of a log or a traceback: the error itself), stripped."""
    lines = [x.strip() for x in text.strip().splitlines() if x.strip() and not set(x.strip()) <= {"-"}]
    return lines[-1] if lines else ""
