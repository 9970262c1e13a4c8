"""The run configuration: one validated dataclass filled from YAML and/or CLI flags."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ncprompt.collapse.regularizers import NPTConfig
from ncprompt.engine.trainer import TrainConfig


class ConfigError(ValueError):
    pass


PROTOCOLS = ("all", "base2new")


@dataclass
class RunConfig:
    """Everything one run needs. ``protocol``: "all" (train and test on all classes) or
    "base2new" (train on the first ceil(K/2) classes, test on base and on new classes).
    ``targets``: further datasets evaluated (all their classes) with the learned prompts after
    training: cross-dataset transfer and domain generalisation."""

    model: str = "pocket"
    pretrained: str | None = None
    device: str | None = None
    precision: str | None = None
    dataset: str = "fashion_mnist"
    root: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    method: str = "coop"
    method_options: dict[str, Any] = field(default_factory=dict)
    protocol: str = "all"
    shots: int | None = 16
    imbalance: float | None = None
    max_test_per_class: int | None = None
    targets: list[str] = field(default_factory=list)  # "name" or "name=ROOT"
    cache_dir: str | None = None
    use_cache: bool = True
    diagnostics: bool = True
    output: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    npt: NPTConfig = field(default_factory=NPTConfig)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol must be one of {list(PROTOCOLS)}, got {self.protocol!r}")
        if self.shots is not None and self.shots < 0:
            raise ConfigError(f"shots must be >= 0 (0: all training images), got {self.shots}")
        if self.imbalance is not None and not 0 < self.imbalance <= 1:
            raise ConfigError(f"imbalance tau must be in (0, 1], got {self.imbalance}")
        if self.imbalance is not None and not self.shots:
            raise ConfigError("imbalance needs shots > 0 (shots is n_max of the exponential profile)")
        if isinstance(self.train, dict):
            self.train = _build(TrainConfig, self.train, "train")
        if isinstance(self.npt, dict):
            self.npt = _build(NPTConfig, self.npt, "npt")

    @property
    def seed(self) -> int:
        return self.train.seed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return _build(cls, d, "config")


def _build(cls: type, d: dict[str, Any], where: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(d).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; known keys: {sorted(known)}")
    try:
        return cls(**d)
    except TypeError as e:
        raise ConfigError(f"bad {where}: {e}") from e


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of options")
    return data


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (override wins)."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def save_yaml(path: str | Path, cfg: RunConfig) -> None:
    from ncprompt.utils import atomic_write

    atomic_write(path, lambda p: p.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False)))
