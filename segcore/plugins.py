"""Components from other installed packages, found through Python entry points.

A package adds models, loss terms, augmentation presets or metrics by declaring entry points in
four groups (see ``docs/plugins.md``)::

    [project.entry-points."segboard.models"]
    tiny_convnet = "my_package.segboard:tiny_convnet"

The entry point's name is the item's name in configs (``model.arch: tiny_convnet``); the object it
names is the factory (the contract of each group is in :data:`GROUPS`' documentation page). What a
form shows (description, parameters) is read from the object: a ``params_model`` attribute holding
a pydantic model, else the factory's signature; the description from a ``description`` attribute,
else the first paragraph of its docstring.

Nothing is imported at ``import segcore``: the first lookup of a name that is not built in scans
the entry points once per process (:func:`discover`; :func:`refresh` scans again). A plugin that
fails to import, or whose name is already taken, does not stop the others or the built-ins: its
name is reported as broken (:func:`problems`) and a config that uses it fails with that error.
Built-in names never trigger the scan, so a config of built-ins works the same with or without
plugins installed.

Keep the module an entry point names light (import torch inside the factory): the web app's form
reads the catalog without torch.

Example:
    >>> item = get("losses", "tiny_focal")  # doctest: +SKIP
    >>> item.distribution, item.version  # doctest: +SKIP
    ('segboard-example-plugin', '0.1.0')
"""

from __future__ import annotations

import importlib.metadata as md
import inspect
import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from segcore.errors import ConfigError, PluginError

__all__ = [
    "GROUPS",
    "Param",
    "PluginItem",
    "PluginSet",
    "PluginRecord",
    "discover",
    "refresh",
    "items",
    "get",
    "check_name",
    "checked_params",
    "problems",
    "packages_used",
    "check_installed",
]

#: Item kind -> entry-point group.
GROUPS: dict[str, str] = {
    "models": "segboard.models",
    "losses": "segboard.losses",
    "augmentations": "segboard.augmentations",
    "metrics": "segboard.metrics",
}

_SINGULAR = {"models": "model", "losses": "loss", "augmentations": "augmentation preset", "metrics": "metric"}

# Keyword arguments segcore passes itself; they are not parameters a config sets.
_CONTEXT: dict[str, frozenset[str]] = {
    "models": frozenset({"in_channels", "classes", "encoder_name", "encoder_weights"}),
    "losses": frozenset({"task", "num_classes", "ignore_index"}),
    "augmentations": frozenset({"ctx"}),
    "metrics": frozenset({"tp", "fp", "fn"}),
}

# Loss names must fit the loss expression ("0.5*focal + 0.5*my_loss"); the others are free-er.
_NAME_RE = {"losses": re.compile(r"^[a-z_]+$")}
_DEFAULT_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_NAME_RULES = {"losses": "lowercase letters and '_' (names appear in loss expressions such as '0.5*my_loss')"}
_TASKS = ("multiclass", "multilabel")


@dataclass(frozen=True)
class Param:
    """One parameter of a plugin item, as a form shows it."""

    name: str
    annotation: str
    required: bool
    default: Any = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.annotation, "required": self.required,
                "default": self.default, "description": self.description}


