"""Datasets: registered once, after validation, with their fingerprint and EDA statistics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from statistics import median
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from segcore.config import DatasetSource, TaskType, format_validation_error
from segcore.errors import DatasetError
from worker.artifacts import Artifacts, local_source, open_local_dataset
from worker.db.models import Dataset
from worker.errors import Conflict, InvalidInput, NotFound
from worker.schemas import DatasetRead
from worker.services import access, confinement
from worker.services._common import check_actor, check_name, get_or_raise
from worker.services.audit import record_event

__all__ = [
    "register_dataset",
    "presence_view",
    "update_dataset",
    "default_background",
    "BACKGROUND_NAMES",
    "get_dataset",
    "get_dataset_by_name",
    "list_datasets",
    "set_dataset_statistics",
    "open_files",
    "preview_statistics",
    "preview_augmentations",
    "preview_crop",
    "allowed_roots",
]

_SOURCE = TypeAdapter(DatasetSource)


def _parse_source(source: Any) -> Any:
    if hasattr(source, "model_dump"):
        source = source.model_dump(mode="json")
    try:
        return _SOURCE.validate_python(source)
    except ValidationError as exc:
        raise InvalidInput("invalid dataset source:\n" + format_validation_error(exc)) from exc


def register_dataset(
    session: Session,
    *,
    actor: int | None,
    name: str,
    source: Any,
    classes: Sequence[str] | None = None,
    task: TaskType | str = TaskType.MULTICLASS,
    ignore_index: int = 255,
    dataset_root: str | Path | None = None,
    check_pixels: bool = True,
    artifacts: Artifacts | None = None,
    roots: confinement.DataRoots | None = None,
    background: int | None | str = "auto",
) -> DatasetRead:
    """Validate a dataset on disk and register it; an invalid dataset is refused whole.

    Args:
        actor: The acting member.
        name: A unique name shown in the UI.
        source: A segcore ``DatasetSource`` (or its dict form).
        classes: Class names in index order; None takes the ones the validator derives.
        task: ``multiclass`` or ``multilabel``.
        ignore_index: Label value of unlabelled pixels.
        dataset_root: Folder a relative ``source.root`` is resolved against; default the dataset root of ``roots``.
        check_pixels: Decode every image and mask (slower, finds truncated files).
        artifacts: Mirrors a source (or dataset root) given as a remote URL for validation; the
            stored source keeps the URL. None: the source must be local.
        roots: Where datasets may live (``confinement.data_roots(settings)``); every path of the source
            must lie inside them. None: this process's current settings.
        background: The background class index (left uncoloured in overlays, out of legends and
            "foreground" counts, the background of the error analysis), None for none, or ``"auto"``:
            :func:`default_background`.

    Raises:
        InvalidInput: the source, task or name is invalid, a path of the source lies outside the
            dataset roots, or validation found errors (all listed).
        Conflict: the name is taken.
    """
    from segcore.data.formats import open_dataset
    from segcore.data.validation import validate_dataset

    check_actor(session, actor)
    access.require_member(session, actor, "register datasets")
    name = (name or "").strip()
    if not name:
        raise InvalidInput("a dataset needs a name; type one")
    name = check_name(name, what="a dataset's name")
    try:
        task = TaskType(task)
    except ValueError:
        raise InvalidInput(f"unknown task {task!r}; use 'multiclass' or 'multilabel'") from None
    src = _parse_source(source)
    roots = roots if roots is not None else confinement.data_roots()
    dataset_root = roots.dataset_root if dataset_root is None else str(dataset_root)
    confinement.check_source(src, roots=roots, base=dataset_root)
    if session.scalar(sa.select(Dataset.id).where(Dataset.name == name)) is not None:
        raise Conflict(f"a dataset named {name!r} is registered already; choose another name")
    local, dataset_root = local_source(artifacts, src, None if dataset_root is None else str(dataset_root))
    try:
        report = validate_dataset(
            local,
            classes=list(classes) if classes is not None else None,
            task=task,
            ignore_index=ignore_index,
            dataset_root=dataset_root,
            check_pixels=check_pixels,
        )
    except DatasetError as exc:
        raise InvalidInput(f"the dataset was not registered: {exc}") from exc
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:  # malformed annotation files
        raise InvalidInput(
            f"the dataset was not registered: its annotation files cannot be read ({type(exc).__name__}); "
            "check that they follow the format's layout (docs/datasets.md)"
        ) from exc
    if not report.ok:
        raise InvalidInput(
            "the dataset was not registered; fix these problems and register it again:\n" + report.summary()
        )
    final_classes = list(classes) if classes is not None else list(report.classes)
    if not final_classes:
        raise InvalidInput("the dataset's classes could not be derived from the data; list them in `classes`")
    try:
        fingerprint = open_dataset(
            local, classes=final_classes, task=task, ignore_index=ignore_index, dataset_root=dataset_root
        ).fingerprint()
    except DatasetError as exc:
        raise InvalidInput(f"the dataset passed validation but cannot be opened: {exc}") from exc
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:  # malformed annotation files
        raise InvalidInput(
            f"the dataset passed validation but cannot be opened ({type(exc).__name__}); check that its "
            "annotation files follow the format's layout (docs/datasets.md)"
        ) from exc
    if background == "auto":
        background = default_background(final_classes, task, src.format)
    ds = Dataset(
        name=name,
        source=src.model_dump(mode="json"),
        classes=final_classes,
        background=_check_background(background, final_classes, task),
        task=task,
        ignore_index=ignore_index,
        fingerprint=fingerprint,
        report=report.model_dump(mode="json"),
        created_by=actor,
    )
    session.add(ds)
    session.flush()
    record_event(
        session, actor=actor, action="dataset.register", object_kind="dataset", object_id=ds.id,
        detail={"name": name, "format": src.format, "num_images": report.num_images, "fingerprint": fingerprint},
    )
    return DatasetRead.model_validate(ds)


_KEEP: Any = object()

#: Names of a multiclass class 0 that make it the dataset's background when none is declared.
BACKGROUND_NAMES = frozenset({"background", "bg", "_background_", "__background__", "backgrounds"})


def default_background(classes: Sequence[str], task: TaskType | str, fmt: str | None) -> int | None:
    """The background class a dataset gets unless one is declared: COCO's class 0 (pixels outside
    every object), else a multiclass class 0 named like a background; None otherwise (e.g. Stanford
    Background's class 0 is sky, a class like any other). Multilabel datasets have none."""
    if str(getattr(task, "value", task)) != TaskType.MULTICLASS.value or not classes:
        return None
    return 0 if fmt == "coco" or str(classes[0]).strip().lower() in BACKGROUND_NAMES else None


def _check_background(background: Any, classes: Sequence[str], task: TaskType | str) -> int | None:
    if background is None:
        return None
    if str(getattr(task, "value", task)) != TaskType.MULTICLASS.value:
        raise InvalidInput("a multilabel dataset has no background class (each class is its own mask); leave it empty")
    if isinstance(background, bool) or not isinstance(background, int) or not 0 <= background < len(classes):
        raise InvalidInput(f"background must be a class index from 0 to {len(classes) - 1} or none, got {background!r}")
    return int(background)


def update_dataset(
    session: Session,
    *,
    actor: int | None,
    dataset_id: int,
    name: str | None = None,
    test_images: str | None = _KEEP,
    classes: Sequence[str] | None = None,
    background: int | None = _KEEP,
    artifacts: Artifacts | None = None,
    roots: confinement.DataRoots | None = None,
) -> DatasetRead:
    """Fix a registered dataset: rename it, add (or drop) its test image folder, correct its classes,
    or declare its background class.

    Args:
        name: A new unique name.
        test_images: A folder of unlabelled test images relative to the dataset's root (it must hold
            images and lie inside the dataset roots); None drops it; omitted keeps it.
        classes: New class names in index order, only while no experiment uses the dataset (runs
            record the classes they were trained with); the data is validated again with them.
        background: The background class index, or None for none; omitted keeps it.
        artifacts: Mirrors a remote source for the checks.
        roots: Where datasets may live; None: this process's current settings.

    Raises:
        PermissionDenied: neither the dataset's owner nor an admin.
        Conflict: the name is taken, or experiments use the dataset and ``classes`` was given.
        InvalidInput: the folder holds no images, lies outside the roots, or the classes do not fit the data.
    """
    from segcore.data.formats import open_dataset
    from segcore.data.validation import validate_dataset
    from worker.db.models import Experiment

    check_actor(session, actor)
    ds = get_or_raise(session, Dataset, dataset_id, "dataset")
    access.require_owner(session, actor, ds.created_by, f"change dataset {ds.name!r}")
    changes: dict[str, Any] = {}
    if name is not None and name.strip() != ds.name:
        new_name = check_name(name.strip(), what="a dataset's name")
        if session.scalar(sa.select(Dataset.id).where(Dataset.name == new_name, Dataset.id != ds.id)) is not None:
            raise Conflict(f"a dataset named {new_name!r} is registered already; choose another name")
        changes["name"] = (ds.name, new_name)
        ds.name = new_name
    src = _parse_source(ds.source)
    if test_images is not _KEEP and test_images != src.test_images:
        folder = (test_images or "").strip() or None
        src = src.model_copy(update={"test_images": folder})
        roots = roots if roots is not None else confinement.data_roots()
        confinement.check_source(src, roots=roots, base=roots.dataset_root)
        if folder is not None:
            local, root = local_source(artifacts, src, roots.dataset_root)
            try:
                opened = open_dataset(local, classes=list(ds.classes), task=ds.task, ignore_index=ds.ignore_index,
                                      dataset_root=root)
            except DatasetError as exc:
                raise InvalidInput(f"the test folder was not set: {exc}") from exc
            if not opened.test_ids:
                raise InvalidInput(f"the folder {folder!r} holds no images; point test_images at the folder of "
                                   "test images (png, jpg, tif), relative to the dataset's root")
        changes["test_images"] = (ds.source.get("test_images"), folder)
        ds.source = src.model_dump(mode="json")
        ds.report = {**(ds.report or {}), "num_test_images": len(opened.test_ids) if folder is not None else 0}
    if classes is not None and list(classes) != list(ds.classes):
        used = session.scalar(sa.select(sa.func.count(Experiment.id)).where(Experiment.dataset_id == ds.id)) or 0
        if used:
            raise Conflict(f"{used} experiment(s) use dataset {ds.name!r}, and their runs were trained with its "
                           "classes; register the data again under a new name with the corrected classes")
        roots = roots if roots is not None else confinement.data_roots()
        local, root = local_source(artifacts, src, roots.dataset_root)
        try:
            report = validate_dataset(local, classes=list(classes), task=ds.task, ignore_index=ds.ignore_index,
                                      dataset_root=root, check_pixels=False)
            fingerprint = open_dataset(local, classes=list(classes), task=ds.task, ignore_index=ds.ignore_index,
                                       dataset_root=root).fingerprint()
        except DatasetError as exc:
            raise InvalidInput(f"the classes were not changed: {exc}") from exc
        if not report.ok:
            raise InvalidInput("the classes were not changed; with them the data has these problems:\n"
                               + report.summary())
        changes["classes"] = (list(ds.classes), list(classes))
        ds.classes, ds.fingerprint = list(classes), fingerprint
    if background is not _KEEP and background != ds.background:
        changes["background"] = (ds.background, _check_background(background, ds.classes, ds.task))
        ds.background = changes["background"][1]
    if not changes:
        return DatasetRead.model_validate(ds)
    session.flush()
    record_event(session, actor=actor, action="dataset.update", object_kind="dataset", object_id=ds.id,
                 detail={k: {"old": old, "new": new} for k, (old, new) in changes.items()})
    return DatasetRead.model_validate(ds)


def allowed_roots(roots: confinement.DataRoots | None = None) -> str:
    """Where datasets may be registered from, in one line (for the Datasets page's help text).

    Args:
        roots: The allowed places; None: this process's current settings.
    """
    return (roots if roots is not None else confinement.data_roots()).describe()


def get_dataset(session: Session, *, dataset_id: int) -> DatasetRead:
    """One dataset.

    Raises:
        NotFound: no dataset has this id.
    """
    return DatasetRead.model_validate(get_or_raise(session, Dataset, dataset_id, "dataset"))


def get_dataset_by_name(session: Session, *, name: str) -> DatasetRead:
    """The dataset called ``name``.

    Raises:
        NotFound: none is registered under this name.
    """
    ds = session.scalar(sa.select(Dataset).where(Dataset.name == name))
    if ds is None:
        raise NotFound("dataset", name, "register it on the Datasets page first")
    return DatasetRead.model_validate(ds)


def list_datasets(session: Session) -> list[DatasetRead]:
    """Every registered dataset, by name."""
    return [DatasetRead.model_validate(d) for d in session.scalars(sa.select(Dataset).order_by(Dataset.name))]


def set_dataset_statistics(
    session: Session, *, actor: int | None, dataset_id: int, statistics: dict[str, Any]
) -> DatasetRead:
    """Store the EDA statistics (``segcore.data.statistics`` dump) of a dataset.

    Raises:
        InvalidInput: ``statistics`` is not a mapping.
        NotFound: no such dataset.
    """
    check_actor(session, actor)
    access.require_admin(session, actor, "overwrite dataset statistics (the dataset job computes them)")
    if hasattr(statistics, "model_dump"):
        statistics = statistics.model_dump(mode="json")
    if not isinstance(statistics, dict):
        raise InvalidInput(f"statistics must be a mapping, got {type(statistics).__name__}")
    ds = get_or_raise(session, Dataset, dataset_id, "dataset")
    ds.statistics = statistics
    session.flush()
    record_event(session, actor=actor, action="dataset.set_statistics", object_kind="dataset", object_id=ds.id)
    return DatasetRead.model_validate(ds)


def open_files(dataset: DatasetRead, *, artifacts: Artifacts | None, dataset_root: str | None) -> Any:
    """segcore's ``SegDataset`` of a registered dataset (its files mirrored first when remote).

    Raises:
        DatasetError: its files moved or disappeared since it was registered.
    """
    return open_local_dataset(artifacts, dataset.source, classes=dataset.classes, task=dataset.task,
                              ignore_index=dataset.ignore_index, dataset_root=dataset_root)


def preview_statistics(opened: Any, *, max_images: int = 500) -> dict[str, Any]:
    """EDA statistics of at most ``max_images`` images, to show while the ``dataset_import`` job runs.

    Writes nothing: a dataset's stored statistics are the full ones, and only that job sets them
    (:func:`set_dataset_statistics`).
    """
    from segcore.data.statistics import compute_statistics

    return compute_statistics(opened, max_images=max_images).model_dump(mode="json")


def presence_view(statistics: dict[str, Any] | None, opened: Any) -> tuple[list[str], list[list[bool]], list[int]]:
    """What the per-image presence charts draw: ``(image ids, their presence rows, images with k classes at k)``.

    The stored statistics keep the rows of the first ``PRESENCE_ROWS`` images and the counts of all
    (:func:`segcore.data.statistics.compute_statistics`); statistics without them (a preview, or
    stored by an earlier version) are completed from ``opened``'s masks, bounded the same way.
    """
    import numpy as np

    from segcore.data.statistics import PRESENCE_ROWS

    stored, by_k = (statistics or {}).get("presence"), (statistics or {}).get("classes_per_image")
    if stored is not None and by_k is not None:
        return list(stored), [[ch == "1" for ch in row] for row in stored.values()], [int(n) for n in by_k]
    matrix = np.asarray(opened.class_presence(), dtype=bool)
    counts = np.bincount(matrix.sum(axis=1), minlength=matrix.shape[1] + 1).tolist()
    return list(opened.ids)[:PRESENCE_ROWS], matrix[:PRESENCE_ROWS].tolist(), counts


def preview_augmentations(dataset: DatasetRead, opened: Any, augmentation: dict[str, Any], *, n: int, seed: int = 0,
                          image_size: list[int] | None = None) -> list[tuple[Any, Any]]:
    """``n`` (image, mask) pairs of a registered dataset as the training pipeline of ``augmentation`` makes them.

    Args:
        dataset: The registered dataset.
        opened: Its files (:func:`open_files`).
        augmentation: A config's ``augmentation`` section.
        n: How many pairs (from the first images).
        seed: Random seed of the augmentations.
        image_size: The config's ``data.image_size``.

    Raises:
        ConfigError: the augmentation section is invalid.
    """
    from segcore.config import parse_config
    from segcore.data.transforms import preview_augmentations as preview  # albumentations: loaded only when asked

    cfg = parse_config({"name": "preview", "data": {"source": dataset.source, "classes": dataset.classes,
                                                    "task": dataset.task.value, "ignore_index": dataset.ignore_index,
                                                    "image_size": image_size},
                        "augmentation": augmentation})
    return preview(opened, cfg, list(opened.ids)[: max(n, 1)], n, seed=seed)


def _image_sizes(dataset: DatasetRead) -> dict[str, int]:
    """The ``"WxH" -> count`` histogram of a dataset: its statistics, else its registration report."""
    for record in (dataset.statistics or {}, dataset.report or {}):
        sizes = record.get("image_sizes")
        if sizes:
            return {str(k): int(v) for k, v in sizes.items()}
    return {}


def preview_crop(session: Session, *, dataset_id: int, config: dict[str, Any]) -> str:
    """What a config's ``data.crop_size`` comes to on a registered dataset, in one line (for a form).

    ``auto`` is worked out with :func:`segcore.data.policy.auto_crop_side` from the image sizes stored
    for the whole dataset (its statistics, else its registration report). A run resolves it once from its
    own training split, so the size it stores can differ when the split's sizes differ from the whole set's.

    Args:
        dataset_id: The registered dataset.
        config: An experiment config as a dict; only ``model`` and ``data`` are read, so a form whose
            other sections are still invalid gets its preview.

    Returns:
        e.g. ``"auto: 128x128 (median short side 240 px over 715 images, multiple of 32)"``,
        ``"fixed: 256x256"`` or ``"none: whole images"``.

    Raises:
        NotFound: no such dataset.
        InvalidInput: the config's ``data`` or ``model`` section is invalid.
    """
    from segcore.config import DataConfig, ModelConfig

    ds = get_dataset(session, dataset_id=dataset_id)
    try:
        data = DataConfig.model_validate(config.get("data") or {})
        model = ModelConfig.model_validate(config.get("model") or {})
    except ValidationError as exc:
        raise InvalidInput("the crop size cannot be previewed:\n" + format_validation_error(exc)) from exc
    if data.crop_size is None:
        size = data.image_size
        return "none: whole images" + (f" resized to {size[0]}x{size[1]}" if size else "")
    if data.crop_size != "auto":
        return f"fixed: {data.crop_size[0]}x{data.crop_size[1]}"
    from segcore.data.policy import auto_crop_side, short_sides_from_histogram
    from segcore.models import model_input_multiple  # torch: imported only when a form asks for 'auto'

    sides = short_sides_from_histogram(_image_sizes(ds))
    if not sides:
        return "auto: chosen when the run starts (no image sizes are stored for this dataset yet)"
    if data.image_size is not None:  # the crop is taken after the resize
        sides = [min(data.image_size)] * len(sides)
    multiple = model_input_multiple(model)
    side = auto_crop_side(sides, multiple)
    mid = median(sides)
    return (f"auto: {side}x{side} (median short side {mid:g} px over {len(sides)} images, "
            f"multiple of {multiple})")
