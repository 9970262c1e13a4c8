"""ncprompt: prompt tuning of open_clip CLIP models with neural-collapse-anchored regularisers (NPT).

Public API (loaded on first use, PEP 562, so ``import ncprompt`` stays light)::

    from ncprompt import RunConfig, run_experiment, load_backbone, build_method
    cfg = RunConfig.from_dict({"method": {"name": "coop", "n_ctx": 4}, "data": {"dataset": "fashion_mnist"}})
    result = run_experiment(cfg, "runs/coop")        # RunResult; result.accuracies()
    run = load_run("runs/coop")                       # the trained classifier: run.predict(["a.png"], top_k=3)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_NAMES: dict[str, str] = {
    # configuration (light: pydantic only)
    "RunConfig": "ncprompt.config", "RunSection": "ncprompt.config", "DataSection": "ncprompt.config",
    "TrainConfig": "ncprompt.config", "NPTConfig": "ncprompt.config", "MethodConfig": "ncprompt.config",
    "ZeroShotConfig": "ncprompt.config", "CoOpConfig": "ncprompt.config", "KgCoOpConfig": "ncprompt.config",
    "CoCoOpConfig": "ncprompt.config", "MaPLeConfig": "ncprompt.config", "ConfigError": "ncprompt.config",
    "PRESETS": "ncprompt.config",
    # models, methods, runs (torch, open_clip)
    "load_backbone": "ncprompt.backbones", "Backbone": "ncprompt.backbones",
    "build_method": "ncprompt.methods", "MethodContext": "ncprompt.methods", "PromptMethod": "ncprompt.methods",
    "register_method": "ncprompt.methods", "METHODS": "ncprompt.methods",
    "run_experiment": "ncprompt.protocols.experiment", "Experiment": "ncprompt.protocols.experiment",
    "RunResult": "ncprompt.engine.results", "SplitResult": "ncprompt.engine.results",
    "read_results": "ncprompt.engine.results",
    "load_run": "ncprompt.protocols.predict", "TrainedRun": "ncprompt.protocols.predict",
    "NPTRegularizer": "ncprompt.collapse.regularizers", "NCAccumulator": "ncprompt.metrics.neural_collapse",
}

__all__ = ["__version__", *sorted(_NAMES)]


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'ncprompt' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_NAMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))
