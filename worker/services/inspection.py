"""Error inspection of runs, fold/seed groups and ensembles, from their stored validation probabilities.

Nothing here runs a model: the analysis reads the probability stores the runs wrote and the
dataset's ground truth, in the calling process (``segcore.analysis``), and caches each report as
a JSON file under ``<artifact_root>/inspection/``. A cache file is named by a digest of what the
report depends on: every probability store read (its path, the SHA-256 of its manifest and the
manifest's modification time), how they are combined (an ensemble's method and weights), the
ground truth's location and the analysis parameters. A store rewritten in place gets a new
manifest (new entry checksums and creation time), so a stale report is never served.

What is inspected:

- a **run**: its validation store (``predictions/val`` of its run folder);
- a **group** (k folds x m seeds): its out-of-fold store when one was recorded, else the union of
  its finished fold runs' validation stores (an image predicted by several seeds gets the mean
  of their probabilities);
- an **ensemble**: its members' validation / out-of-fold probabilities combined image by image
  with the ensemble's method and weights, on the images every member has (an ensemble keeps no
  validation store of its own, only its scores).

Every function takes the session first and keyword-only arguments, reads only, and leaves the
transaction to the caller.

Example:
    >>> report = inspect_run(session, run_id=3, settings=settings)  # doctest: +SKIP
    >>> report.taxonomy.shares  # doctest: +SKIP
    {'under_prediction': 0.45, 'over_prediction': 0.33, 'wrong_class': 0.21}
    >>> view = overlay(session, source=("run", 3), image_id="img_007", settings=settings,
    ...                region=(0, 0, 512, 512), downscale=2)  # doctest: +SKIP
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

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from segcore.analysis import (
    COMPARISON_LEGEND,
    DEFAULT_SIZE_BINS,
    ERROR_LEGEND,
    AnalysisReport,
    ComparisonReport,
    OverlayPanels,
    WorstImage,
    analyze_store,
    compare_stores,
    default_palette,
    render_comparison,
    render_overlay,
)
from segcore.errors import ConfigError, DatasetError, EnsembleError, SegcoreError, StoreError
from segcore.io import atomic_write_text
from worker.artifacts import ArtifactError, Artifacts
from worker.db.models import Ensemble, Run, RunGroup, RunStatus, SourceKind
from worker.errors import InvalidInput, NotFound
from worker.services._common import get_or_raise
from worker.settings import Settings

__all__ = [
    "Source",
    "BACKGROUND_NAMES",
    "InspectionTarget",
    "OverlayView",
    "describe",
    "inspect",
    "inspect_run",
    "inspect_ensemble",
    "inspect_group",
    "compare",
    "overlay",
    "compare_overlay",
    "worst_images",
    "cache_folder",
]

#: A thing to inspect: ``("run", 3)``, ``("group", 2)`` or ``("ensemble", 5)``.
Source = tuple[str, int]

#: Names of a multiclass class 0 that make it the background of the error taxonomy.
BACKGROUND_NAMES = frozenset({"background", "bg", "_background_", "__background__", "backgrounds"})

_CACHE_VERSION = 1
_KEEP_REPORTS = 6  # cache files kept per inspected object (older ones are removed)
_METHODS = {"soft": "soft", "weighted": "soft", "geometric": "geometric", "majority": "vote"}


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
class OverlayView:
    """One rendered viewport of an image, for the overlay viewer.

    Attributes:
        image_id: The image.
        height: Full-resolution height of the image.
        width: Full-resolution width.
        region: ``(y0, x0, y1, x1)`` that was rendered, in full-resolution pixels.
        downscale: Every ``downscale``-th pixel of the region was kept.
        panels: Image, ground truth, prediction and error map (``hxwx3`` uint8 each).
        classes: Class names in index order.
        palette: ``Cx3`` uint8 class colours of the ground-truth and prediction panels.
        legend: The error map's ``(label, (r, g, b))`` entries (fixed colours).
    """

    image_id: str
    height: int
    width: int
    region: tuple[int, int, int, int]
    downscale: int
    panels: OverlayPanels
    classes: list[str]
    palette: np.ndarray
    legend: list[tuple[str, tuple[int, int, int]]]


# --------------------------------------------------------------------------- probability sources


class _UnionSource:
    """A group's out-of-fold probabilities from its fold runs' validation stores."""

    def __init__(self, readers: Sequence[Any]) -> None:
        self._readers = list(readers)
        first = self._readers[0]
        self.classes, self.task = list(first.classes), first.task
        for r in self._readers[1:]:
            if list(r.classes) != self.classes or r.task != self.task:
                raise InvalidInput(
                    f"the runs of this group stored different classes or tasks ({r.path}); inspect its runs one by one"
                )
        owners: dict[str, list[Any]] = {}
        for r in self._readers:
            for image_id in r.ids:
                owners.setdefault(image_id, []).append(r)
        self._owners = owners
        self.ids = sorted(owners)

    def read(self, image_id: str) -> np.ndarray:
        readers = self._owners[image_id]
        if len(readers) == 1:
            return readers[0].read(image_id)
        out = readers[0].read(image_id).astype(np.float32, copy=True)
        for r in readers[1:]:
            out += r.read(image_id)
        out /= np.float32(len(readers))
        return out


class _EnsembleSource:
    """An ensemble's validation probabilities, combined image by image from its members' sources."""

    def __init__(self, members: Sequence[Any], *, method: str, weights: Sequence[float]) -> None:
        from segcore.ensemble import ensemble_probs

        self._combine = ensemble_probs
        self._members = list(members)
        first = self._members[0]
        self.classes, self.task = list(first.classes), first.task
        for m in self._members[1:]:
            if list(m.classes) != self.classes or m.task != self.task:
                raise InvalidInput(
                    "the ensemble's members stored different classes or tasks; an ensemble must combine "
                    "predictions of the same classes"
                )
        shared = set(first.ids)
        for m in self._members[1:]:
            shared &= set(m.ids)
        self.ids = [i for i in first.ids if i in shared]
        self._method = method
        self._weights = list(weights)

    def read(self, image_id: str) -> np.ndarray:
        probs = [m.read(image_id) for m in self._members]
        method: Any = self._method
        return self._combine(probs, task=self.task, method=method, weights=self._weights)


@dataclasses.dataclass
class _Prepared:
    target: InspectionTarget
    source: Any
    dataset: Any
    folds: dict[str, int] | None
    key: dict[str, Any]


def _store_identity(path: str) -> dict[str, Any]:
    """Path, manifest checksum and modification time of a store: a rewrite changes them."""
    manifest = Path(path) / "manifest.json"
    try:
        data = manifest.read_bytes()
        mtime = manifest.stat().st_mtime_ns
    except OSError as exc:
        raise StoreError(f"no probability store at {path} ({exc.strerror})") from exc
    return {"path": str(Path(path).resolve()), "sha256": hashlib.sha256(data).hexdigest(), "mtime_ns": mtime}


def _store_path(settings: Settings, path: str) -> str:
    """A local path to the store: relative to the artifact root, fetched when that root is remote."""
    try:
        return str(Artifacts.from_settings(settings).fetch(path))
    except ArtifactError as exc:
        raise StoreError(str(exc)) from exc


def _open_store(settings: Settings, path: str | None, what: str, hint: str) -> tuple[Any, dict[str, Any]]:
    from segcore.inference.store import ProbabilityStore

    if not path:
        raise InvalidInput(f"{what} has no stored validation predictions yet; {hint}")
    p = _store_path(settings, path)
    try:
        reader = ProbabilityStore.open(p)
        identity = _store_identity(p)
    except StoreError as exc:
        raise InvalidInput(
            f"the stored validation predictions of {what} cannot be read ({exc}); they were moved or deleted: "
            "train the run again, or run an evaluate job with a TTA policy to predict them again"
        ) from exc
    return reader, identity


def _run_config(run: Run) -> Any:
    from segcore.config import parse_config

    try:
        return parse_config(run.config)
    except SegcoreError as exc:
        raise InvalidInput(
            f"the stored config of run {run.id} is no longer valid ({exc}); inspect another run"
        ) from exc


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
    return extra + _digest({"data": config.data.model_dump(mode="json", exclude={"image_size", "crop_size"}),
                            "root": str(settings.dataset_root)})


def _open_dataset(settings: Settings, config: Any, what: str) -> Any:
    from segcore.data.formats import open_dataset

    data = config.data

    def make() -> Any:
        source, root = Artifacts.from_settings(settings).local_source(data.source, settings.dataset_root)
        return open_dataset(source, classes=data.classes, task=data.task, ignore_index=data.ignore_index,
                            dataset_root=root)

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


def _background(classes: Sequence[str], task: str, background: int | None | Literal["auto"]) -> int | None:
    if task != "multiclass":
        return None
    if background == "auto":
        return 0 if classes and str(classes[0]).strip().lower() in BACKGROUND_NAMES else None
    if background is not None and not 0 <= int(background) < len(classes):
        raise InvalidInput(f"background must be a class index 0..{len(classes) - 1} or None, got {background}")
    return None if background is None else int(background)


def _finished_run(session: Session, run_id: int) -> Run:
    run = get_or_raise(session, Run, run_id, "run")
    if run.status is not RunStatus.SUCCEEDED and not run.val_store:
        raise InvalidInput(
            f"run {run.id} ({run.name}) is {run.status.value}: its validation predictions are stored when it "
            "finishes; inspect it then"
        )
    return run


def _prepare_run(session: Session, settings: Settings, run_id: int) -> tuple[Any, Any, Any, list[dict[str, Any]], str]:
    run = _finished_run(session, run_id)
    what = f"run {run.id} ({run.name})"
    reader, identity = _open_store(
        settings, run.val_store, what,
        "they are written when a training finishes: wait for it, or queue the run again",
    )
    return run, _run_config(run), reader, [identity], what


def _group_runs(session: Session, group: RunGroup) -> list[Run]:
    import sqlalchemy as sa

    return list(session.scalars(sa.select(Run).where(Run.group_id == group.id).order_by(Run.id)))


def _prepare_group(
    session: Session, settings: Settings, group_id: int
) -> tuple[Any, Any, list[dict[str, Any]], str, Run]:
    group = get_or_raise(session, RunGroup, group_id, "group")
    what = f"group {group.id} ({group.label})"
    members = _group_runs(session, group)
    if not members:
        raise InvalidInput(f"{what} has no runs")
    config_run = next((r for r in members if r.status is RunStatus.SUCCEEDED), members[0])
    if group.oof_store:
        reader, identity = _open_store(settings, group.oof_store, what, "")
        return reader, _run_config(config_run), [identity], what, config_run
    done = [r for r in members if r.val_store]
    if not done:
        raise InvalidInput(
            f"{what} has no stored validation predictions yet: none of its {len(members)} runs finished; "
            "inspect it when the first fold finished"
        )
    readers, identities = [], []
    for r in done:
        reader, identity = _open_store(settings, r.val_store, f"run {r.id} ({r.name})", "")
        readers.append(reader)
        identities.append(identity)
    return _UnionSource(readers), _run_config(done[0]), identities, what, done[0]


def _member_source(
    session: Session, settings: Settings, kind: str, member_id: int, depth: int
) -> tuple[Any, Any, list[dict[str, Any]], Any]:
    """(source, config, store identities, key detail) of an ensemble member."""
    if kind == SourceKind.RUN.value:
        run, config, reader, ids, _ = _prepare_run(session, settings, member_id)
        return reader, config, ids, {"run": run.id}
    if kind == SourceKind.GROUP.value:
        src, config, ids, _, _ = _prepare_group(session, settings, member_id)
        return src, config, ids, {"group": member_id}
    if kind == SourceKind.ENSEMBLE.value:
        if depth > 4:
            raise InvalidInput("ensembles nest more than 4 levels deep; inspect an inner ensemble")
        src, config, ids, detail, _ = _prepare_ensemble(session, settings, member_id, depth + 1)
        return src, config, ids, detail
    raise InvalidInput(f"unknown ensemble member kind {kind!r}; use run, group or ensemble")


def _prepare_ensemble(
    session: Session, settings: Settings, ensemble_id: int, depth: int = 0
) -> tuple[Any, Any, list[dict[str, Any]], dict[str, Any], Ensemble]:
    ens = get_or_raise(session, Ensemble, ensemble_id, "ensemble")
    what = f"ensemble {ens.id} ({ens.name})"
    members = list(ens.members or [])
    if not members:
        raise InvalidInput(f"{what} has no members")
    sources, identities, details, config = [], [], [], None
    for m in members:
        kind, mid = str(m.get("kind")), int(m.get("id"))
        try:
            src, cfg, ids, detail = _member_source(session, settings, kind, mid, depth)
        except NotFound as exc:
            raise InvalidInput(f"{what} lists {kind} {mid}, which was deleted; its validation predictions are gone, "
                               "so the ensemble cannot be inspected") from exc
        except InvalidInput as exc:
            raise InvalidInput(f"{what} cannot be inspected: member {kind} {mid}: {exc}") from exc
        sources.append(src)
        identities += ids
        details.append(detail)
        config = config or cfg
    method = _METHODS.get(getattr(ens.method, "value", str(ens.method)), "soft")
    # the saved weights, whatever the method: a weight search may have set them for a soft mean too
    weights = [float(m.get("weight", 1.0)) for m in members]
    source = _EnsembleSource(sources, method=method, weights=weights)
    if not source.ids:
        raise InvalidInput(
            f"the members of {what} share no validation image (e.g. single runs of different folds); "
            "build the ensemble from fold/seed groups, whose out-of-fold predictions cover every image"
        )
    detail = {"ensemble": ens.id, "method": method, "weights": weights, "members": details}
    return source, config, identities, detail, ens


def _prepare(session: Session, settings: Settings, source: Source, background: Any) -> _Prepared:
    kind, object_id = _parse_source(source)
    if kind == "run":
        run, config, reader, identities, what = _prepare_run(session, settings, object_id)
        src: Any = reader
        name, dataset_id, method, detail = run.name, run.dataset_id, None, {"run": run.id}
    elif kind == "group":
        src, config, identities, what, _ = _prepare_group(session, settings, object_id)
        group = session.get(RunGroup, object_id)
        name, dataset_id, method, detail = group.label, group.dataset_id, None, {"group": object_id}
    else:
        src, config, identities, detail, ens = _prepare_ensemble(session, settings, object_id)
        what = f"ensemble {ens.id} ({ens.name})"
        name, dataset_id, method = ens.name, ens.dataset_id, getattr(ens.method, "value", str(ens.method))
    dataset = _open_dataset(settings, config, what)
    classes = list(src.classes)
    if classes != list(config.data.classes):
        raise InvalidInput(
            f"the stored predictions of {what} have classes {classes} but its config lists "
            f"{list(config.data.classes)}; "
            "predict them again"
        )
    known = set(dataset.ids)
    missing = [i for i in src.ids if i not in known]
    if missing:
        raise InvalidInput(
            f"{len(missing)} images predicted by {what} are no longer in its dataset (e.g. {missing[:3]}); the dataset "
            "changed since the predictions were stored: restore it, or train again on the new version"
        )
    folds = _folds_of(settings, dataset, config, src.ids)
    bg = _background(classes, src.task, background)
    target = InspectionTarget(
        kind=kind, id=object_id, name=name, dataset_id=dataset_id, classes=classes, task=src.task,
        ignore_index=int(config.data.ignore_index), background=bg, n_images=len(src.ids),
        folds=sorted(set(folds.values())) if folds else [], stores=[i["path"] for i in identities], method=method,
    )
    key = {
        "version": _CACHE_VERSION, "source": detail, "stores": identities,
        "data": config.data.source.model_dump(mode="json"), "dataset_root": str(settings.dataset_root),
    }
    return _Prepared(target=target, source=src, dataset=dataset, folds=folds, key=key)


def _parse_source(source: Any) -> tuple[str, int]:
    try:
        kind, object_id = source
        kind = getattr(kind, "value", kind)
        object_id = int(object_id)
    except (TypeError, ValueError):
        raise InvalidInput(f"a source must be ('run'|'group'|'ensemble', id), got {source!r}") from None
    if kind not in ("run", "group", "ensemble"):
        raise InvalidInput(f"unknown source kind {kind!r}; use run, group or ensemble")
    return str(kind), object_id


def _one_source(run_id: int | None, group_id: int | None, ensemble_id: int | None, source: Source | None) -> Source:
    given = [(k, v) for k, v in (("run", run_id), ("group", group_id), ("ensemble", ensemble_id)) if v is not None]
    if source is not None:
        given.append(tuple(source))  # type: ignore[arg-type]
    if len(given) != 1:
        raise InvalidInput("name exactly one of run_id, group_id, ensemble_id (or source=('run', id))")
    return given[0]  # type: ignore[return-value]


# --------------------------------------------------------------------------- caching


def cache_folder(settings: Settings) -> Path:
    """Where the reports are cached: ``<artifact_root>/inspection`` (``<home>/inspection`` for a remote root)."""
    if settings.artifact_root_is_local:
        return Path(str(settings.artifact_root).removeprefix("file://")) / "inspection"
    return Path(settings.home) / "inspection"


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _prune(folder: Path, keep: Path) -> None:
    files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[_KEEP_REPORTS:]:
        if old != keep:
            old.unlink(missing_ok=True)


def _segcore_error(exc: SegcoreError, what: str) -> InvalidInput:
    return InvalidInput(f"the analysis of {what} failed: {exc}")


# --------------------------------------------------------------------------- analysis


def describe(
    session: Session, *, source: Source, settings: Settings, background: int | None | Literal["auto"] = "auto"
) -> InspectionTarget:
    """What :func:`inspect` would look at: the object, its classes, images, folds and stores.

    Raises:
        NotFound: the run, group or ensemble does not exist.
        InvalidInput: it has no stored validation predictions (yet), or they or the dataset cannot be read.
    """
    return _prepare(session, settings, source, background).target


def inspect(
    session: Session,
    *,
    source: Source,
    settings: Settings,
    fold: int | None = None,
    classes: Sequence[str] | None = None,
    boundary_px: int = 3,
    background: int | None | Literal["auto"] = "auto",
    size_bins: Sequence[int] = DEFAULT_SIZE_BINS,
    found_share: float = 0.5,
    threshold: float = 0.5,
    confidence_bins: int = 20,
    worst_k: int = 12,
    use_cache: bool = True,
) -> AnalysisReport:
    """The error analysis of a run, group or ensemble on its validation images (cached).

    Args:
        source: ``("run", id)``, ``("group", id)`` or ``("ensemble", id)``.
        settings: Where the artifacts, the datasets and the cache are.
        fold: Only the images of this validation fold (a group's or ensemble's out-of-fold images).
        classes: Keep only these classes in the per-class lists of the report (the figures are
            computed over all classes, so the taxonomy and the metrics are unchanged).
        boundary_px: Width of the boundary band in pixels.
        background: Multiclass background class index, None for none, ``"auto"``: class 0 when it
            is named like a background (``background``, ``bg``), else none.
        size_bins: Lower edges of the object-size bins (pixels).
        found_share: Share of an object's pixels that must be predicted for it to count as found.
        threshold: Multilabel decision threshold.
        confidence_bins: Bins of the confidence histograms.
        worst_k: Worst images kept per class.
        use_cache: Read and write the cache file (False always computes).

    Returns:
        The :class:`segcore.analysis.AnalysisReport` (``report.folds`` per fold under k-fold).

    Raises:
        NotFound: the object does not exist.
        InvalidInput: no stored predictions yet, an unknown fold or class, unreadable predictions or
            ground truth; each message says what to do.
    """
    prepared = _prepare(session, settings, source, background)
    target = prepared.target
    what = f"{target.kind} {target.id} ({target.name})"
    ids = list(prepared.source.ids)
    if fold is not None:
        if not prepared.folds:
            raise InvalidInput(f"{what} has no k-fold split, so there is no fold {fold}; leave the fold empty")
        if int(fold) not in target.folds:
            raise InvalidInput(f"{what} has no validation images in fold {fold}; pick one of {target.folds}")
        ids = [i for i in ids if prepared.folds[i] == int(fold)]
    keep = _class_filter(classes, target.classes)
    kwargs: dict[str, Any] = dict(
        task=target.task, classes=target.classes, ignore_index=target.ignore_index, background=target.background,
        boundary_px=int(boundary_px), size_bins=list(size_bins), folds=prepared.folds, found_share=float(found_share),
        threshold=float(threshold), confidence_bins=int(confidence_bins), worst_k=int(worst_k),
    )
    cache_path = None
    if use_cache:
        params = {k: v for k, v in kwargs.items() if k != "folds"}
        name = _digest({"key": prepared.key, "params": params, "ids": ids, "folds": prepared.folds}) + ".json"
        folder = cache_folder(settings) / f"{target.kind}-{target.id}"
        folder.mkdir(parents=True, exist_ok=True)
        cache_path = folder / name
    try:
        report = analyze_store(prepared.source, prepared.dataset.load_mask, ids=ids, cache_path=cache_path, **kwargs)
    except (ConfigError, StoreError, DatasetError, EnsembleError) as exc:
        raise _segcore_error(exc, what) from exc
    if cache_path is not None:
        _prune(cache_path.parent, cache_path)
    return _filter_classes(report, keep) if keep is not None else report


def _class_filter(classes: Sequence[str] | None, known: Sequence[str]) -> list[int] | None:
    if not classes:
        return None
    unknown = [c for c in classes if c not in known]
    if unknown:
        raise InvalidInput(f"unknown classes {unknown}; pick from {list(known)}")
    return [known.index(c) for c in classes]


def _filter_classes(report: AnalysisReport, keep: list[int]) -> AnalysisReport:
    """The report with its per-class lists cut to the classes in ``keep`` (totals unchanged)."""
    wanted = set(keep)
    names = {report.parameters.classes[i] for i in keep}

    def cut(items: list[Any]) -> list[Any]:
        return [x for x in items if x.class_index in wanted]

    update: dict[str, Any] = {
        "pooled": report.pooled.model_copy(update={"classes": cut(report.pooled.classes)}),
        "folds": [f.model_copy(update={"classes": cut(f.classes)}) for f in report.folds],
        "taxonomy": report.taxonomy.model_copy(update={"classes": cut(report.taxonomy.classes)}),
        "boundary": report.boundary.model_copy(update={"classes": cut(report.boundary.classes)}),
        "objects": report.objects.model_copy(update={"classes": cut(report.objects.classes)}),
        "worst_images": {k: v for k, v in report.worst_images.items() if k in names},
    }
    if report.confidence is not None:
        update["confidence"] = report.confidence.model_copy(update={"classes": cut(report.confidence.classes)})
    return report.model_copy(update=update)


def inspect_run(session: Session, *, run_id: int, settings: Settings, **options: Any) -> AnalysisReport:
    """:func:`inspect` of a run's validation predictions (``options`` as there)."""
    return inspect(session, source=("run", run_id), settings=settings, **options)


