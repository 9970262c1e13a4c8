"""Experiment tracking (``train.report_to``): TensorBoard, MLflow and Weights & Biases, as open_clip's
``--report-to``. One :class:`Tracker` fans every record out to the chosen backends.

What each backend receives, under the same names:

* hyper-parameters: the resolved config, flattened (``train.lr``, ``npt.lambda_lc``, ...);
* per epoch (step = epoch counted from 1): ``loss/total``, ``loss/base`` (the method's loss),
  each loss part (``loss/ce`` ...; the NPT terms ``loss/npt_lc`` and ``loss/npt_mi`` unweighted,
  ``loss/npt`` their weighted sum), ``train/lr``, ``train/accuracy`` (training views),
  ``eval/{split}_accuracy`` (``train.eval_every``) and ``nc_train/{metric}`` (NC1-NC4);
* at the end: ``final/{split}`` top-1 (base / new / all), ``final/hm``, ``final/{split}_{head,middle,tail}``,
  ``final/target/{name}``, ``final_nc/{split}/{metric}`` and ``final/train_loss``.

Where: TensorBoard writes event files to ``RUN_DIR/tensorboard`` (a grid: one sub-folder per cell,
``tensorboard --logdir GRID``); MLflow logs to ``MLFLOW_TRACKING_URI`` (its own default otherwise), in
the experiment ``train.report_group`` (a grid: its folder's name), tagged with dataset, method, seed
and shots; W&B to ``WANDB_PROJECT`` (default ``ncprompt``), group ``train.report_group``, files under the
run folder (``WANDB_MODE=offline`` works without network). A missing package is one error naming the
pip extra, raised before anything is trained.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ncprompt.config import RunConfig
from ncprompt.config.run import flatten
from ncprompt.engine.progress import epoch_number

#: the package each backend imports, and the pip extra that installs all of them
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
EXTRA = "pip install 'ncprompt[tracking]'"
DEFAULT_GROUP = "ncprompt"
#: record keys of the trainer's epoch log that are not loss parts
_NOT_LOSS = {"epoch", "lr", "steps", "train_acc", "epoch_time_s", "nc_train"}


class TrackingError(ValueError):
    """A tracker cannot start (missing package, no run folder for TensorBoard)."""


def check_available(report_to: Iterable[str]) -> None:
    """Raise :class:`TrackingError` naming the pip extra when a chosen tracker's package is missing."""
    missing = [name for name in report_to if importlib.util.find_spec(PACKAGES[name]) is None]
    if missing:
        raise TrackingError(f"train.report_to {','.join(missing)}: package {', '.join(PACKAGES[m] for m in missing)} "
                            f"is not installed; {EXTRA} (or drop it from --report-to)")


def epoch_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The tracked metrics of one epoch record of :func:`ncprompt.engine.trainer.train`."""
    out: dict[str, float] = {}
    for k, v in record.items():
        if k == "nc_train" and isinstance(v, dict):
            out.update({f"nc_train/{m}": x for m, x in v.items() if m != "n_samples" and _number(x)})
        elif not _number(v) or k == "epoch":
            continue
        elif k == "lr":
            out["train/lr"] = v
        elif k == "train_acc":
            out["train/accuracy"] = v
        elif k in ("steps", "epoch_time_s"):
            out[f"train/{k}"] = v
        elif k.endswith("_acc"):
            out[f"eval/{k.removesuffix('_acc')}_accuracy"] = v
        elif k == "loss":
            out["loss/total"] = v
        elif k not in _NOT_LOSS:
            out[f"loss/{k}"] = v
    if _number(record.get("loss")):
        out["loss/base"] = record["loss"] - (record.get("npt") or 0.0)
    return {k: float(v) for k, v in out.items()}


def result_metrics(result: Any) -> dict[str, float]:
    """The final metrics of a :class:`ncprompt.engine.results.RunResult`."""
    out: dict[str, float] = {}
    for name, split in result.splits.items():
        out[f"final/{name}"] = split.top1
        out[f"final/{name}_mean_per_class"] = split.mean_per_class
        out.update({f"final/{name}_{g}": v for g, v in (split.groups or {}).items()})
        out.update({f"final_nc/{name}/{k}": v for k, v in split.nc.items() if k != "n_samples"})
    if result.hm is not None:
        out["final/hm"] = result.hm
    for name, split in result.targets.items():
        out[f"final/target/{name}"] = split.top1
    if result.train is not None:
        out["final/train"] = result.train.top1
        out.update({f"final_nc/train/{k}": v for k, v in result.train.nc.items() if k != "n_samples"})
    if result.final_train_loss is not None:
        out["final/train_loss"] = result.final_train_loss
    return {k: float(v) for k, v in out.items() if _number(v)}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _key(k: str) -> str:
    """A metric / parameter name every backend accepts (MLflow: letters, digits, _ - . / and space)."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", k)


def _param(v: Any) -> str | int | float | bool:
    return v if isinstance(v, (str, int, float, bool)) else str(v)


