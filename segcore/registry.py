"""A small named registry with metadata, so UIs and docs can list what exists.

Example:
    >>> LOSSES = Registry("loss")
    >>> @LOSSES.register("ce", description="Cross-entropy")
    ... def make_ce(**params): ...
    >>> LOSSES.get("ce").description
    'Cross-entropy'

A registry made with ``plugins=`` also holds the installed plugins' items of that kind
(:mod:`segcore.plugins`), after its own entries, each turned into an :class:`Entry` by ``adapt``;
the entry points are scanned only when a name that is not registered here is asked for, or when
the registry is listed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from segcore import plugins as _plugins
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

    def __init__(
        self,
        kind: str,
        *,
        plugins: str | None = None,
        adapt: Callable[[_plugins.PluginItem], Entry[T]] | None = None,
    ) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._plugin_kind = plugins
        self._adapt = adapt or _as_entry
        self._adapted: dict[str, tuple[_plugins.PluginItem, Entry[T]]] = {}

    def _plugin_entries(self) -> dict[str, Entry[T]]:
        """The plugins' entries whose names are not registered here (built-ins win)."""
        if self._plugin_kind is None:
            return {}
        out = {}
        for name, item in _plugins.items(self._plugin_kind).items():
            if name in self._entries:
                continue
            cached = self._adapted.get(name)
            if cached is None or cached[0] is not item:  # adapted once per scan
                cached = self._adapted[name] = (item, self._adapt(item))
            out[name] = cached[1]
        return out

    def _all(self) -> dict[str, Entry[T]]:
        return {**self._entries, **self._plugin_entries()}

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
        """The entry ``name``.

        Raises:
            RegistryError: an unknown name; the message lists the valid ones, plugins included.
            PluginError: a plugin declares ``name`` but failed to import or repeats another's name.
        """
        if name in self._entries:
            return self._entries[name]
        if self._plugin_kind is not None:
            _plugins.check_name(self._plugin_kind, name)
            entry = self._plugin_entries().get(name)
            if entry is not None:
                return entry
        raise RegistryError(f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}")

    def __contains__(self, name: object) -> bool:
        return name in self._entries or (isinstance(name, str) and name in self._plugin_entries())

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._all().values())

    def __len__(self) -> int:
        return len(self._all())

    def names(self) -> list[str]:
        return list(self._all())


def _as_entry(item: _plugins.PluginItem) -> Entry[Any]:
    """A plugin item as an entry: its factory, summary, parameter defaults and (losses) tasks as tags."""
    defaults = {p.name: p.default for p in item.params if not p.required}
    return Entry(item.name, item.obj, item.summary(), defaults, item.tasks)