def inspect_group(session: Session, *, group_id: int, settings: Settings, **options: Any) -> AnalysisReport:
    """:func:`inspect` of a fold/seed group's out-of-fold predictions (``options`` as there)."""
    return inspect(session, source=("group", group_id), settings=settings, **options)


def inspect_ensemble(session: Session, *, ensemble_id: int, settings: Settings, **options: Any) -> AnalysisReport:
    """:func:`inspect` of an ensemble, combined from its members' stored predictions (``options`` as there)."""
    return inspect(session, source=("ensemble", ensemble_id), settings=settings, **options)


def worst_images(
    session: Session,
    *,
    source: Source,
    settings: Settings,
    class_name: str | None = None,
    k: int = 12,
    fold: int | None = None,
    boundary_px: int = 3,
) -> list[WorstImage]:
    """The images to look at first: a class's worst (lowest IoU, then most errors), or overall.

    Args:
        source: What to inspect (see :func:`inspect`).
        settings: The settings.
        class_name: One class; None ranks the images by their mean IoU over all classes.
        k: How many.
        fold: Only this validation fold.
        boundary_px: Passed to :func:`inspect` (the cached report is shared).

    Raises:
        InvalidInput: an unknown class, or what :func:`inspect` raises.
    """
    report = inspect(session, source=source, settings=settings, fold=fold, boundary_px=boundary_px,
                     worst_k=max(12, int(k)))
    if class_name is not None:
        if class_name not in report.parameters.classes:
            raise InvalidInput(f"unknown class {class_name!r}; pick from {report.parameters.classes}")
        return list(report.worst_images.get(class_name, []))[: int(k)]
    ranked = sorted(
        report.images,
        key=lambda im: (1.0 if im.mean_iou is None else im.mean_iou, -sum(im.errors), im.image_id),
    )
    return [
        WorstImage(image_id=im.image_id, fold=im.fold, iou=1.0 if im.mean_iou is None else im.mean_iou,
                   errors=sum(im.errors))
        for im in ranked[: int(k)]
    ]


