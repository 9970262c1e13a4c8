"""The typed configuration tree (pydantic; imports nothing heavy).

``RunConfig`` = ``run`` (backbone, device, output) + ``data`` + ``method`` (one model per method,
chosen by ``name``) + ``train`` + ``npt``. ``RunConfig.from_dict`` validates YAML, flags, presets
and run folders alike, naming the key of every error.
"""

from ncprompt.config.base import ConfigError, ConfigModel, describe_errors, dump_yaml, load_yaml, merge
from ncprompt.config.methods import (
    METHOD_CONFIGS,
    CoCoOpConfig,
    CoOpConfig,
    KgCoOpConfig,
    MaPLeConfig,
    MethodConfig,
    ZeroShotConfig,
    method_config_class,
    parse_method,
)
from ncprompt.config.presets import PRESETS, method_options, preset
from ncprompt.config.run import (
    DataSection,
    NPTConfig,
    RunConfig,
    RunSection,
    TrainConfig,
    flatten,
    merge_layers,
)


def save_yaml(path, cfg: RunConfig) -> None:
    """Write ``cfg`` as YAML, atomically."""
    from ncprompt.utils import atomic_write

    atomic_write(path, lambda p: p.write_text(dump_yaml(cfg.to_dict())))


__all__ = ["METHOD_CONFIGS", "PRESETS", "CoCoOpConfig", "CoOpConfig", "ConfigError", "ConfigModel", "DataSection",
           "KgCoOpConfig", "MaPLeConfig", "MethodConfig", "NPTConfig", "RunConfig", "RunSection", "TrainConfig",
           "ZeroShotConfig", "describe_errors", "dump_yaml", "flatten", "load_yaml", "merge", "merge_layers",
           "method_config_class", "method_options", "parse_method", "preset", "save_yaml"]
