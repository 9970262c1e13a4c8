"""The base of every config model, the project's config error, and YAML / dotted-override helpers.

Light on purpose: pydantic and yaml only, so ``ncprompt --help`` and config validation never load
torch or open_clip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A config value or file that cannot work; the message names the key (or file) and the fix."""


class ConfigModel(BaseModel):
    """Strict about keys (``extra="forbid"``), lax about YAML spellings ("1e-3" is a float)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


def describe_errors(e: ValidationError, prefix: str = "") -> str:
    """One line naming every offending key, e.g. ``train.epochs: Input should be a valid integer (got 2.5)``."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith("function-"))
        key = ".".join(p for p in (prefix, loc) if p)
        msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling; `ncprompt train --help` lists the keys)"
        elif err["type"] not in ("value_error", "assertion_error", "missing") and "input" in err:
            got = err["input"]
            if not isinstance(got, (dict, list)):
                msg += f" (got {got!r})"
        parts.append(f"{key}: {msg}" if key else msg)
    return "; ".join(parts)


def validate(model: type[BaseModel], data: Any, where: str = "", prefix: str = "") -> Any:
    """``model.model_validate(data)`` with a :class:`ConfigError` naming the keys on failure."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{where + ': ' if where else ''}{describe_errors(e, prefix)}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist{' (it is a folder)' if p.is_dir() else ''}")
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"config file {p} is not valid YAML ({first}): fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of options (key: value), got {type(data).__name__}")
    return data


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (override wins)."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """``"train.warmup_epochs=0"`` -> (["train", "warmup_epochs"], 0); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: write KEY=VALUE, e.g. --set train.warmup_epochs=0")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return [p for p in key.strip().split(".")], value


def set_dotted(d: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """A copy of ``d`` with ``d[path[0]][path[1]]... = value`` (mappings created on the way)."""
    if len(path) == 1:
        return {**d, path[0]: value}
    inner = d.get(path[0])
    if not isinstance(inner, dict):
        inner = {"name": inner} if path[0] == "method" and isinstance(inner, str) else {}
    return {**d, path[0]: set_dotted(inner, path[1:], value)}


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)
