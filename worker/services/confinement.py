"""Where data may live: every path a config or a form names must lie inside a configured root (docs/access.md).

The allowed places come from the settings (:meth:`DataRoots.from_settings`):

- **datasets** (a dataset source's root, images, masks, annotations, test images and split lists, and
  ``data.pseudo_labels``): ``dataset_root`` and ``extra_dataset_roots`` when they are local folders;
  ``dataset_root`` when it is an fsspec URL, and ``remote_dataset_prefixes``; and
  ``<artifact_root>/pseudo``, where pseudo-label rounds write their datasets;
- **encoder weights** (``model.encoder_weights_path``): the local dataset roots, the artifact root and
  the pretrained-weights cache (``weights_dir``).

A local path resolves with its symlinks (``os.path.realpath``; relative paths against ``dataset_root``,
or against the dataset's root for the paths inside a dataset); a URL is normalised and compared with
the allowed prefixes. No path may use ``..``. A refusal names the field and the allowed places, and
says the same whether the target exists or not: nothing is read, and the resolved path is not shown.

Example:
    >>> roots = DataRoots.from_settings(settings)  # doctest: +SKIP
    >>> check_location("../../etc", field="data.source.root", roots=roots)  # doctest: +SKIP
    InvalidInput: data.source.root: '../../etc' is not inside the folders data may be read from: ...
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from worker.errors import InvalidInput

__all__ = ["Area", "DataRoots", "data_roots", "describe_roots", "check_location", "resolve_location", "is_url",
           "source_problems", "config_problems", "check_source", "check_config"]


class Area(str, enum.Enum):
    """Which allowed places a field's paths must lie in."""

    DATASETS = "datasets"
    WEIGHTS = "weights"


