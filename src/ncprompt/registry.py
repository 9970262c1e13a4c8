"""Name -> builder registries (methods, datasets, backbones), in the style of timm's ``register_model``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A case-insensitive mapping from names to objects, filled with ``@REGISTRY.register("name")``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        key = name.lower()

        def deco(obj: T) -> T:
            if key in self._items and self._items[key] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[key] = obj
            doc = help or (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]
            self._help[key] = doc
            return obj

        return deco

    def get(self, name: str) -> T:
        key = name.lower()
        if key not in self._items:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        return self._items[key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)

    def describe(self, name: str) -> str:
        return self._help.get(name.lower(), "")