# --- backends -----------------------------------------------------------------------------
class _TensorBoard:
    def __init__(self, run_dir: Path | None, name: str, group: str, tags: dict[str, str]) -> None:
        if run_dir is None:
            raise TrackingError("train.report_to tensorboard writes into the run folder; give --output DIR")
        from torch.utils.tensorboard import SummaryWriter

        self.dir = run_dir / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.dir))
        self.params: dict[str, Any] = {}
        self.writer.add_text("run", f"{name} (group {group}); " + ", ".join(f"{k}={v}" for k, v in tags.items()))

    def log_params(self, params: dict[str, Any]) -> None:
        self.params = {k: _param(v) for k, v in params.items()}
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in self.params.items()))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)

    def log_final(self, metrics: dict[str, float], step: int) -> None:
        """The final metrics as scalars and, with the hyper-parameters, in TensorBoard's HPARAMS tab."""
        from torch.utils.tensorboard.summary import hparams

        self.log_metrics(metrics, step)
        for summary in hparams(self.params, metrics):
            self.writer.file_writer.add_summary(summary)

    def close(self, failed: bool) -> None:
        self.writer.close()


class _MLflow:
    def __init__(self, run_dir: Path | None, name: str, group: str, tags: dict[str, str]) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()  # MLFLOW_TRACKING_URI, else MLflow's default store
        exp = self.client.get_experiment_by_name(group)
        if exp is None:
            try:
                exp_id = self.client.create_experiment(group)
            except MlflowException:  # a parallel grid worker created it first
                exp_id = self.client.get_experiment_by_name(group).experiment_id
        else:
            exp_id = exp.experiment_id
        run_tags = {**tags, "ncprompt.group": group, **({"ncprompt.run_dir": str(run_dir)} if run_dir else {})}
        self.run_id = self.client.create_run(exp_id, run_name=name, tags=run_tags).info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit for parameters
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_final(self, metrics: dict[str, float], step: int) -> None:
        self.log_metrics(metrics, step)

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


class _WandB:
    def __init__(self, run_dir: Path | None, name: str, group: str, tags: dict[str, str]) -> None:
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", DEFAULT_GROUP), group=group, name=name,
                              dir=str(run_dir) if run_dir is not None else None,
                              tags=[f"{k}:{v}"[:64] for k, v in tags.items()], reinit="create_new",
                              settings=wandb.Settings(silent=True))

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update({k: _param(v) for k, v in params.items()}, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_final(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)
        self.run.summary.update(metrics)

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


BACKENDS = {"tensorboard": _TensorBoard, "mlflow": _MLflow, "wandb": _WandB}


class Tracker:
    """The chosen backends of one run: ``start`` (hyper-parameters), ``log_epoch`` (the trainer's
    ``on_record`` hook), ``log_results`` and ``close``. With no backend every call does nothing."""

    def __init__(self, report_to: Iterable[str], run_dir: Path | None = None, name: str = "run",
                 group: str | None = None, tags: dict[str, Any] | None = None) -> None:
        report_to = list(report_to)
        check_available(report_to)
        self.group = group or DEFAULT_GROUP
        self.tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
        self.backends: list[Any] = []
        self.last_step = 0
        try:
            for b in report_to:
                self.backends.append(BACKENDS[b](run_dir, name, self.group, self.tags))
        except BaseException:
            self.close(failed=True)
            raise

    @classmethod
    def for_run(cls, cfg: RunConfig, run_dir: Path | None, dataset: str) -> Tracker:
        """The tracker of one run of ``cfg`` on ``dataset`` (its name in results and tables)."""
        label = f"{cfg.method.name}{'+npt' if cfg.npt.enabled else ''}"
        shots = f" {cfg.data.shots} shots" if cfg.data.shots else ""
        tags = {"dataset": dataset, "method": label, "seed": cfg.seed, "shots": cfg.data.shots,
                "protocol": cfg.data.protocol, "model": cfg.run.model}
        tracker = cls(cfg.train.report_to, run_dir, f"{dataset}{shots} {label} seed {cfg.seed}", cfg.train.report_group,
                      tags)
        tracker.start(flatten(cfg.to_dict()))
        return tracker

    def __bool__(self) -> bool:
        return bool(self.backends)

    def _each(self, call: str, *args: Any) -> None:
        for b in self.backends:
            getattr(b, call)(*args)

    def start(self, params: dict[str, Any]) -> None:
        self._each("log_params", {_key(k): v for k, v in params.items()})

    def log_epoch(self, record: dict[str, Any]) -> None:
        self.last_step = epoch_number(record) if "epoch" in record else self.last_step + 1  # step = epoch from 1
        self._each("log_metrics", {_key(k): v for k, v in epoch_metrics(record).items()}, self.last_step)

    def log_results(self, result: Any) -> None:
        """The final metrics, at the last epoch's step (a finished run re-evaluated: its epochs run)."""
        step = self.last_step or int(getattr(result, "epochs_run", 0) or 0)
        self._each("log_final", {_key(k): v for k, v in result_metrics(result).items()}, step)

    def close(self, failed: bool = False) -> None:
        for b in self.backends:
            b.close(failed)
        self.backends = []
