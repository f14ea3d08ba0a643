"""Error reports of runs, groups and ensembles, and comparisons of two of them (cached JSON files)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy.orm import Session

from segcore.analysis import (
    DEFAULT_SIZE_BINS,
    AnalysisReport,
    ComparisonReport,
    WorstImage,
    analyze_store,
    compare_stores,
)
from segcore.errors import ConfigError, DatasetError, EnsembleError, StoreError
from segcore.io import atomic_write_text
from worker.errors import InvalidInput
from worker.services.inspection._target import (
    Inspectable,
    Source,
    cache_folder,
    digest,
    load,
    prune,
    segcore_error,
)
from worker.settings import Settings

__all__ = [
    "inspect",
    "analyse",
    "precompute",
    "inspect_run",
    "inspect_group",
    "inspect_ensemble",
    "worst_images",
    "compare",
    "compare_loaded",
]


def precompute(factory: Any, *, settings: Settings, sources: Sequence[Source]) -> dict[Source, str]:
    """Compute and cache the report Inspect opens on (all folds, all classes, default options) for each source.

    Called by a worker when a run, a group's out-of-fold store or an ensemble is done, so that the page's
    first load reads one JSON file instead of analysing every validation image (seconds to a minute for
    hundreds of full-resolution images). The cache is shared where the worker and the web app see the same
    artifact root (a remote root caches under each machine's home). Each source reads in its own short
    transaction of ``factory`` (a sessionmaker), then analyses after it closed.

    Returns:
        The sources that could not be analysed, with why (no validation store, a moved dataset, ...):
        the caller logs them; the run or job that asked is not concerned.
    """
    from worker.db.session import session_scope

    failed: dict[Source, str] = {}
    for source in sources:
        try:
            with session_scope(factory) as s:
                loaded = load(s, source=source, settings=settings)
            analyse(loaded, settings=settings)
        except Exception as exc:  # noqa: BLE001 - reported to the caller, which only logs it
            failed[source] = f"{type(exc).__name__}: {exc}"
    return failed


def inspect(
    session: Session,
    *,
    source: Source,
    settings: Settings,
    background: int | None | Literal["auto"] = "auto",
    **options: Any,
) -> AnalysisReport:
    """:func:`analyse` of what :func:`load` reads for ``source`` (``options`` as in :func:`analyse`).

    The session is only used to load; a caller that wants its transaction closed during the
    analysis calls :func:`load` in it and :func:`analyse` after it.

    Raises:
        NotFound: the object does not exist.
        InvalidInput: see :func:`load` and :func:`analyse`.
    """
    loaded = load(session, source=source, settings=settings, background=background)
    return analyse(loaded, settings=settings, **options)


def analyse(
    loaded: Inspectable,
    *,
    settings: Settings,
    fold: int | None = None,
    classes: Sequence[str] | None = None,
    boundary_px: int = 3,
    size_bins: Sequence[int] = DEFAULT_SIZE_BINS,
    found_share: float = 0.5,
    threshold: float = 0.5,
    confidence_bins: int = 20,
    worst_k: int = 12,
    use_cache: bool = True,
) -> AnalysisReport:
    """The error analysis of a loaded run, group or ensemble on its validation images (cached).

    Args:
        loaded: What :func:`load` read (no session is needed here: the analysis is the slow part).
        settings: Where the artifacts, the datasets and the cache are.
        fold: Only the images of this validation fold (a group's or ensemble's out-of-fold images).
        classes: Keep only these classes in the per-class lists of the report (the figures are
            computed over all classes, so the taxonomy and the metrics are unchanged).
        boundary_px: Width of the boundary band in pixels.
        size_bins: Lower edges of the object-size bins (pixels).
        found_share: Share of an object's pixels that must be predicted for it to count as found.
        threshold: Multilabel decision threshold.
        confidence_bins: Bins of the confidence histograms.
        worst_k: Worst images kept per class.
        use_cache: Read and write the cache file (False always computes).

    Returns:
        The :class:`segcore.analysis.AnalysisReport` (``report.folds`` per fold under k-fold).

    Raises:
        InvalidInput: an unknown fold or class, unreadable predictions or
            ground truth; each message says what to do.
    """
    prepared = loaded
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
        name = digest({"key": prepared.key, "params": params, "ids": ids, "folds": prepared.folds}) + ".json"
        folder = cache_folder(settings) / f"{target.kind}-{target.id}"
        folder.mkdir(parents=True, exist_ok=True)
        cache_path = folder / name
    try:
        report = analyze_store(prepared.source, prepared.dataset.load_mask, ids=ids, cache_path=cache_path, **kwargs)
    except (ConfigError, StoreError, DatasetError, EnsembleError) as exc:
        raise segcore_error(exc, what) from exc
    if cache_path is not None:
        prune(cache_path.parent, cache_path)
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
    return compare_loaded(load(session, source=a, settings=settings), load(session, source=b, settings=settings),
                          settings=settings, threshold=threshold, use_cache=use_cache)


def compare_loaded(
    pa: Inspectable, pb: Inspectable, *, settings: Settings, threshold: float = 0.5, use_cache: bool = True
) -> ComparisonReport:
    """:func:`compare` of two loaded objects (no session needed).

    Raises:
        InvalidInput: see :func:`compare`.
    """
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
        path = folder / (digest({"a": pa.key, "b": pb.key, "ids": ids, "kwargs": kwargs}) + ".json")
        if path.is_file():
            try:
                return ComparisonReport.model_validate_json(path.read_bytes())
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
    try:
        report = compare_stores(pa.source, pb.source, pa.dataset.load_mask, ids=ids, **kwargs)
    except (ConfigError, StoreError, DatasetError, EnsembleError) as exc:
        raise segcore_error(exc, f"{names[0]} against {names[1]}") from exc
    if path is not None:
        atomic_write_text(path, report.model_dump_json())
        prune(path.parent, path)
    return report

