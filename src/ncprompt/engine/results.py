"""Results as dataclasses, written and read in one place (``results.json`` of a run folder).

The JSON layout keeps the keys earlier versions wrote (``all``/``base``/``new`` split entries with
``top1``, ``hm``, ``targets``, ``train``), adds each split's class names, and reads older files.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ncprompt.metrics.classification import harmonic_mean

SPLITS = ("all", "base", "new")


class ResultsError(ValueError):
    pass


@dataclass
class SplitResult:
    """Accuracy of one evaluated split (percentages) and its NC diagnostics."""

    top1: float
    mean_per_class: float = float("nan")
    macro_f1: float = float("nan")
    per_class: list[float | None] = field(default_factory=list)
    n: int = 0
    classnames: list[str] = field(default_factory=list)
    groups: dict[str, float] | None = None
    nc: dict[str, float] = field(default_factory=dict)
    #: training split only: NC of the initial (untrained) prompts' text features
    nc_initial_text: dict[str, float] | None = None
    #: {true class: {predicted class: count}} (non-zero counts; absent in results of earlier versions)
    confusion: dict[str, dict[str, int]] | None = None

    def per_class_named(self) -> dict[str, float | None]:
        """{class name: accuracy %} (class index names when the names are unknown)."""
        names = self.classnames or [str(i) for i in range(len(self.per_class))]
        return dict(zip(names, self.per_class))

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout: the fields (``per_class`` a list, as earlier versions read it) and
        ``per_class_by_name`` ({class name: accuracy %}; written only, never read back)."""
        d = {k: v for k, v in asdict(self).items() if v is not None}
        if self.classnames:
            d["per_class_by_name"] = self.per_class_named()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplitResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class RunResult:
    """Everything a finished run reports."""

    method: str
    npt: bool
    dataset: str
    model: str
    pretrained: str | None = None
    protocol: str = "all"
    seed: int = 0
    shots: int | None = None
    imbalance: float | None = None
    train_counts: list[int] | None = None
    epochs_run: int = 0
    seconds: float = 0.0
    splits: dict[str, SplitResult] = field(default_factory=dict)
    train: SplitResult | None = None
    targets: dict[str, SplitResult] = field(default_factory=dict)
    final_train_loss: float | None = None
    fingerprint: str | None = None
    #: model/weights that ran, class names of base/new and head/middle/tail, split sizes (engine.run_info)
    info: dict[str, Any] | None = None
    #: the full resolved config (RunConfig.to_dict) of the run
    config: dict[str, Any] | None = None
    #: versions (ncprompt, torch, open_clip, python), the command, device, dtype, threads (engine.run_header)
    environment: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return f"{self.method}{'+npt' if self.npt else ''}"

    @property
    def hm(self) -> float | None:
        """Harmonic mean of base and new top-1 (base-to-new runs)."""
        if "base" in self.splits and "new" in self.splits:
            return harmonic_mean(self.splits["base"].top1, self.splits["new"].top1)
        return None

    def accuracies(self) -> dict[str, float]:
        """top-1 of each split, plus ``hm`` when there is one."""
        out = {k: s.top1 for k, s in self.splits.items()}
        if self.hm is not None:
            out["hm"] = self.hm
        return out

    def summary_line(self) -> str:
        parts = [f"{k}: top1 {s.top1:.2f}  macro-F1 {s.macro_f1:.2f}" for k, s in self.splits.items()]
        if self.hm is not None:
            parts.append(f"HM {self.hm:.2f}")
        for k, s in self.splits.items():
            if s.groups:
                parts.append(f"{k} head/middle/tail " + " / ".join(f"{v:.1f}" for v in s.groups.values()))
        for k, s in self.targets.items():
            parts.append(f"target {k}: top1 {s.top1:.2f}")
        return f"[{self.label}] " + " | ".join(parts)

    def __getitem__(self, key: str) -> Any:
        """Read access in the results.json layout (``res["base"]["top1"]``, ``res["hm"]``)."""
        return self.to_dict()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)
                             if f.name not in ("splits", "train", "targets")}
        for k, s in self.splits.items():
            d[k] = s.to_dict()
        if self.hm is not None:
            d["hm"] = self.hm
        if self.train is not None:
            d["train"] = self.train.to_dict()
        if self.targets:
            d["targets"] = {k: s.to_dict() for k, s in self.targets.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        known = {f.name for f in fields(cls)} - {"splits", "train", "targets"}
        base = {k: v for k, v in d.items() if k in known}
        for k in ("method", "dataset", "model"):
            base.setdefault(k, "?")
        base.setdefault("npt", False)
        return cls(**base, splits={k: SplitResult.from_dict(d[k]) for k in SPLITS if isinstance(d.get(k), dict)},
                   train=SplitResult.from_dict(d["train"]) if isinstance(d.get("train"), dict) else None,
                   targets={k: SplitResult.from_dict(v) for k, v in (d.get("targets") or {}).items()})


def write_results(path: str | Path, result: RunResult) -> None:
    """``results.json`` (atomic)."""
    from ncprompt.utils import write_json

    write_json(path, _finite(result.to_dict()))


def read_results(path: str | Path) -> RunResult:
    """A :class:`RunResult` from ``results.json`` (or a run folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise ResultsError(f"{p} does not exist: is {p.parent} a finished `ncprompt train` run folder?")
    try:
        return RunResult.from_dict(json.loads(p.read_text()))
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as e:
        raise ResultsError(f"{p} is not a valid results file ({type(e).__name__}); rerun the run to rewrite it") \
            from None


def _finite(obj: Any) -> Any:
    """NaN/inf -> None, so results.json is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
