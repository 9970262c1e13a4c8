"""The base of every config model, the project's config error, and YAML / dotted-override helpers.

Light on purpose: pydantic and yaml only, so ``ncprompt --help`` and config validation never load
torch or open_clip.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator


class ConfigError(ValueError):
    """A config value or file that cannot work; the message names the key (or file) and the fix."""


def _numeric(annotation: Any) -> bool:
    """Whether ``annotation`` is int or float (or a union of them with None) and not bool."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    args = typing.get_args(annotation) if union else (annotation,)
    return bool not in args and any(a in (int, float) for a in args)


def _list_item(annotation: Any) -> Any:
    """The item type of ``list[X]`` (or ``list[X] | None``), else None."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    for a in typing.get_args(annotation) if union else (annotation,):
        if typing.get_origin(a) is list and typing.get_args(a):
            return typing.get_args(a)[0]
    return None


class ConfigModel(BaseModel):
    """Strict about keys (``extra="forbid"``) and about booleans (``shots: true`` is not 1), lax about YAML
    spellings of numbers ("1e-3" is a float)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is None:
            return v
        item = _list_item(field.annotation)
        scalar = isinstance(v, bool) and _numeric(field.annotation)
        listed = isinstance(v, list) and item is not None and _numeric(item) and any(isinstance(x, bool) for x in v)
        if scalar or listed:
            raise ValueError(f"{v!r} {'is' if scalar else 'holds'} a boolean where a number is needed (YAML reads "
                             "true/false/yes/no/on/off as booleans); write the number")
        return v


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


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (plain YAML keeps the last one,
    silently); ``<<`` merge keys still override as YAML says."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise ConfigError(f"key {key!r} is given twice (lines {seen[key]} and {line}); keep one")
            if isinstance(key, typing.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (:class:`UniqueKeyLoader`)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; errors name the file (and the line of a key given twice)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist{' (it is a folder)' if p.is_dir() else ''}")
    try:
        data = read_yaml(p.read_text())
    except ConfigError as e:
        raise ConfigError(f"config file {p}: {e}") from None
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
        value = read_yaml(raw) if raw.strip() else None
    except ConfigError as e:
        raise ConfigError(f"--set {text!r}: {e}") from None
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
