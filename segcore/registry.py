"""A small named registry with metadata, so UIs and docs can list what exists.

Example:
    >>> LOSSES = Registry("loss")
    >>> @LOSSES.register("ce", description="Cross-entropy")
    ... def make_ce(**params): ...
    >>> LOSSES.get("ce").description
    'Cross-entropy'
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from segcore.errors import RegistryError

__all__ = ["Entry", "Registry"]

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component: its name, the object, and what a UI shows about it."""

    name: str
    obj: T
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()


class Registry(Generic[T]):
    """Maps names to components; unknown or duplicate names raise errors listing the options."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self,
        name: str,
        *,
        description: str,
        defaults: dict[str, Any] | None = None,
        tags: tuple[str, ...] = (),
    ) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``."""

        def deco(obj: T) -> T:
            self.add(name, obj, description=description, defaults=defaults, tags=tags)
            return obj

        return deco

    def add(
        self,
        name: str,
        obj: T,
        *,
        description: str,
        defaults: dict[str, Any] | None = None,
        tags: tuple[str, ...] = (),
    ) -> None:
        if name in self._entries:
            raise RegistryError(f"duplicate {self.kind} name {name!r}: it is already registered")
        self._entries[name] = Entry(name, obj, description, dict(defaults or {}), tags)

    def get(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)
