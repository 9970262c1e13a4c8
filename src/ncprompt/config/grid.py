"""The ``grid`` section of a protocol grid's config: where its cells run (the launcher) and what each asks for.

Not part of any run's config (a cell's result does not depend on where it ran, so these keys are popped from
the grid's base config before the cells are built and never reach a fingerprint). YAML::

    grid:
      launcher: submitit            # local (default) | submitit (SLURM job array) | ray
      slurm: {partition: gpu, account: lab, time_min: 120, cpus_per_cell: 8, gpus_per_cell: 1, mem_gb: 32,
              array_parallelism: 16, sbatch: {qos: high}}
      ray: {address: auto, cpus_per_task: 4, gpus_per_task: 1}

Flags: ``--launcher``, ``--partition``, ``--account`` ... (``ncprompt protocol --help``), or ``--set grid.KEY=V``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ncprompt.config.base import ConfigModel, validate


class SlurmSection(ConfigModel):
    """One SLURM job array through submitit: one array task per grid cell."""

    partition: str | None = Field(None, description="SLURM partition of the cells (sbatch --partition)")
    account: str | None = Field(None, description="SLURM account charged (sbatch --account)")
    time_min: int = Field(60, ge=1, description="wall-clock limit of one cell in minutes (sbatch --time)")
    cpus_per_cell: int = Field(1, ge=1, description="CPU cores of one cell (sbatch --cpus-per-task; its torch threads)")
    gpus_per_cell: int = Field(0, ge=0, description="GPUs of one cell (sbatch --gpus-per-node)")
    mem_gb: float | None = Field(None, gt=0, description="memory of one cell in GB (sbatch --mem; default: the "
                                 "partition's)")
    array_parallelism: int = Field(64, ge=1, description="cells of the array running at once (the throttle of "
                                   "sbatch --array)")
    sbatch: dict[str, Any] = Field(default_factory=dict, description="extra sbatch options, e.g. {qos: high, "
                                   "constraint: a100} (submitit's slurm_additional_parameters)")
    setup: list[str] = Field(default_factory=list, description="shell lines run before each cell, e.g. "
                             "['module load cuda', 'source .venv/bin/activate']")
    cluster: Literal["slurm", "local"] = Field(
        "slurm", description="submitit executor: slurm (sbatch) or local (one process per cell on this machine: the "
        "same cells without a cluster)")
    wait: bool = Field(True, description="wait for the array's cells, then write the summary (--no-wait / false: "
                       "submit and return; follow with `ncprompt protocol --status GRID`)")


class RaySection(ConfigModel):
    """One Ray task per grid cell."""

    address: str | None = Field(None, description="ray.init address: auto, ray://HOST:10001 ... (default: start a "
                                "local Ray on this machine)")
    cpus_per_task: float = Field(1, gt=0, description="CPUs Ray reserves for one cell (its torch threads, rounded)")
    gpus_per_task: float = Field(0, ge=0, description="GPUs Ray reserves for one cell")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray (address unset; default: all)")


class GridSection(ConfigModel):
    """Where a grid's cells run; every launcher runs the same cell function (``protocols.grid.run_one``)."""

    launcher: Literal["local", "submitit", "ray"] = Field(
        "local", description="local: this machine (--workers processes); submitit: a SLURM job array; ray: Ray tasks")
    slurm: SlurmSection = Field(default_factory=SlurmSection)
    ray: RaySection = Field(default_factory=RaySection)


def pop_grid_section(base: dict[str, Any]) -> GridSection:
    """Remove ``grid`` from a grid's base config and validate it (the error names the key)."""
    raw = base.pop("grid", None) or {}
    return validate(GridSection, raw, prefix="grid")