@dataclass(frozen=True)
class PluginItem:
    """One installed plugin item: the factory and what describes it.

    Attributes:
        kind: ``models``, ``losses``, ``augmentations`` or ``metrics``.
        name: The entry point's name, used in configs.
        obj: The loaded factory.
        description: One paragraph for forms and docs.
        params: The parameters a config may set.
        params_model: A pydantic model validating the parameters, when the plugin has one.
        tasks: For losses: the tasks the term is defined for.
        distribution: The installed package that provides it (as pip names it).
        version: That package's version.
        entry_point: ``module:attribute`` of the factory.
    """

    kind: str
    name: str
    obj: Any = field(repr=False)
    description: str
    params: tuple[Param, ...]
    params_model: type[BaseModel] | None
    tasks: tuple[str, ...]
    distribution: str
    version: str
    entry_point: str

    @property
    def source(self) -> str:
        """Where the item comes from, for messages."""
        return f"entry point {self.name!r} ({self.entry_point}) of package {self.distribution} {self.version}"

    def summary(self) -> str:
        """The description followed by the parameters and the package, for a form's help text."""
        parts = [self.description.rstrip(".") + "."]
        if self.params:
            shown = ", ".join(p.name if p.required else f"{p.name}={json.dumps(p.default)}" for p in self.params)
            parts.append(f"Parameters: {shown}.")
        parts.append(f"[plugin: {self.distribution} {self.version}]")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready facts for the catalog."""
        return {"name": self.name, "description": self.summary(), "params": [p.to_dict() for p in self.params],
                "plugin": {"distribution": self.distribution, "version": self.version,
                           "entry_point": self.entry_point}}


@dataclass(frozen=True)
class PluginSet:
    """The result of one scan: loaded items and broken names, by kind."""

    items: dict[str, dict[str, PluginItem]]
    errors: dict[str, dict[str, PluginError]]


class PluginRecord(BaseModel):
    """Base of a config that records the plugin packages its items come from, in ``plugins``.

    The config fills ``plugins`` in when it is validated (name -> installed version). Data whose
    ``plugins`` names a package this machine lacks is refused with an error naming the package, so a
    worker without it says what to install instead of "unknown model". Dumps put the field last and
    leave it out while it is empty, so configs without plugins dump as they always have.
    """

    plugins: dict[Annotated[str, Field(max_length=200)], Annotated[str, Field(max_length=100)]] = Field(
        default_factory=dict, max_length=64,
        description="Plugin packages (name: version) whose items this config uses; set by validation.",
    )

    @model_validator(mode="before")
    @classmethod
    def _plugin_packages_installed(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("plugins"), dict):
            check_installed(data["plugins"])
        return data

    @model_serializer(mode="wrap")
    def _plugins_last(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        packages = data.pop("plugins", None)
        if packages:
            data["plugins"] = packages
        return data


_LOCK = threading.Lock()
_SCANNED: PluginSet | None = None


def discover() -> PluginSet:
    """The installed plugins, scanned once per process (thread-safe)."""
    global _SCANNED
    with _LOCK:
        if _SCANNED is None:
            _SCANNED = _scan()
        return _SCANNED


def refresh() -> PluginSet:
    """Scan the entry points again (after installing or removing a package in this process)."""
    global _SCANNED
    with _LOCK:
        _SCANNED = None
    return discover()


def items(kind: str) -> dict[str, PluginItem]:
    """The loaded items of ``kind`` by name (broken ones left out)."""
    return discover().items[_kind(kind)]


def get(kind: str, name: str) -> PluginItem | None:
    """The item ``name`` of ``kind``, or None when no plugin provides it.

    Raises:
        PluginError: a plugin declares ``name`` but cannot be used (failed import, duplicate name).
    """
    check_name(kind, name)
    return items(kind).get(name)


def check_name(kind: str, name: str) -> None:
    """Raise the plugin error behind ``name`` when a broken plugin declares it; otherwise nothing.

    Raises:
        PluginError: naming the entry point, its package and the fix.
    """
    error = discover().errors[_kind(kind)].get(name)
    if error is not None:
        raise error


def checked_params(item: PluginItem, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` from a config, checked against what the item declares.

    Only declared parameters are accepted (its pydantic model's fields, else its named keyword
    arguments), so a misspelt name fails instead of being ignored. With a pydantic model the values
    are validated by it and every field is passed on, defaults included.

    Raises:
        ConfigError: an unknown or missing parameter, or a value the model refuses.
    """
    what = f"{_SINGULAR[item.kind]} {item.name!r}"
    names = [p.name for p in item.params]
    for key in params:
        if key not in names:
            raise ConfigError(f"{what} has no parameter {key!r}; its parameters are: {', '.join(names) or 'none'}")
    if item.params_model is None:
        missing = [p.name for p in item.params if p.required and p.name not in params]
        if missing:
            raise ConfigError(f"{what} needs parameter(s) {', '.join(missing)}; set them in its params")
        return dict(params)
    try:
        return item.params_model.model_validate(dict(params)).model_dump()
    except ValidationError as exc:
        shown = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'params'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{what}: invalid parameters ({shown})") from exc


def problems() -> list[str]:
    """Every broken plugin entry point, one message each (for the catalog, the form and doctor-style checks)."""
    return [str(e) for errors in discover().errors.values() for e in errors.values()]


