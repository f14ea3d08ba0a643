"""What an inspection looks at: the object's stored validation probabilities, its ground truth and folds.

:func:`load` reads the database rows (through
:func:`worker.services.probabilities.resolve_probabilities`) and returns an :class:`Inspectable`
that holds no session, so a caller can close its transaction before the analysis runs.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from segcore.config import TaskType
from segcore.errors import DatasetError, SegcoreError
from worker.artifacts import ArtifactError, Artifacts, open_local_dataset
from worker.db.models import Dataset
from worker.errors import InvalidInput
from worker.services.datasets import BACKGROUND_NAMES, default_background
from worker.services.probabilities import resolve_probabilities
from worker.settings import Settings

__all__ = ["Source", "BACKGROUND_NAMES", "InspectionTarget", "Inspectable", "load", "describe", "cache_folder"]

#: A thing to inspect: ``("run", 3)``, ``("group", 2)`` or ``("ensemble", 5)``.
Source = tuple[str, int]


CACHE_VERSION = 1
KEEP_REPORTS = 6  # cache files kept per inspected object (older ones are removed)


class InspectionTarget(BaseModel):
    """What an inspection looks at: the object, its dataset and its stored validation images.

    ``folds`` lists the validation folds present (empty without a k-fold split); ``stores`` the
    probability stores read.
    """

    model_config = ConfigDict(frozen=True)

    kind: str
    id: int
    name: str
    dataset_id: int | None
    classes: list[str]
    task: str
    ignore_index: int
    background: int | None
    n_images: int
    folds: list[int] = Field(default_factory=list)
    stores: list[str] = Field(default_factory=list)
    method: str | None = None


@dataclasses.dataclass(frozen=True)
class Inspectable:
    """An object ready to analyse: its probabilities, ground truth and folds (no session).

    Attributes:
        target: What is inspected (shown by the page).
        source: Reads the probabilities (a store or a combined view).
        dataset: segcore's ``SegDataset`` with the ground truth.
        folds: The validation fold of each image under a k-fold split, else None.
        key: What the reports depend on (stores, combination, data), for cache file names.
    """

    target: InspectionTarget
    source: Any
    dataset: Any
    folds: dict[str, int] | None
    key: dict[str, Any]


class _Recent:
    """A few recently built values with a time to live (opened datasets, fold assignments).

    Opening a COCO dataset parses its annotation file and a fold assignment stratifies every
    image; an overlay viewer asks for both on every pan and zoom. Values are rebuilt after
    ``ttl_s``, so a dataset changed on disk is seen within that time.
    """

    def __init__(self, ttl_s: float = 120.0, size: int = 8) -> None:
        self._items: collections.OrderedDict[str, tuple[float, Any]] = collections.OrderedDict()
        self._ttl, self._size = ttl_s, size
        self._lock = threading.Lock()

    def get(self, key: str, make: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and now - hit[0] < self._ttl:
                return hit[1]
        value = make()
        with self._lock:
            self._items[key] = (now, value)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


_RECENT = _Recent()


def _data_key(settings: Settings, config: Any, extra: str = "") -> str:
    return extra + digest({"data": config.data.model_dump(mode="json", exclude={"image_size", "crop_size"}),
                            "root": str(settings.dataset_root)})


def _open_dataset(settings: Settings, config: Any, what: str) -> Any:
    data = config.data

    def make() -> Any:
        return open_local_dataset(Artifacts.from_settings(settings), data.source, classes=data.classes,
                                  task=data.task, ignore_index=data.ignore_index, dataset_root=settings.dataset_root)

    try:
        return _RECENT.get(_data_key(settings, config, "dataset:"), make)
    except (DatasetError, OSError, ArtifactError) as exc:
        raise InvalidInput(
            f"the ground truth of {what} cannot be read: {exc}. The dataset was moved or deleted under the "
            f"dataset root {settings.dataset_root}; restore it there (or register it again) and reload"
        ) from exc


def _folds_of(settings: Settings, dataset: Any, config: Any, ids: Sequence[str]) -> dict[str, int] | None:
    """The validation fold of each id under a k-fold split (None for other splits)."""
    from segcore.config import KFoldSplit
    from segcore.data.splits import fold_assignment

    split = config.data.split
    if not isinstance(split, KFoldSplit):
        return None
    try:
        assignment = _RECENT.get(_data_key(settings, config, "folds:"), lambda: fold_assignment(dataset, split))
    except SegcoreError:
        return None
    if any(i not in assignment for i in ids):
        return None
    return {i: int(assignment[i]) for i in ids}


def _background(session: Session, dataset_id: int | None, classes: Sequence[str], task: str,
                background: int | None | Literal["auto"]) -> int | None:
    if task != TaskType.MULTICLASS:
        return None
    if background == "auto":  # the dataset's own (declared at registration, or fixed on the Datasets page)
        ds = session.get(Dataset, dataset_id) if dataset_id is not None else None
        if ds is not None and list(ds.classes) == list(classes):
            return ds.background
        return default_background(classes, task, None)
    if background is not None and not 0 <= int(background) < len(classes):
        raise InvalidInput(f"background must be a class index 0..{len(classes) - 1} or None, got {background}")
    return None if background is None else int(background)



def load(
    session: Session, *, source: Source, settings: Settings, background: int | None | Literal["auto"] = "auto"
) -> Inspectable:
    """Read what inspecting ``source`` needs; the result outlives the session.

    Args:
        source: ``("run"|"group"|"ensemble", id)``.
        settings: Where the artifacts and the datasets are.
        background: Multiclass background class index, None for none, ``"auto"``: class 0 when it
            is named like a background.

    Raises:
        NotFound: the run, group or ensemble does not exist.
        InvalidInput: it has no stored validation predictions (yet), or they or the dataset cannot be read.
    """
    kind, object_id = parse_source(source)
    found = resolve_probabilities(session, actor=None, kind=kind, id=object_id, split="val",
                                  artifacts=Artifacts.from_settings(settings))
    src, config, what = found.reader, found.config, found.what
    dataset = _open_dataset(settings, config, what)
    classes = list(src.classes)
    if classes != list(config.data.classes):
        raise InvalidInput(f"the stored predictions of {what} have classes {classes} but its config lists "
                           f"{list(config.data.classes)}; predict them again")
    known = set(dataset.ids)
    missing = [i for i in src.ids if i not in known]
    if missing:
        raise InvalidInput(
            f"{len(missing)} images predicted by {what} are no longer in its dataset (e.g. {missing[:3]}); the dataset "
            "changed since the predictions were stored: restore it, or train again on the new version"
        )
    folds = _folds_of(settings, dataset, config, src.ids)
    target = InspectionTarget(
        kind=kind, id=object_id, name=found.name, dataset_id=found.dataset_id, classes=classes, task=src.task,
        ignore_index=int(config.data.ignore_index),
        background=_background(session, found.dataset_id, classes, src.task, background),
        n_images=len(src.ids), folds=sorted(set(folds.values())) if folds else [],
        stores=[i["path"] for i in found.stores], method=found.method,
    )
    key = {
        "version": CACHE_VERSION, "source": found.detail, "stores": found.stores,
        "data": config.data.source.model_dump(mode="json"), "dataset_root": str(settings.dataset_root),
    }
    return Inspectable(target=target, source=src, dataset=dataset, folds=folds, key=key)


def describe(
    session: Session, *, source: Source, settings: Settings, background: int | None | Literal["auto"] = "auto"
) -> InspectionTarget:
    """What :func:`worker.services.inspection.inspect` would look at: the object, its classes, images, folds, stores.

    Raises:
        NotFound: the run, group or ensemble does not exist.
        InvalidInput: it has no stored validation predictions (yet), or they or the dataset cannot be read.
    """
    return load(session, source=source, settings=settings, background=background).target


def parse_source(source: Any) -> tuple[str, int]:
    try:
        kind, object_id = source
        kind = getattr(kind, "value", kind)
        object_id = int(object_id)
    except (TypeError, ValueError):
        raise InvalidInput(f"a source must be ('run'|'group'|'ensemble', id), got {source!r}") from None
    if kind not in ("run", "group", "ensemble"):
        raise InvalidInput(f"unknown source kind {kind!r}; use run, group or ensemble")
    return str(kind), object_id


def one_source(run_id: int | None, group_id: int | None, ensemble_id: int | None, source: Source | None) -> Source:
    given = [(k, v) for k, v in (("run", run_id), ("group", group_id), ("ensemble", ensemble_id)) if v is not None]
    if source is not None:
        given.append(tuple(source))  # type: ignore[arg-type]  # a Source is a (kind, id) pair; tuple() loses that
    if len(given) != 1:
        raise InvalidInput("name exactly one of run_id, group_id, ensemble_id (or source=('run', id))")
    return given[0]


# --------------------------------------------------------------------------- caching


def cache_folder(settings: Settings) -> Path:
    """Where the reports are cached: ``<artifact_root>/inspection`` (``<home>/inspection`` for a remote root)."""
    if settings.artifact_root_is_local:
        return Path(str(settings.artifact_root).removeprefix("file://")) / "inspection"
    return Path(settings.home) / "inspection"


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


def prune(folder: Path, keep: Path) -> None:
    files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[KEEP_REPORTS:]:
        if old != keep:
            old.unlink(missing_ok=True)


def segcore_error(exc: SegcoreError, what: str) -> InvalidInput:
    return InvalidInput(f"the analysis of {what} failed: {exc}")

