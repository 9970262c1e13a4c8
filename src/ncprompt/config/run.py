"""The run configuration tree: ``run``, ``data``, ``method`` (one model per method), ``train``, ``npt``.

YAML files, command-line flags, presets and the ``config.yaml`` of a run folder all go through
:meth:`RunConfig.from_dict`, which names the offending key of every error before anything heavy
is loaded. The flat keys of earlier versions (``model: ...``, ``method: coop`` with
``method_options: {...}``, ``dataset_options``) are still read and moved into their sections.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SerializeAsAny, field_validator, model_validator

from ncprompt.config.base import ConfigError, ConfigModel, validate
from ncprompt.config.methods import CoOpConfig, MethodConfig, method_config_defaults, parse_method


class RunSection(ConfigModel):
    """Backbone, device and where the run writes."""

    model: str = Field("pocket", description="open_clip architecture or project model (see `ncprompt models`)")
    pretrained: str | None = Field(None, description="open_clip pretrained tag or a local checkpoint file")
    device: str | None = Field(None, description="cpu, cuda, cuda:1 ... (default: cuda if available)")
    precision: Literal["fp32", "bf16", "fp16"] | None = Field(None, description="autocast precision (default fp32)")
    output: str | None = Field(None, description="run folder (config, metrics.jsonl, checkpoints, results.json)")
    cache_dir: str | None = Field(None, description="feature cache folder (default $NCPROMPT_CACHE, else "
                                  "$XDG_CACHE_HOME/ncprompt, else ~/.cache/ncprompt)")
    use_cache: bool = Field(True, description="read and write the feature cache",
                            json_schema_extra={"off_help": "neither read nor write the feature cache (features are "
                                                           "computed in RAM each time)"})
    diagnostics: bool = Field(True, description="neural-collapse metrics per epoch and at the end")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: $OMP_NUM_THREADS, else "
                                "the cores other processes leave idle); pin it for bit-identical reruns")

    @field_validator("output", "cache_dir")
    @classmethod
    def _not_a_file(cls, v: str | None) -> str | None:
        if v is not None and Path(v).expanduser().is_file():
            raise ValueError(f"{v} is an existing file; give a folder path")
        return v

    @field_validator("device")
    @classmethod
    def _device_spelling(cls, v: str | None) -> str | None:
        if v is None:
            return v
        kind, _, index = v.partition(":")
        if kind not in ("cpu", "cuda", "mps") or (index and not index.isdigit()):
            raise ValueError(f"{v!r} is not a device; use cpu, cuda, cuda:N or mps")
        return v


def absolute_path(path: str) -> str:
    """``path`` made absolute against the working directory (``~`` expanded, ``..`` folded, symlinks kept):
    data roots are stored this way, so a run folder read from another directory names the same files."""
    return os.path.abspath(os.path.expanduser(path))


class DataSection(ConfigModel):
    """Dataset, class split, sampling and evaluation sets."""

    dataset: str = Field("fashion_mnist", description="registered dataset (see `ncprompt datasets`)")
    root: str | None = Field(None, description="dataset folder or file (folder/csv datasets, custom locations); "
                             "stored as an absolute path")
    options: dict[str, Any] = Field(default_factory=dict, description="dataset builder options, e.g. test_fraction")
    protocol: Literal["all", "base2new"] = Field(
        "all", description="all: train and test on all classes; base2new: train on base, test base and new")
    shots: int | None = Field(16, ge=0, description="training images per class (0: all); n_max under imbalance")
    imbalance: float | None = Field(None, gt=0, le=1, description="exponential class-imbalance ratio tau in (0, 1]")
    base_classes: list[str] | None = Field(None, description="base2new: the base classes by name (the rest are "
                                                         "new); default CoOp's first half of the labels")
    max_test_per_class: int | None = Field(None, ge=1, description="cap test images per class (faster evaluation)")
    eval_split: Literal["test", "val"] = Field(
        "test", description="split that is scored: test (what tables report) or val (where choices are made; "
        "never choose on test)")
    targets: list[str] = Field(default_factory=list, description='datasets evaluated after training: "name" or '
                               '"name=ROOT" (cross-dataset / domain shift)')
    workers: int = Field(0, ge=0, description="DataLoader worker processes that decode and augment images (feature "
                         "extraction, live encoding); 0: this process. Results do not depend on it")

    @field_validator("root")
    @classmethod
    def _absolute_root(cls, v: str | None) -> str | None:
        return absolute_path(v) if v else v

    @field_validator("targets", mode="before")
    @classmethod
    def _one_target(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("targets")
    @classmethod
    def _target_roots(cls, v: list[str]) -> list[str]:
        out = []
        for spec in v:
            name, sep, root = spec.partition("=")
            if not name.strip():
                raise ValueError(f"target {spec!r} has no dataset name; write name or name=ROOT")
            if sep and not Path(root).expanduser().exists():
                raise ValueError(f"target {spec!r}: root {root} does not exist; fix the path")
            out.append(f"{name}={absolute_path(root)}" if sep and root else spec)
        return out

    @model_validator(mode="after")
    def _imbalance_needs_shots(self) -> DataSection:
        if self.imbalance is not None and not self.shots:
            raise ValueError("imbalance needs shots > 0 (shots is n_max of the exponential profile)")
        return self


#: the experiment trackers of ``train.report_to`` (:mod:`ncprompt.engine.tracking`)
TRACKERS = ("tensorboard", "mlflow", "wandb")


class TrainConfig(ConfigModel):
    """Optimisation settings (CoOp's published defaults)."""

    epochs: int = Field(50, ge=1, description="training epochs")
    batch_size: int = Field(32, ge=1, description="images per step")
    lr: float = Field(0.002, gt=0, allow_inf_nan=False, description="peak learning rate")
    optimizer: Literal["sgd", "adam", "adamw"] = Field(
        "sgd", description="optimiser: sgd (with momentum), adam (L2 weight decay, Dassl's 'adam'), adamw (decoupled "
        "weight decay); default sgd, or the method's published one (tcp: adam)")
    momentum: float = Field(0.9, ge=0, allow_inf_nan=False, description="SGD momentum")
    weight_decay: float = Field(5e-4, ge=0, allow_inf_nan=False, description="weight decay")
    warmup_epochs: int = Field(1, ge=0, description="epochs at the constant warmup_lr before the cosine (clipped "
                               "to epochs - 1)")
    warmup_lr: float = Field(1e-5, gt=0, allow_inf_nan=False, description="learning rate during warm-up")
    views: int = Field(8, ge=1, description="augmented views per training image (cached for frozen encoders)")
    crop_min: float = Field(0.08, gt=0, le=1, allow_inf_nan=False,
                            description="smallest area fraction of the random resized crop of training views "
                            "(CoOp: 0.08, for 224 px photos; the pocket presets use 0.5 for 32 px sprites)")
    flip: bool = Field(True, description="random horizontal flip of training views (off where left and right "
                       "differ, e.g. arrows and pointing hands)")
    eval_every: int = Field(0, ge=0, description="evaluate on the test split every N epochs (0: at the end)")
    seed: int = Field(1, ge=0, description="seed of sampling, initialisation and order")
    checkpoint_every: int = Field(1, ge=1, description="write a resumable checkpoint every N epochs")
    max_grad_norm: float = Field(0.0, ge=0, allow_inf_nan=False, description="clip gradients to this norm (0: off)")
    shared_prefix: bool = Field(True, description="encode the prompts' shared start (start token + context) once "
                                "and only the class positions per class: exact, faster; falls back to full prompts "
                                "where it does not apply (class token middle/front, bidirectional text tower)")
    report_to: list[str] = Field(
        default_factory=list, description="experiment trackers that also record the run: tensorboard, mlflow, wandb "
        "(comma-separated; pip install 'ncprompt[tracking]'; docs/usage.md)")
    report_group: str | None = Field(None, description="group of the tracked runs: MLflow experiment and W&B group "
                                     "(a grid: its folder's name; default ncprompt)")

    @field_validator("report_to", mode="before")
    @classmethod
    def _comma_separated(cls, v: Any) -> Any:
        """``"tensorboard,mlflow"`` or ``["tensorboard,mlflow", "wandb"]`` -> one list, each tracker once."""
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return list(dict.fromkeys(t.strip().lower() for x in v for t in x.split(",") if t.strip()))
        return v

    @field_validator("report_to")
    @classmethod
    def _known_trackers(cls, v: list[str]) -> list[str]:
        unknown = [t for t in v if t not in TRACKERS]
        if unknown:
            raise ValueError(f"unknown tracker {', '.join(unknown)}; choose from {', '.join(TRACKERS)}")
        return v

    @property
    def coop_views(self) -> bool:
        """Whether training views are CoOp's (crop_min and flip at their defaults)."""
        fields = type(self).model_fields
        return (self.crop_min, self.flip) == (fields["crop_min"].default, fields["flip"].default)


class NPTConfig(ConfigModel):
    """The NPT regularisers (formulas in :mod:`ncprompt.collapse.regularizers`)."""

    enabled: bool = Field(False, description="add the NPT regularisers")
    lambda_lc: float = Field(0.1, ge=0, allow_inf_nan=False, description="weight of language-modality collapse")
    lambda_mi: float = Field(0.1, ge=0, allow_inf_nan=False, description="weight of multi-modality isomorphism")
    lc_form: Literal["pairwise", "anchored", "cluster"] = Field(
        "pairwise", description="LC form (cluster: within-cluster ETF over k-means clusters of zero-shot text)")
    mi_form: Literal["self_duality", "cross_similarity"] = Field("self_duality", description="MI form")
    centered: bool = Field(True, description="centre text features in LC")
    anchor_align: Literal["procrustes", "identity"] = Field("procrustes", description="ETF anchor alignment")
    image_anchor: bool = Field(False, description="add the image-anchor term (weighted by lambda_mi)")
    ema_momentum: float = Field(0.9, ge=0, lt=1, description="momentum of the running image class means")
    etf_seed: int = Field(0, ge=0, description="seed of the simplex ETF")
    normalize: bool = Field(True, description="L2-normalise text and image features first")
    clusters: int = Field(0, ge=0, description="k-means clusters of lc_form cluster (0: automatic)")
    lambda_conv: float = Field(0.1, ge=0, allow_inf_nan=False, description="weight of cluster class convergence")
    lambda_rot: float = Field(0.1, ge=0, allow_inf_nan=False, description="weight of cluster rotation stabilisation")

    @property
    def needs_anchors(self) -> bool:
        return self.lc_form == "anchored" or self.image_anchor


_RUN_KEYS = tuple(RunSection.model_fields)
_DATA_KEYS = ("dataset", "root", "protocol", "shots", "imbalance", "max_test_per_class", "eval_split", "targets")
#: keys that do not change what a run computes (left out of its fingerprint)
NOT_IN_FINGERPRINT = ("run.output", "run.cache_dir", "run.use_cache", "run.threads", "train.checkpoint_every",
                      "data.workers", "train.report_to", "train.report_group")


def upgrade_legacy(d: dict[str, Any]) -> dict[str, Any]:
    """Move the flat keys of earlier configs into their sections (section keys win)."""
    d = dict(d)
    run = {k: d.pop(k) for k in _RUN_KEYS if k in d}
    data = {k: d.pop(k) for k in _DATA_KEYS if k in d}
    if "dataset_options" in d:
        data["options"] = d.pop("dataset_options")
    if run:
        d["run"] = {**run, **(d.get("run") or {})} if isinstance(d.get("run", {}), dict) else d["run"]
    if data:
        d["data"] = {**data, **(d.get("data") or {})} if isinstance(d.get("data", {}), dict) else d["data"]
    if "method_options" in d:
        opts = d.pop("method_options")
        if not isinstance(opts, dict):
            raise ConfigError(f"method_options: must be a mapping, got {opts!r}")
        method = d.get("method", "coop")
        method = {"name": method} if isinstance(method, str) else dict(method or {})
        d["method"] = {**opts, **method}
    return d


def with_method_train_defaults(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with the method's published training defaults (``MethodConfig.train_defaults``, e.g. TCP's Adam) in
    the ``train`` keys it does not set; keys set anywhere (preset, YAML, flags, a run's config.yaml) win."""
    defaults = method_config_defaults(d.get("method", "coop"))
    train = d.get("train")
    if not defaults or not (train is None or isinstance(train, dict | TrainConfig)):
        return d
    if isinstance(train, TrainConfig):
        return {**d, "train": train.model_copy(
            update={k: v for k, v in defaults.items() if k not in train.model_fields_set})}
    return {**d, "train": {**defaults, **(train or {})}}


class RunConfig(ConfigModel):
    """Everything one run needs; ``from_dict`` is the one way in (YAML, flags, presets, run folders)."""

    run: RunSection = Field(default_factory=RunSection)
    data: DataSection = Field(default_factory=DataSection)
    method: SerializeAsAny[MethodConfig] = Field(default_factory=CoOpConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    npt: NPTConfig = Field(default_factory=NPTConfig)

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, d: Any) -> Any:
        return with_method_train_defaults(upgrade_legacy(d)) if isinstance(d, dict) else d

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, v: Any) -> MethodConfig:
        return parse_method(v)

    @model_validator(mode="after")
    def _compatible(self) -> RunConfig:
        problems = self.method.conflicts(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "") -> RunConfig:
        """Validate ``d``; a :class:`ConfigError` names every offending key (``where``: the file)."""
        if not isinstance(d, dict):
            raise ConfigError(f"{where + ': ' if where else ''}the config must be a mapping, got {type(d).__name__}")
        try:
            d = upgrade_legacy(d)
            if "method" in d:
                d = {**d, "method": parse_method(d["method"])}
        except ConfigError as e:
            raise ConfigError(f"{where + ': ' if where else ''}{e}") from None
        return validate(cls, d, where)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @property
    def seed(self) -> int:
        return self.train.seed

    def fingerprint_items(self) -> dict[str, Any]:
        """Every key that determines what the run computes, flattened (``train.lr``: 0.002, ...)."""
        flat = flatten(self.to_dict())
        return {k: v for k, v in flat.items() if k not in NOT_IN_FINGERPRINT}

    def fingerprint(self) -> str:
        blob = json.dumps(self.fingerprint_items(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} -> {"train.lr": 1} (method options included)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "options":
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def merge_layers(*layers: dict[str, Any]) -> dict[str, Any]:
    """Merge partial configs (defaults < preset < YAML < --set < flags): later layers win, and a layer
    that names another method starts the ``method`` section over (options of the earlier method do
    not leak into the new one)."""
    from ncprompt.config.base import merge

    out: dict[str, Any] = {}
    for layer in layers:
        layer = upgrade_legacy(layer)
        m = layer.get("method")
        if isinstance(m, str):
            layer = {**layer, "method": {"name": m}}
            m = layer["method"]
        if isinstance(m, dict) and "name" in m:
            cur = out.get("method")
            cur_name = cur.get("name") if isinstance(cur, dict) else cur
            if cur_name is not None and str(m["name"]).lower() != str(cur_name).lower():
                out.pop("method")
        out = merge(out, layer)
    return out