def packages_used(names: Iterable[tuple[str, str]], builtins: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """The plugin packages (name -> installed version) that provide the given items.

    Args:
        names: ``(kind, name)`` pairs a config uses.
        builtins: Built-in names per kind; those never scan the entry points.
    """
    out: dict[str, str] = {}
    for kind, name in names:
        if name in set(builtins.get(kind, ())):
            continue
        item = items(kind).get(name)
        if item is not None:
            out[item.distribution] = item.version
    return dict(sorted(out.items()))


def check_installed(packages: Mapping[str, Any]) -> None:
    """Refuse a config that records plugin packages this machine lacks.

    Args:
        packages: Package name -> version, as a validated config records them (``plugins``).

    Raises:
        PluginError: naming each missing package, its version and how to install it.
    """
    missing = []
    for dist, version in packages.items():
        try:
            md.distribution(str(dist))
        except md.PackageNotFoundError:
            missing.append((str(dist), str(version)))
    if missing:
        shown = ", ".join(f"{d} {v}" for d, v in missing)
        pins = " ".join(f"'{d}=={v}'" for d, v in missing)
        raise PluginError(
            f"this config uses plugin package(s) {shown}, not installed on this machine; install them here "
            f"and on every worker (pip install {pins}), then restart the worker"
        )


# ---------------------------------------------------------------- scanning


def _kind(kind: str) -> str:
    if kind not in GROUPS:
        raise PluginError(f"unknown plugin kind {kind!r}; valid kinds: {', '.join(GROUPS)}")
    return kind


def _builtin_names() -> dict[str, frozenset[str]]:
    from segcore import catalog  # imported here: catalog imports this module

    return {
        "models": frozenset(catalog.BUILTIN_ARCHITECTURES),
        "losses": frozenset(catalog.BUILTIN_LOSSES),
        "augmentations": frozenset(catalog.BUILTIN_AUGMENTATION_PRESETS),
        "metrics": frozenset(catalog.BUILTIN_METRICS),
    }


def _dist(ep: md.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "an unknown package", "?"
    return str(dist.metadata["Name"] or dist.name), str(dist.version)


def _source(ep: md.EntryPoint) -> str:
    name, version = _dist(ep)
    return f"entry point {ep.name!r} ({ep.value}) of package {name} {version}"


def _scan() -> PluginSet:
    builtins = _builtin_names()
    found: dict[str, dict[str, PluginItem]] = {k: {} for k in GROUPS}
    errors: dict[str, dict[str, PluginError]] = {k: {} for k in GROUPS}
    for kind, group in GROUPS.items():
        what = _SINGULAR[kind]
        for ep in sorted(md.entry_points(group=group), key=lambda e: (e.name, e.value)):
            rule = _NAME_RE.get(kind, _DEFAULT_NAME_RE)
            if not rule.match(ep.name):
                allowed = _NAME_RULES.get(kind, "letters, digits, '_', '.' and '-', starting with a letter")
                errors[kind][ep.name] = PluginError(
                    f"{_source(ep)} in group {group} has an invalid {what} name; use {allowed} and reinstall "
                    "the package"
                )
                continue
            if ep.name in builtins[kind]:
                errors[kind][ep.name] = PluginError(
                    f"{what} name {ep.name!r} is defined twice: built into segcore and by {_source(ep)}; "
                    "rename the entry point in that package and reinstall it"
                )
                continue
            if ep.name in errors[kind]:
                continue  # already broken (a third definition changes nothing)
            if ep.name in found[kind]:
                first = found[kind].pop(ep.name)
                errors[kind][ep.name] = PluginError(
                    f"{what} name {ep.name!r} is defined twice: by {first.source} and by {_source(ep)}; "
                    "rename one of the entry points and reinstall that package, or uninstall one package"
                )
                continue
            try:
                found[kind][ep.name] = _load(kind, ep)
            except PluginError as exc:
                errors[kind][ep.name] = exc
    return PluginSet(items=found, errors=errors)


def _load(kind: str, ep: md.EntryPoint) -> PluginItem:
    dist, version = _dist(ep)
    try:
        obj = ep.load()
    except Exception as exc:  # any error in a plugin's import is reported, never fatal (re-raised)
        raise PluginError(
            f"plugin {_SINGULAR[kind]} {_source(ep)} failed to import ({type(exc).__name__}: {exc}); fix or "
            f"reinstall the package (pip install --force-reinstall {dist}) or uninstall it (pip uninstall {dist})"
        ) from exc
    if not callable(obj):
        raise PluginError(f"{_source(ep)} names a {type(obj).__name__}, not a factory; point it at a "
                          "function or class (see docs/plugins.md)")
    params_model = getattr(obj, "params_model", None)
    if params_model is not None and not (isinstance(params_model, type) and issubclass(params_model, BaseModel)):
        raise PluginError(f"{_source(ep)}: params_model must be a pydantic model class")
    tasks = tuple(getattr(obj, "tasks", _TASKS)) if kind == "losses" else ()
    if kind == "losses" and (not tasks or any(t not in _TASKS for t in tasks)):
        raise PluginError(f"{_source(ep)}: tasks must list 'multiclass' and/or 'multilabel', got {tasks!r}")
    return PluginItem(
        kind=kind, name=ep.name, obj=obj, description=_description(obj),
        params=_params_of_model(params_model) if params_model is not None else _params_of_signature(kind, obj),
        params_model=params_model, tasks=tasks, distribution=dist, version=version, entry_point=ep.value,
    )


def _description(obj: Any) -> str:
    text = getattr(obj, "description", None)
    if not isinstance(text, str) or not text.strip():
        doc = inspect.getdoc(obj) or ""
        text = doc.split("\n\n", 1)[0]
    return " ".join(text.split()) or "(no description)"


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _annotation(a: Any) -> str:
    if a is inspect.Parameter.empty:
        return "any"
    return a if isinstance(a, str) else getattr(a, "__name__", None) or str(a)


def _params_of_signature(kind: str, obj: Any) -> tuple[Param, ...]:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return ()
    out = []
    for i, (name, p) in enumerate(sig.parameters.items()):
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or name in _CONTEXT[kind]:
            continue
        if kind == "augmentations" and i == 0:
            continue  # the preset context, whatever its name
        required = p.default is inspect.Parameter.empty
        out.append(Param(name, _annotation(p.annotation), required, None if required else _jsonable(p.default)))
    return tuple(out)


def _params_of_model(model: type[BaseModel]) -> tuple[Param, ...]:
    out = []
    for name, f in model.model_fields.items():
        required = f.is_required()
        default = None if required else _jsonable(f.get_default(call_default_factory=True))
        out.append(Param(name, _annotation(f.annotation), required, default, f.description or ""))
    return tuple(out)