# --------------------------------------------------------------------------- comparison


def compare(
    session: Session,
    *,
    a: Source,
    b: Source,
    settings: Settings,
    threshold: float = 0.5,
    use_cache: bool = True,
) -> ComparisonReport:
    """Where A is right and B wrong, and the reverse, per class and per image, on the images both have.

    Args:
        a: ``("run"|"group"|"ensemble", id)``.
        b: The other one, on the same dataset and classes.
        settings: The settings.
        threshold: Multilabel decision threshold.
        use_cache: Read and write the cached report.

    Returns:
        The :class:`segcore.analysis.ComparisonReport` (``names`` are the two objects' labels).

    Raises:
        NotFound: either object does not exist.
        InvalidInput: A and B share no validation image, predict other classes, or have no stored
            predictions.
    """
    pa = _prepare(session, settings, a, "auto")
    pb = _prepare(session, settings, b, "auto")
    ta, tb = pa.target, pb.target
    if (ta.kind, ta.id) == (tb.kind, tb.id):
        raise InvalidInput("A and B are the same; pick two different runs or ensembles")
    if ta.classes != tb.classes or ta.task != tb.task:
        raise InvalidInput(f"{ta.kind} {ta.id} and {tb.kind} {tb.id} predict different classes; compare models of "
                           "the same dataset")
    shared = set(pb.source.ids)
    ids = [i for i in pa.source.ids if i in shared]
    if not ids:
        raise InvalidInput(
            f"{ta.kind} {ta.id} and {tb.kind} {tb.id} share no validation image (different folds or splits); "
            "compare runs of the same split, or their groups' out-of-fold predictions"
        )
    names = (f"{ta.kind} {ta.id}: {ta.name}", f"{tb.kind} {tb.id}: {tb.name}")
    kwargs = dict(task=ta.task, classes=ta.classes, ignore_index=ta.ignore_index, threshold=float(threshold),
                  names=names)
    path = None
    if use_cache:
        folder = cache_folder(settings) / "compare"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (_digest({"a": pa.key, "b": pb.key, "ids": ids, "kwargs": kwargs}) + ".json")
        if path.is_file():
            try:
                return ComparisonReport.model_validate_json(path.read_bytes())
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
    try:
        report = compare_stores(pa.source, pb.source, pa.dataset.load_mask, ids=ids, **kwargs)
    except (ConfigError, StoreError, DatasetError, EnsembleError) as exc:
        raise _segcore_error(exc, f"{names[0]} against {names[1]}") from exc
    if path is not None:
        atomic_write_text(path, report.model_dump_json())
        _prune(path.parent, path)
    return report


