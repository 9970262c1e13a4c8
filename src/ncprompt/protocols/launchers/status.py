"""``ncprompt protocol --status GRID``: each cell done / running / queued / failed / missing.

Read from the run folders and the launcher's records, in this order:

* done: the cell's ``results.json`` exists;
* running: another process holds the run folder's lock (``fcntl``), or the launcher says so (SLURM: ``sacct``
  through submitit; submitit's local executor: its process is alive; Ray: the driver is alive);
* queued: SLURM has the task pending;
* failed: the launcher reports an error (submitit's result pickle, a finished SLURM state without a result,
  Ray's recorded error), or the cell started (its folder holds run files) and nothing runs it now; the detail
  is the error's or the log's last line (submitit's task stderr, else the run's ``train.log``);
* missing: never started.

``--resubmit-failed`` submits the failed cells again with the grid's recorded launcher (they resume from their
checkpoints), and once every cell is done the grid's summary and tables are written (as the grid itself does).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ncprompt.protocols.launchers.records import last_line, last_records, read_grid_record, this_host

STATES = ("done", "running", "queued", "failed", "missing")


@dataclass
class CellState:
    job: dict[str, Any]
    state: str
    detail: str = ""
    job_id: str = ""

    @property
    def name(self) -> str:
        from ncprompt.protocols.launchers import cell_name

        return cell_name(self.job)


def cell_states(out: Path, jobs: list[dict[str, Any]]) -> list[CellState]:
    """The state of each of ``jobs`` (cells of the grid folder ``out``)."""
    records = last_records(out)
    return [_state(job, records.get(job["run_dir"], {})) for job in jobs]


def grid_status(out: Path) -> list[CellState]:
    """The state of every cell of the grid folder ``out`` (its ``grid.json``)."""
    return cell_states(out, read_grid_record(out)["cells"])


def _state(job: dict[str, Any], rec: dict[str, Any]) -> CellState:
    run = Path(job["run_dir"])
    job_id = str(rec.get("job_id", ""))
    if (run / "results.json").is_file():
        return CellState(job, "done", job_id=job_id)
    if run_locked(run):
        return CellState(job, "running", job_id=job_id)
    said, detail = _launcher_state(rec) if rec else (None, "")
    if said in ("running", "queued"):
        return CellState(job, said, detail, job_id)
    started = run.is_dir() and any(p.name != ".lock" for p in run.iterdir())
    if said == "failed" or started:
        log = run / "train.log"
        detail = detail or (last_line(log.read_text(errors="replace")) if log.is_file() else "") or \
            "stopped before finishing (no error recorded)"
        return CellState(job, "failed", detail, job_id)
    return CellState(job, "missing", job_id=job_id)


def run_locked(run: Path, locks: str = "/proc/locks") -> bool:
    """True when a process holds the run folder's lock, read from the kernel's lock table (``/proc/locks``: the
    lock file's device and inode) without touching the lock, which a starting cell may be about to take; where
    there is no such table, when the pid recorded in the lock file is alive."""
    f = run / ".lock"
    if not f.is_file():
        return False
    st = f.stat()
    try:
        table = Path(locks).read_text()
    except OSError:
        head = f.read_text(errors="replace").split()
        return bool(head) and head[0].isdigit() and _pid_alive(int(head[0]), "")
    for line in table.splitlines():
        for field in line.split()[4:6]:  # "1: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE START END"
            dev = field.split(":")
            if len(dev) == 3 and dev[2].isdigit() and int(dev[2]) == st.st_ino and \
                    (int(dev[0], 16), int(dev[1], 16)) == (os.major(st.st_dev), os.minor(st.st_dev)):
                return True
    return False


def _pid_alive(pid: int, marker: str) -> bool:
    """Whether process ``pid`` lives on this host and its command line mentions ``marker``."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, OverflowError):
        return False
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return True  # no /proc: trust the pid


def _launcher_state(rec: dict[str, Any]) -> tuple[str | None, str]:
    """(running / queued / failed / None when the launcher does not know, detail) from a cell's last record."""
    if rec.get("launcher") == "ray":
        if rec.get("state") == "failed":
            return "failed", str(rec.get("error") or "the Ray task failed")
        if rec.get("state") == "submitted":
            if rec.get("host") != this_host() or _pid_alive(int(rec.get("pid", 0)), "python"):
                return "running", ""
            return "failed", f"the Ray driver (pid {rec.get('pid')}) stopped before this cell finished"
        return None, ""
    if rec.get("launcher") == "submitit":
        return _submitit_state(rec)
    return None, ""


def _submitit_state(rec: dict[str, Any]) -> tuple[str | None, str]:
    from submitit.core.utils import JobPaths

    paths = JobPaths(rec["folder"], rec["job_id"], 0)
    stderr = last_line(paths.stderr.read_text(errors="replace")) if paths.stderr.is_file() else ""
    if paths.result_pickle.is_file():
        try:
            with open(paths.result_pickle, "rb") as f:
                outcome, value = pickle.load(f)  # submitit's own record of the task, in our grid folder
        except (OSError, ValueError, pickle.UnpicklingError, EOFError):
            return None, stderr
        return ("failed", last_line(str(value)) or stderr) if outcome == "error" else (None, "")
    if rec.get("cluster") == "local":  # the local executor's job id is its controller's pid
        alive = _pid_alive(int(str(rec["job_id"]).split("_")[0]), "submitit")
        return ("running", "") if alive else ("failed", stderr or "the task ended without a result (killed?)")
    import submitit

    state = str(submitit.SlurmJob(rec["folder"], rec["job_id"]).state).upper()
    if state in ("PENDING", "REQUEUED", "CONFIGURING", "SUSPENDED", "RESV_DEL_HOLD", "REQUEUE_HOLD"):
        return "queued", state.lower()
    if state in ("RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"):
        return "running", ""
    if state in ("UNKNOWN", "READY"):
        return None, stderr
    return "failed", f"SLURM state {state}" + (f": {stderr}" if stderr else "")


def format_status(out: Path, states: list[CellState]) -> str:
    """A count per state, then one line per cell (failed cells with their last log line)."""
    counts = {s: sum(c.state == s for c in states) for s in STATES}
    head = f"{out}: {len(states)} cell(s): " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    width = max((len(c.name) for c in states), default=0)
    lines = [head]
    for c in states:
        job = f"  job {c.job_id}" if c.job_id else ""
        detail = f"  {c.detail}" if c.detail and c.state != "done" else ""
        lines.append(f"  {c.state:8s} {c.name:{width}s}{job}{detail}")
    return "\n".join(lines)


def status_command(out: str | Path, resubmit_failed: bool = False) -> int:
    """``ncprompt protocol --status GRID [--resubmit-failed]``: print each cell's state (0 whatever they are);
    with every cell done, write the grid's summary and tables."""
    from ncprompt.config.grid import GridSection

    out = Path(out)
    record = read_grid_record(out)
    states = grid_status(out)
    print(format_status(out, states))
    failed = [c.job for c in states if c.state == "failed"]
    if resubmit_failed and failed:
        from ncprompt.protocols.launchers import LaunchError, launch_cells

        section = GridSection.model_validate(record.get("grid") or {})
        if section.launcher == "local":
            raise LaunchError(f"{out} ran on this machine (launcher local): rerun its `ncprompt protocol` command to "
                              "finish the failed cells")
        print(f"resubmitting {len(failed)} failed cell(s) with launcher {section.launcher}")
        if launch_cells(section, [{**job, "resume": True} for job in failed], out, lambda job, res: None):
            states = grid_status(out)
            print(format_status(out, states))
    if all(c.state == "done" for c in states):
        finish_tables(out, [c.job for c in states])
    return 0


def finish_tables(out: Path, jobs: list[dict[str, Any]]) -> None:
    """The grid's summary (runs.csv, summary.{md,csv,png}) and paper tables from its cells' results, unless
    they are already newer than every result."""
    from ncprompt.engine.results import read_results
    from ncprompt.protocols.grid import cell_row, finish_grid, markdown_table, summarise

    summary = out / "summary.md"
    newest = max((Path(j["run_dir"]) / "results.json").stat().st_mtime_ns for j in jobs)
    if summary.is_file() and summary.stat().st_mtime_ns >= newest:
        return
    rows = [cell_row(job, read_results(job["run_dir"])) for job in jobs]
    finish_grid(rows, out, jobs)
    print(markdown_table(summarise(rows)), end="")
