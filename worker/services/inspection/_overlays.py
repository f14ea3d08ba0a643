"""Overlays of one validation image for the viewer: image, ground truth, prediction and error map."""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from segcore.analysis import (
    COMPARISON_LEGEND,
    ERROR_LEGEND,
    ErrorKind,
    OverlayPanels,
    default_palette,
    render_comparison,
    render_overlay,
)
from segcore.config import TaskType
from segcore.errors import ConfigError, DatasetError, EnsembleError, StoreError
from worker.errors import InvalidInput
from worker.services.inspection._target import Inspectable, Source, digest, load, one_source, segcore_error
from worker.settings import Settings

__all__ = ["OverlayView", "overlay", "overlay_loaded", "compare_overlay", "compare_overlay_loaded"]


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


def _labels(prepared: Inspectable, image_id: str, threshold: float) -> np.ndarray:
    from segcore.inference.store import labels_from_probs

    probs = prepared.source.read(image_id)
    return labels_from_probs(probs, prepared.target.task, threshold)


def _decoded(prepared: Inspectable, image_id: str, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if image_id not in set(prepared.source.ids):
        t = prepared.target
        raise InvalidInput(f"image {image_id!r} is not among the {t.n_images} validation images of {t.kind} {t.id}")
    key = digest({"key": prepared.key, "image": image_id, "threshold": threshold})

    def make() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        try:
            return (_labels(prepared, image_id, threshold), prepared.dataset.load_mask(image_id),
                    prepared.dataset.load_image(image_id))
        except (StoreError, DatasetError, EnsembleError) as exc:
            raise segcore_error(exc, f"image {image_id!r}") from exc

    return _VIEWS.get(key, make)


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
    **view: Any,
) -> OverlayView:
    """:func:`overlay_loaded` of ``source`` (or one of ``run_id``, ``group_id``, ``ensemble_id``).

    ``view`` are :func:`overlay_loaded`'s options.

    Raises:
        NotFound: the object does not exist.
        InvalidInput: what :func:`overlay_loaded` and :func:`worker.services.inspection.load` raise.
    """
    src = one_source(run_id, group_id, ensemble_id, source)
    return overlay_loaded(load(session, source=src, settings=settings), image_id=image_id, **view)


def overlay_loaded(
    prepared: Inspectable,
    *,
    image_id: str,
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
        prepared: What :func:`worker.services.inspection.load` read (no session is needed here).
        image_id: A validation image of the object.
        show_classes: Class names (or indices) to draw; None draws all.
        alpha: Opacity of the colours in ``[0, 1]``.
        region: The viewport; None is the whole image.
        downscale: Keep every ``downscale``-th pixel.
        threshold: Multilabel decision threshold.

    Raises:
        InvalidInput: unknown image or class, bad alpha, or what :func:`inspect` raises.
    """
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
        raise segcore_error(exc, f"image {image_id!r}") from exc
    # under- and over-prediction need a background (a class missed means background predicted); without
    # one, every multiclass error is a wrong class, and the legend says only that
    no_background = t.background is None and t.task == TaskType.MULTICLASS
    legend = [(label, rgb) for kind, label, rgb in ERROR_LEGEND if not no_background or kind is ErrorKind.WRONG_CLASS]
    return OverlayView(image_id=image_id, height=int(h), width=int(w), region=view, downscale=step, panels=panels,
                       classes=list(t.classes), palette=palette, legend=legend)


def compare_overlay(session: Session, *, a: Source, b: Source, image_id: str, settings: Settings,
                    **view: Any) -> tuple[np.ndarray, list[tuple[str, tuple[int, int, int]]]]:
    """:func:`compare_overlay_loaded` of ``a`` and ``b`` (``view`` are its options).

    Raises:
        NotFound: either object does not exist.
        InvalidInput: what :func:`compare_overlay_loaded` and :func:`worker.services.inspection.load` raise.
    """
    return compare_overlay_loaded(load(session, source=a, settings=settings),
                                  load(session, source=b, settings=settings), image_id=image_id, **view)


def compare_overlay_loaded(
    pa: Inspectable,
    pb: Inspectable,
    *,
    image_id: str,
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
        raise segcore_error(exc, f"image {image_id!r}") from exc
    return drawn, [(label, rgb) for _, label, rgb in COMPARISON_LEGEND]