# --------------------------------------------------------------------------- overlays


class _ViewCache:
    """Decoded label maps, ground truth and images of the last viewed images (bounded by bytes).

    Zooming and panning re-render the same image many times; decoding its probabilities (which
    for a 2048x2048 multilabel image costs most of a second) happens once.
    """

    def __init__(self, max_bytes: int = 512 * 1024 * 1024) -> None:
        self._items: collections.OrderedDict[str, tuple[Any, ...]] = collections.OrderedDict()
        self._bytes = 0
        self._max = max_bytes
        self._lock = threading.Lock()

    def get(self, key: str, make: Callable[[], tuple[Any, ...]]) -> tuple[Any, ...]:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        size = sum(getattr(v, "nbytes", 0) for v in value)
        with self._lock:
            self._items[key] = value
            self._bytes += size
            while self._bytes > self._max and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= sum(getattr(v, "nbytes", 0) for v in old)
        return value


_VIEWS = _ViewCache()


def _labels(prepared: _Prepared, image_id: str, threshold: float) -> np.ndarray:
    from segcore.inference.store import labels_from_probs

    probs = prepared.source.read(image_id)
    return labels_from_probs(probs, prepared.target.task, threshold)


def _decoded(prepared: _Prepared, image_id: str, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if image_id not in set(prepared.source.ids):
        t = prepared.target
        raise InvalidInput(f"image {image_id!r} is not among the {t.n_images} validation images of {t.kind} {t.id}")
    key = _digest({"key": prepared.key, "image": image_id, "threshold": threshold})

    def make() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        try:
            return (_labels(prepared, image_id, threshold), prepared.dataset.load_mask(image_id),
                    prepared.dataset.load_image(image_id))
        except (StoreError, DatasetError, EnsembleError) as exc:
            raise _segcore_error(exc, f"image {image_id!r}") from exc

    return _VIEWS.get(key, make)  # type: ignore[return-value]


def _view(
    region: Sequence[int] | None, downscale: int, height: int, width: int
) -> tuple[tuple[int, int, int, int], int]:
    if downscale < 1:
        raise InvalidInput(f"downscale must be 1 or more, got {downscale}")
    if region is None:
        return (0, 0, height, width), int(downscale)
    y0, x0, y1, x1 = (int(v) for v in region)
    y0, x0 = max(0, min(y0, height - 1)), max(0, min(x0, width - 1))
    y1, x1 = max(y0 + 1, min(y1, height)), max(x0 + 1, min(x1, width))
    return (y0, x0, y1, x1), int(downscale)


def _show(show_classes: Sequence[str | int] | None, classes: Sequence[str]) -> list[int] | None:
    if show_classes is None:
        return None
    out = []
    for c in show_classes:
        if isinstance(c, str):
            if c not in classes:
                raise InvalidInput(f"unknown class {c!r}; pick from {list(classes)}")
            out.append(classes.index(c))
        else:
            if not 0 <= int(c) < len(classes):
                raise InvalidInput(f"class index {c} is out of range 0..{len(classes) - 1}")
            out.append(int(c))
    return out


def overlay(
    session: Session,
    *,
    image_id: str,
    settings: Settings,
    source: Source | None = None,
    run_id: int | None = None,
    group_id: int | None = None,
    ensemble_id: int | None = None,
    show_classes: Sequence[str | int] | None = None,
    alpha: float = 0.5,
    region: Sequence[int] | None = None,
    downscale: int = 1,
    threshold: float = 0.5,
) -> OverlayView:
    """Image, ground truth, prediction and error map of one validation image, for a viewport.

    Only ``region`` (full-resolution ``(y0, x0, y1, x1)``, clipped to the image) is rendered, at
    every ``downscale``-th pixel, so a 2048x2048 image zooms and pans quickly; the decoded labels
    of the last images viewed are kept in memory.

    Args:
        image_id: A validation image of the object.
        settings: The settings.
        source: ``("run"|"group"|"ensemble", id)``; or name one of ``run_id``, ``group_id``,
            ``ensemble_id``.
        run_id: The run.
        group_id: The group.
        ensemble_id: The ensemble.
        show_classes: Class names (or indices) to draw; None draws all.
        alpha: Opacity of the colours in ``[0, 1]``.
        region: The viewport; None is the whole image.
        downscale: Keep every ``downscale``-th pixel.
        threshold: Multilabel decision threshold.

    Raises:
        NotFound: the object does not exist.
        InvalidInput: unknown image or class, bad alpha, or what :func:`inspect` raises.
    """
    src = _one_source(run_id, group_id, ensemble_id, source)
    prepared = _prepare(session, settings, src, "auto")
    t = prepared.target
    if not 0.0 <= float(alpha) <= 1.0:
        raise InvalidInput(f"opacity must be between 0 and 1, got {alpha}")
    labels, gt, image = _decoded(prepared, image_id, float(threshold))
    h, w = gt.shape[-2:]
    view, step = _view(region, int(downscale), h, w)
    palette = default_palette(len(t.classes), background=t.background)
    try:
        panels = render_overlay(
            image, gt, labels, task=t.task, num_classes=len(t.classes), palette=palette, alpha=float(alpha),
            show=_show(show_classes, t.classes), background=t.background, ignore_index=t.ignore_index,
            threshold=float(threshold), region=view, downscale=step,
        )
    except (ConfigError, StoreError) as exc:
        raise _segcore_error(exc, f"image {image_id!r}") from exc
    legend = [(label, rgb) for _, label, rgb in ERROR_LEGEND]
    return OverlayView(image_id=image_id, height=int(h), width=int(w), region=view, downscale=step, panels=panels,
                       classes=list(t.classes), palette=palette, legend=legend)


def compare_overlay(
    session: Session,
    *,
    a: Source,
    b: Source,
    image_id: str,
    settings: Settings,
    show_classes: Sequence[str | int] | None = None,
    alpha: float = 0.6,
    region: Sequence[int] | None = None,
    downscale: int = 1,
    threshold: float = 0.5,
) -> tuple[np.ndarray, list[tuple[str, tuple[int, int, int]]]]:
    """Where A is right and B wrong, the reverse, and both wrong, drawn on one image's viewport.

    Returns:
        ``(hxwx3 uint8 image, legend)``; the legend's ``(label, (r, g, b))`` are fixed colours.

    Raises:
        InvalidInput: the image is not a validation image of both, or what :func:`compare` raises.
    """
    pa = _prepare(session, settings, a, "auto")
    pb = _prepare(session, settings, b, "auto")
    ta = pa.target
    if ta.classes != pb.target.classes:
        raise InvalidInput("A and B predict different classes; compare models of the same dataset")
    la, gt, image = _decoded(pa, image_id, float(threshold))
    lb, _, _ = _decoded(pb, image_id, float(threshold))
    h, w = gt.shape[-2:]
    view, step = _view(region, int(downscale), h, w)
    try:
        drawn = render_comparison(
            image, gt, la, lb, task=ta.task, num_classes=len(ta.classes), alpha=float(alpha),
            show=_show(show_classes, ta.classes), ignore_index=ta.ignore_index, threshold=float(threshold),
            region=view, downscale=step,
        )
    except (ConfigError, StoreError) as exc:
        raise _segcore_error(exc, f"image {image_id!r}") from exc
    return drawn, [(label, rgb) for _, label, rgb in COMPARISON_LEGEND]