def _is_url(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def is_url(location: str) -> bool:
    """Whether ``location`` is an fsspec URL (``file://`` counts as local)."""
    return _is_url(str(location))


def _normal_url(url: str) -> str | None:
    """``scheme://a/b/c`` without empty or ``.`` segments; None when it holds ``..`` (also %-encoded) or ``::``."""
    scheme, _, rest = url.partition("://")
    if not scheme or "::" in url or "\\" in url:
        return None
    parts = []
    for part in rest.split("/"):
        if unquote(part) in ("..",) or "/" in unquote(part) or "\\" in unquote(part):
            return None
        if part in ("", "."):
            continue
        parts.append(part)
    return f"{scheme.lower()}://" + "/".join(parts)


def _real(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


@dataclasses.dataclass(frozen=True)
class _Places:
    local: tuple[str, ...]
    remote: tuple[str, ...]

    def holds_local(self, real: str) -> bool:
        return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in self.local)

    def holds_url(self, url: str) -> bool:
        return any(url == prefix or url.startswith(prefix.rstrip("/") + "/") for prefix in self.remote)

    def describe(self) -> str:
        shown = [*self.local, *self.remote]
        return ", ".join(shown) if shown else "none is configured"


@dataclasses.dataclass(frozen=True)
class DataRoots:
    """The places data may be read from, built once from the settings and passed to the services.

    Attributes:
        dataset_root: What a relative dataset location is relative to (a local folder or a URL).
        places: For each :class:`Area`, the local folders (resolved) and URL prefixes (normalised).
    """

    dataset_root: str
    places: dict[Area, _Places]

    @classmethod
    def from_settings(cls, settings: Any) -> DataRoots:
        """The roots of ``settings`` (``dataset_root``, ``extra_dataset_roots``, ``remote_dataset_prefixes``,
        ``artifact_root``)."""
        dataset_root = str(settings.dataset_root)
        artifact_root = str(settings.artifact_root).rstrip("/") or "/"
        pseudo = artifact_root + "/pseudo"
        ds_local: list[str] = []
        ds_remote: list[str] = []
        for loc in [dataset_root, *settings.extra_dataset_roots]:
            (ds_remote if _is_url(loc) else ds_local).append(loc)
        ds_remote += list(settings.remote_dataset_prefixes)

        def places(local: Iterable[str], remote: Iterable[str]) -> _Places:
            urls = [u for u in (_normal_url(r) for r in remote) if u is not None]
            reals = [_real(p.removeprefix("file://")) for p in local]
            return _Places(tuple(dict.fromkeys(reals)), tuple(dict.fromkeys(urls)))

        pseudo_local: list[str] = [] if _is_url(pseudo) else [pseudo]
        pseudo_remote: list[str] = [pseudo] if _is_url(pseudo) else []
        art_local = [] if _is_url(artifact_root) else [artifact_root]
        weights_cache = getattr(settings, "weights_path", None)  # the pretrained-weights cache (docs/weights.md)
        if weights_cache is not None:
            art_local.append(str(weights_cache))
        return cls(
            dataset_root=dataset_root,
            places={
                Area.DATASETS: places([*ds_local, *pseudo_local], [*ds_remote, *pseudo_remote]),
                Area.WEIGHTS: places([*ds_local, *art_local], []),
            },
        )

    def describe(self, area: Area = Area.DATASETS) -> str:
        """The allowed places of ``area`` in one line, for messages and help texts."""
        return self.places[area].describe()


def data_roots(settings: Any | None = None) -> DataRoots:
    """The :class:`DataRoots` of ``settings``, or of this process's current settings when None.

    Services take ``roots=`` from their caller; when a caller passes none, they use this, so that the
    check is never skipped.
    """
    if settings is None:
        from worker.settings import get_settings

        settings = get_settings()
    return DataRoots.from_settings(settings)


def describe_roots(settings: Any | None = None) -> str:
    """Where datasets may be registered from, in one line (the Datasets page's help text)."""
    return data_roots(settings).describe(Area.DATASETS)


def _shown(value: str) -> str:
    text = value if len(value) <= 120 else value[:117] + "..."
    return repr(text)


def _refusal(field: str, value: str, roots: DataRoots, area: Area) -> str:
    return (
        f"{field}: {_shown(value)} is not inside the folders data may be read from ({roots.describe(area)}; "
        "symlinks resolved, no '..'); move the data there, or ask an admin to add its folder to "
        "extra_dataset_roots (a URL prefix to remote_dataset_prefixes)"
    )


def check_location(
    value: str, *, field: str, roots: DataRoots, area: Area = Area.DATASETS, base: str | None = None
) -> str:
    """Resolve ``value`` (a path or fsspec URL) and check that it lies inside the allowed places of ``area``.

    Args:
        value: What the config or form holds.
        field: The dotted field path the message names, e.g. ``data.split.train``.
        roots: The allowed places (:func:`data_roots`).
        area: Which of them apply to this field.
        base: What a relative ``value`` is relative to; default ``roots.dataset_root``. Pass an already
            checked location (a dataset's resolved root).

    Returns:
        The resolved location: a real local path, or a normalised URL.

    Raises:
        InvalidInput: naming ``field`` and the allowed places; the same message whether the target
            exists or not.
    """
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{field}: give a path (text), got {type(value).__name__}")
    if "\x00" in value or any(ord(c) < 32 for c in value):
        raise InvalidInput(f"{field}: a path must not contain control characters (such as NUL or a line break)")
    base = roots.dataset_root if base is None else base
    places = roots.places[area]
    if _is_url(value):
        url = _normal_url(value)
        if url is None or not places.holds_url(url):
            raise InvalidInput(_refusal(field, value, roots, area))
        return url
    local = value.removeprefix("file://")
    if ".." in local.replace("\\", "/").split("/"):
        raise InvalidInput(_refusal(field, value, roots, area))
    expanded = os.path.expanduser(local)
    if not os.path.isabs(expanded):
        if _is_url(base):
            url = _normal_url(base.rstrip("/") + "/" + local)
            if url is None or not places.holds_url(url):
                raise InvalidInput(_refusal(field, value, roots, area))
            return url
        expanded = os.path.join(base.removeprefix("file://"), expanded)
    try:
        real = _real(expanded)
    except (OSError, ValueError):
        raise InvalidInput(_refusal(field, value, roots, area)) from None
    if not places.holds_local(real):
        raise InvalidInput(_refusal(field, value, roots, area))
    return real


def resolve_location(value: str, *, base: str) -> str:
    """Where ``value`` points, resolved as :func:`check_location` does but not checked against any root.

    Returns:
        A real local path or a normalised URL (``value`` unchanged when it cannot be resolved).
    """
    try:
        if _is_url(value):
            return _normal_url(value) or value
        local = os.path.expanduser(value.removeprefix("file://"))
        if not os.path.isabs(local):
            if _is_url(base):
                return _normal_url(base.rstrip("/") + "/" + value) or value
            local = os.path.join(base.removeprefix("file://"), local)
        return _real(local)
    except (OSError, ValueError):
        return value


def _inner(value: str, field: str, root: str, roots: DataRoots) -> tuple[str, str] | None:
    """A path inside a dataset (images, masks, a split list): relative to its already checked ``root``."""
    try:
        if _is_url(root):
            if _is_url(value) or value.startswith(("/", "~", "file://")):
                raise InvalidInput(
                    f"{field}: {_shown(value)} must be relative to the dataset's root {root} (no leading '/')"
                )
        check_location(value, field=field, roots=roots, base=root)
    except InvalidInput as exc:
        return field, str(exc).removeprefix(f"{field}: ")
    return None


def source_problems(source: Any, *, roots: DataRoots, prefix: str = "data.source", base: str | None = None,
                    split: Any = None, split_prefix: str = "data.split") -> list[tuple[str, str]]:
    """``[(field, message), ...]`` for every path of a dataset source (and of a predefined split) outside the roots.

    Args:
        source: A segcore ``DatasetSource`` or its dict form.
        roots: The allowed places.
        prefix: The dotted path of the source in its form or config.
        base: What a relative ``root`` is relative to; default ``roots.dataset_root``.
        split: The config's ``data.split`` (its ``train``/``val`` lists are checked when predefined).
        split_prefix: The dotted path of the split.
    """
    data = source.model_dump(mode="json") if hasattr(source, "model_dump") else dict(source or {})
    try:
        root = check_location(str(data.get("root", "")), field=f"{prefix}.root", roots=roots, base=base)
    except InvalidInput as exc:
        return [(f"{prefix}.root", str(exc).removeprefix(f"{prefix}.root: "))]
    out = []
    for key in ("images", "masks", "annotations", "test_images"):
        value = data.get(key)
        if value is not None and (problem := _inner(str(value), f"{prefix}.{key}", root, roots)):
            out.append(problem)
    sp = split.model_dump(mode="json") if hasattr(split, "model_dump") else dict(split or {})
    if sp.get("kind") == "predefined":
        for key in ("train", "val"):
            if sp.get(key) is not None and (problem := _inner(str(sp[key]), f"{split_prefix}.{key}", root, roots)):
                out.append(problem)
    return out


def config_problems(config: Any, *, roots: DataRoots) -> list[tuple[str, str]]:
    """``[(field, message), ...]`` for every path of an ``ExperimentConfig`` outside the allowed places.

    Checks ``data.source`` (root, images, masks, annotations, test images), a predefined split's
    ``train``/``val`` lists, each of ``data.pseudo_labels`` and ``model.encoder_weights_path``.
    """
    out = source_problems(config.data.source, roots=roots, split=config.data.split)
    for k, loc in enumerate(config.data.pseudo_labels):
        field = f"data.pseudo_labels.{k}"
        try:
            check_location(loc, field=field, roots=roots)
        except InvalidInput as exc:
            out.append((field, str(exc).removeprefix(f"{field}: ")))
    weights = config.model.encoder_weights_path
    if weights is not None:
        field = "model.encoder_weights_path"
        try:
            if _is_url(weights) or not os.path.isabs(os.path.expanduser(weights.removeprefix("file://"))):
                raise InvalidInput(f"{field}: give the absolute path of a local weights file")
            check_location(weights, field=field, roots=roots, area=Area.WEIGHTS)
        except InvalidInput as exc:
            out.append((field, str(exc).removeprefix(f"{field}: ")))
    return out


def _raise(problems: list[tuple[str, str]], what: str) -> None:
    if problems:
        raise InvalidInput(f"{what}:\n" + "\n".join(f"{field}: {msg}" for field, msg in problems))


def check_source(source: Any, *, roots: DataRoots, prefix: str = "source", base: str | None = None) -> None:
    """Refuse a dataset source with any path outside the allowed places (registration).

    Args:
        base: What a relative ``source.root`` is relative to; default ``roots.dataset_root``.

    Raises:
        InvalidInput: one line per refused field.
    """
    _raise(source_problems(source, roots=roots, prefix=prefix, base=base),
           "the dataset's files are not where data may live")


def check_config(config: Any, *, roots: DataRoots) -> None:
    """Refuse a config with any path outside the allowed places (the worker's check before a run or a job).

    Raises:
        InvalidInput: one line per refused field.
    """
    _raise(config_problems(config, roots=roots), "the config names files outside the folders data may be read from")
