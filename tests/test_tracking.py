"""Experiment tracking (``train.report_to``): one run recorded by TensorBoard, MLflow (file store) and W&B
(offline), each read back; a grid's cells tracked one run each, grouped by the grid; a missing package is
one line naming the pip extra."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from ncprompt.config import RunConfig
from ncprompt.engine import tracking
from ncprompt.engine.tracking import Tracker, TrackingError, epoch_metrics
from ncprompt.protocols.experiment import Experiment
from ncprompt.protocols.grid import MethodSpec, run_grid

AVAILABLE = [b for b in ("tensorboard", "mlflow", "wandb") if importlib.util.find_spec(b) is not None]


def _needs(name: str) -> None:
    if name not in AVAILABLE:
        pytest.skip(f"{name} is not installed (pip install 'ncprompt[tracking]')")


def test_report_to_is_a_comma_separated_list_outside_the_fingerprint():
    cfg = RunConfig.from_dict({"train": {"report_to": "tensorboard, MLflow", "report_group": "g"}})
    assert cfg.train.report_to == ["tensorboard", "mlflow"]
    assert RunConfig.from_dict({"train": {"report_to": ["wandb,tensorboard", "wandb"]}}).train.report_to == \
        ["wandb", "tensorboard"]
    assert cfg.fingerprint() == RunConfig().fingerprint()  # tracking does not change what a run computes
    with pytest.raises(ValueError, match="report_to"):
        RunConfig.from_dict({"train": {"report_to": "tensorboard,comet"}})


def test_epoch_metrics_split_the_base_loss_and_the_npt_terms():
    rec = {"epoch": 2, "lr": 0.002, "steps": 3, "train_acc": 50.0, "ce": 1.5, "npt_lc": 0.4, "npt_mi": 0.6,
           "npt": 0.1, "loss": 1.6, "epoch_time_s": 0.2, "base_acc": 40.0, "nc_train": {"nc1": 2.0, "n_samples": 9}}
    m = epoch_metrics(rec)
    assert m["loss/total"] == 1.6 and m["loss/base"] == pytest.approx(1.5) and m["loss/ce"] == 1.5
    assert m["loss/npt_lc"] == 0.4 and m["loss/npt_mi"] == 0.6 and m["loss/npt"] == 0.1
    assert m["train/lr"] == 0.002 and m["train/accuracy"] == 50.0 and m["eval/base_accuracy"] == 40.0
    assert m["nc_train/nc1"] == 2.0 and "nc_train/n_samples" not in m and not any("epoch" == k for k in m)


def test_a_missing_tracker_package_is_one_line_naming_the_extra(monkeypatch, capsys, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a))
    with pytest.raises(TrackingError, match=r"ncprompt\[tracking\]"):
        Tracker(["tensorboard", "wandb"], tmp_path)
    from ncprompt.cli import main

    code = main(["train", "--model", "tiny-clip", "--report-to", "tensorboard,wandb", "--output", str(tmp_path / "r"),
                 "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "wandb" in err and "pip install 'ncprompt[tracking]'" in err and "Traceback" not in err


def test_tensorboard_needs_a_run_folder():
    _needs("tensorboard")
    with pytest.raises(TrackingError, match="--output"):
        Tracker(["tensorboard"], None)


@pytest.fixture(scope="module")
def tracked_run(tiny_backbone, fmnist_small, tmp_path_factory):
    """One CoOp + NPT base-to-new run under imbalance, evaluated every epoch, recorded by every installed tracker."""
    tmp = tmp_path_factory.mktemp("tracked")
    env = {"MLFLOW_TRACKING_URI": f"file:{tmp / 'mlruns'}", "MLFLOW_ALLOW_FILE_STORE": "true",  # MLflow's file store
           "WANDB_MODE": "offline", "WANDB_DIR": str(tmp),
           "WANDB_SILENT": "true", "WANDB_PROJECT": "ncprompt-test"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        torch.set_num_threads(1)
        cfg = RunConfig.from_dict(dict(model="tiny-clip", method={"name": "coop", "n_ctx": 2}, shots=6,
                                       imbalance=0.5, protocol="base2new", cache_dir=str(tmp / "c"),
                                       npt={"enabled": True},
                                       train={"epochs": 2, "views": 1, "batch_size": 8, "warmup_epochs": 0,
                                              "eval_every": 1, "report_to": AVAILABLE, "report_group": "unit"}))
        Experiment(cfg, backbone=tiny_backbone, dataset=fmnist_small).run(tmp / "run")
    res = json.loads((tmp / "run" / "results.json").read_text())
    return tmp, res


EPOCH_KEYS = ["loss/total", "loss/base", "loss/ce", "loss/npt_lc", "loss/npt_mi", "train/lr", "train/accuracy",
              "eval/base_accuracy", "eval/new_accuracy", "nc_train/nc1"]
FINAL_KEYS = ["final/base", "final/new", "final/hm", "final/base_head", "final/base_middle", "final/base_tail",
              "final_nc/train/nc1"]


def test_tensorboard_event_files_read_back(tracked_run):
    _needs("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    tmp, res = tracked_run
    ea = EventAccumulator(str(tmp / "run" / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    tags = ea.Tags()["scalars"]
    for k in EPOCH_KEYS:
        assert [e.step for e in ea.Scalars(k)] == [1, 2], k
    for k in FINAL_KEYS:
        assert k in tags, k
    assert ea.Scalars("final/hm")[-1].value == pytest.approx(res["hm"], abs=1e-4)
    metrics = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in ea.Scalars("loss/npt_lc")] == pytest.approx([r["npt_lc"] for r in metrics], rel=1e-6)
    content = ea.PluginTagToContent("hparams")
    start = next(plugin_data_pb2.HParamsPluginData.FromString(c).session_start_info for c in content.values()
                 if plugin_data_pb2.HParamsPluginData.FromString(c).HasField("session_start_info"))
    assert start.hparams["train.lr"].number_value == pytest.approx(0.002)
    assert start.hparams["method.name"].string_value == "coop"


def test_mlflow_file_store_reads_back(tracked_run):
    _needs("mlflow")
    from mlflow.tracking import MlflowClient

    tmp, res = tracked_run
    client = MlflowClient(tracking_uri=f"file:{tmp / 'mlruns'}")
    exp = client.get_experiment_by_name("unit")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.002" and run.data.params["npt.enabled"] == "True"
    assert run.data.tags["method"] == "coop+npt" and run.data.tags["dataset"] == "fmnist_small"
    for k in EPOCH_KEYS:
        assert [m.step for m in client.get_metric_history(run.info.run_id, k)] == [1, 2], k
    assert run.data.metrics["final/hm"] == pytest.approx(res["hm"])
    assert all(k in run.data.metrics for k in FINAL_KEYS)


def _wandb_records(path: Path) -> list[Any]:
    """The records of a W&B transaction log (``run-ID.wandb``: a 7-byte ":W&B" header, then LevelDB-log
    chunks of 32 KiB blocks, each with a 7-byte header crc32 / length / type, holding protobuf Records)."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if left < 7 or (length == 0 and kind == 0):  # block trailer / padding
            pos += left
            continue
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a whole record
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def test_wandb_offline_run_reads_back(tracked_run):
    _needs("wandb")
    tmp, res = tracked_run
    runs = list((tmp / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = _wandb_records(next(runs[0].glob("run-*.wandb")))

    def items(rec: Any) -> dict[str, Any]:
        return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec}

    history = [items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    epochs = [h for h in history if "loss/npt_mi" in h]
    assert [h["_step"] for h in epochs] == [1, 2] and all(k in h for h in epochs for k in EPOCH_KEYS)
    summary: dict[str, Any] = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(items(r.summary.update))
    assert summary["final/hm"] == pytest.approx(res["hm"]) and all(k in summary for k in FINAL_KEYS)
    config: dict[str, Any] = {}
    for r in records:
        if r.WhichOneof("record_type") == "config":
            config.update(items(r.config.update))
    assert config["train.lr"] == 0.002 and config["npt.enabled"] is True and config["method.name"] == "coop"
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.run_group == "unit" and run.project == "ncprompt-test" and "method:coop+npt" in run.tags


def test_grid_cells_are_tracked_runs_grouped_by_the_grid(image_folder, tmp_path, monkeypatch, one_thread):
    _needs("tensorboard")
    _needs("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    base = {"model": "tiny-clip", "dataset": "folder", "root": str(image_folder), "protocol": "base2new",
            "shots": 2, "cache_dir": str(tmp_path / "cache"), "dataset_options": {"test_fraction": 0.5},
            "method_options": {"n_ctx": 2},
            "train": {"epochs": 2, "views": 1, "batch_size": 2, "report_to": "tensorboard,mlflow"}}
    out = tmp_path / "mygrid"
    run_grid(base, ["folder"], [MethodSpec.parse(m) for m in ("zeroshot", "coop+npt")], [1, 2], out,
             log=lambda s: None)
    cells = sorted(p.parent.parent.relative_to(out).as_posix() for p in out.rglob("tensorboard/events.*"))
    assert cells == ["folder/coop+npt/seed1", "folder/coop+npt/seed2", "folder/zeroshot/seed1",
                     "folder/zeroshot/seed2"]
    client = MlflowClient(tracking_uri=f"file:{tmp_path / 'mlruns'}")
    runs = client.search_runs([client.get_experiment_by_name("mygrid").experiment_id])
    assert sorted((r.data.tags["method"], r.data.tags["seed"]) for r in runs) == \
        [("coop+npt", "1"), ("coop+npt", "2"), ("zeroshot", "1"), ("zeroshot", "2")]
    assert all("final/hm" in r.data.metrics for r in runs)


def test_a_diverged_run_is_closed_as_failed(tiny_backbone, fmnist_small, tmp_path, monkeypatch, one_thread):
    _needs("mlflow")
    from mlflow.tracking import MlflowClient

    from ncprompt.engine.trainer import NonFiniteError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    cfg = RunConfig.from_dict(dict(model="tiny-clip", method={"name": "coop", "n_ctx": 2}, shots=2,
                                   cache_dir=str(tmp_path / "c"), run={"diagnostics": False},
                                   train={"epochs": 2, "views": 1, "batch_size": 8, "warmup_epochs": 0, "lr": 1e30,
                                          "report_to": ["mlflow"]}))
    with pytest.raises(NonFiniteError):
        Experiment(cfg, backbone=tiny_backbone, dataset=fmnist_small).run(tmp_path / "run")
    client = MlflowClient(tracking_uri=f"file:{tmp_path / 'mlruns'}")
    (run,) = client.search_runs([client.get_experiment_by_name("ncprompt").experiment_id])
    assert run.info.status == "FAILED" and "final/all" not in run.data.metrics
