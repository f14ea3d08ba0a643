"""Overlay rendering: image, ground truth, prediction and error map, by table lookups only.

Every step is a whole-array numpy operation (palette lookup, integer alpha blend), so a
2048x2048 image renders in well under a second; ``region`` and ``downscale`` cut the work to the
viewport a UI shows.

The error map uses a fixed legend, Paul Tol's high-contrast scheme (readable with every common
colour-vision deficiency and in greyscale): under-prediction blue, over-prediction yellow, wrong
class red. Ignored pixels are grey in the ground-truth panel and never errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from segcore.analysis._inputs import as_ground_truth, as_prediction, as_task
from segcore.analysis.compare import COMPARISON_LEGEND, comparison_codes
from segcore.analysis.taxonomy import ErrorKind, error_codes
from segcore.config import TaskType
from segcore.errors import ConfigError
from segcore.palette import IGNORE_COLOUR, default_palette

__all__ = [
    "ERROR_LEGEND",
    "IGNORE_COLOUR",
    "OverlayPanels",
    "default_palette",
    "render_overlay",
    "render_comparison",
]

#: The error map's colours: code, label, RGB (Paul Tol's high-contrast scheme).
ERROR_LEGEND: tuple[tuple[ErrorKind, str, tuple[int, int, int]], ...] = (
    (ErrorKind.UNDER_PREDICTION, "under-prediction (class missed)", (0, 68, 136)),
    (ErrorKind.OVER_PREDICTION, "over-prediction (background predicted as class)", (221, 170, 51)),
    (ErrorKind.WRONG_CLASS, "wrong class", (187, 85, 102)),
)




@dataclass(frozen=True)
class OverlayPanels:
    """The four rendered panels, each ``hxwx3`` uint8 (after crop and downscale).

    Attributes:
        image: the image itself.
        ground_truth: the image with the ground-truth classes blended in.
        prediction: the image with the predicted classes blended in.
        errors: the image with the error map blended in (colours in :data:`ERROR_LEGEND`).
        error_codes: ``hxw`` uint8 :class:`~segcore.analysis.taxonomy.ErrorKind` per pixel.
    """

    image: np.ndarray
    ground_truth: np.ndarray
    prediction: np.ndarray
    errors: np.ndarray
    error_codes: np.ndarray

    def mosaic(self) -> np.ndarray:
        """``2hx2wx3`` grid: image, ground truth / prediction, errors."""
        top = np.concatenate([self.image, self.ground_truth], axis=1)
        bottom = np.concatenate([self.prediction, self.errors], axis=1)
        return np.concatenate([top, bottom], axis=0)


def _window(
    arr: np.ndarray, region: tuple[int, int, int, int] | None, step: int, channels_first: bool
) -> np.ndarray:
    ys = slice(region[0], region[2], step) if region else slice(None, None, step)
    xs = slice(region[1], region[3], step) if region else slice(None, None, step)
    return arr[:, ys, xs] if channels_first else arr[ys, xs]


def _check_view(region: tuple[int, int, int, int] | None, downscale: int, shape: tuple[int, int]) -> None:
    if downscale < 1:
        raise ConfigError(f"downscale must be an integer >= 1, got {downscale}")
    if region is not None:
        y0, x0, y1, x1 = region
        if not (0 <= y0 < y1 <= shape[0] and 0 <= x0 < x1 <= shape[1]):
            raise ConfigError(
                f"region {region} is not inside the {shape[0]}x{shape[1]} image; pass "
                "(y0, x0, y1, x1) with 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width"
            )


def _blend(base: np.ndarray, colours: np.ndarray, drawn: np.ndarray, alpha: float) -> np.ndarray:
    """``base`` with ``colours`` blended in at ``alpha`` where ``drawn`` (``alpha=1``: exact colours)."""
    mixed = cv2.addWeighted(base, 1.0 - alpha, colours, alpha, 0.0)
    # cv2.copyTo is several times faster than np.copyto(where=) with a broadcast mask
    return cv2.copyTo(mixed, np.ascontiguousarray(drawn).view(np.uint8), base.copy())


def _shown_mask(show: Sequence[int] | None, num_classes: int) -> np.ndarray | None:
    if show is None:
        return None
    mask = np.zeros(num_classes, dtype=bool)
    idx = np.asarray(list(show), dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= num_classes):
        raise ConfigError(f"show lists class indices outside 0..{num_classes - 1}: {list(show)}")
    mask[idx] = True
    return mask


def _prepare_image(
    image: np.ndarray | None, shape: tuple[int, int], region: tuple[int, int, int, int] | None, step: int
) -> np.ndarray:
    if image is None:
        return np.zeros((*shape, 3), dtype=np.uint8)
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[:2] != shape or image.shape[2] not in (1, 3):
        raise ConfigError(
            f"image is {image.shape} but the masks are {shape}; pass the HxWx3 (or HxW) image "
            "the masks belong to"
        )
    view = _window(image, region, step, channels_first=False)
    if view.dtype != np.uint8:
        view = np.clip(view, 0, 255).astype(np.uint8)
    if view.shape[2] == 1:
        view = np.repeat(view, 3, axis=2)
    return np.ascontiguousarray(view)


def _class_colours(
    labels: np.ndarray,
    *,
    task: TaskType,
    palette: np.ndarray,
    shown: np.ndarray,
    background: int | None,
    ignore_index: int | None,
    ignore_colour: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """``hxwx3`` colours and ``hxw`` drawn mask of a class map or multilabel mask."""
    c = palette.shape[0]
    if task is TaskType.MULTILABEL:
        # overlapping classes: a pixel takes the colour of its last shown positive class
        lab = np.zeros(labels.shape[1:], dtype=np.uint8 if c < 255 else np.uint16)
        drawn = np.zeros(labels.shape[1:], dtype=bool)
        for k in np.flatnonzero(shown):
            lab[labels[k]] = k
            drawn |= labels[k]
        return palette.take(lab, axis=0), drawn
    lut_size = 256 if labels.dtype == np.uint8 else 65536
    colour_lut = np.zeros((lut_size, 3), dtype=np.uint8)
    colour_lut[:c] = palette
    draw_lut = np.zeros(lut_size, dtype=bool)
    draw_lut[:c] = shown
    if background is not None:
        draw_lut[background] = False
    if ignore_colour and ignore_index is not None and ignore_index < lut_size:
        colour_lut[ignore_index] = IGNORE_COLOUR
        draw_lut[ignore_index] = True
    return colour_lut.take(labels, axis=0), draw_lut.take(labels)


def render_overlay(
    image: np.ndarray | None,
    gt: np.ndarray,
    pred: np.ndarray,
    *,
    task: TaskType | str = TaskType.MULTICLASS,
    num_classes: int,
    palette: np.ndarray | None = None,
    alpha: float = 0.5,
    show: Sequence[int] | None = None,
    background: int | None = 0,
    ignore_index: int | None = 255,
    threshold: float = 0.5,
    region: tuple[int, int, int, int] | None = None,
    downscale: int = 1,
) -> OverlayPanels:
    """Render the image, ground truth, prediction and error map of one image.

    Args:
        image: ``HxWx3`` (or ``HxW``) uint8, or ``None`` for a black canvas.
        gt: multiclass ``HxW`` integer map; multilabel ``CxHxW`` {0, 1}.
        pred: ``CxHxW`` probabilities, or a multiclass ``HxW`` class map / multilabel ``CxHxW``
            mask.
        task: multiclass or multilabel.
        num_classes: ``C``.
        palette: ``Cx3`` uint8 class colours (default :func:`default_palette`).
        alpha: opacity of the class and error colours, in ``[0, 1]`` (1 paints them exactly).
        show: class indices to draw (default all): other classes are not coloured and errors
            that involve none of them are not shown.
        background: multiclass background class (never coloured), or ``None``.
        ignore_index: multiclass value of unlabelled pixels (grey in the ground-truth panel).
        threshold: multilabel decision threshold on probabilities.
        region: ``(y0, x0, y1, x1)`` crop in full-resolution pixels, for a zoomed viewport.
        downscale: keep every ``downscale``-th pixel of the (cropped) view, for a small viewport.

    Returns:
        The :class:`OverlayPanels`.

    Raises:
        ConfigError: an argument does not fit the masks.
    """
    task = as_task(task)
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
    if task is TaskType.MULTILABEL:
        background, ignore_index = None, None
    shape = tuple(np.shape(gt)[-2:])
    _check_view(region, downscale, shape)
    cf = task is TaskType.MULTILABEL
    g = as_ground_truth(
        _window(np.asarray(gt), region, downscale, cf), task=task, num_classes=num_classes,
        ignore_index=ignore_index,
    )
    pred = np.asarray(pred)
    p = as_prediction(
        _window(pred, region, downscale, pred.ndim == 3), task=task, num_classes=num_classes,
        threshold=threshold,
    ).labels
    if p.shape != g.shape:
        raise ConfigError(f"prediction is {pred.shape} but the ground truth is {np.shape(gt)}")
    if palette is None:
        palette = default_palette(num_classes, background=background)
    palette = np.asarray(palette, dtype=np.uint8)
    if palette.shape != (num_classes, 3):
        raise ConfigError(f"palette must be {num_classes}x3 uint8 RGB, got shape {palette.shape}")
    shown_mask = _shown_mask(show, num_classes)
    shown = np.ones(num_classes, dtype=bool) if shown_mask is None else shown_mask
    base = _prepare_image(image, shape, region, downscale)
    common: dict[str, Any] = dict(
        task=task, palette=palette, shown=shown, background=background, ignore_index=ignore_index
    )
    gt_col, gt_drawn = _class_colours(g, ignore_colour=True, **common)
    pr_col, pr_drawn = _class_colours(p, ignore_colour=False, **common)
    codes = error_codes(g, p, task=task, num_classes=num_classes, background=background, show=shown_mask)
    err_lut = np.zeros((4, 3), dtype=np.uint8)
    for kind, _, rgb in ERROR_LEGEND:
        err_lut[kind] = rgb
    return OverlayPanels(
        image=base,
        ground_truth=_blend(base, gt_col, gt_drawn, alpha),
        prediction=_blend(base, pr_col, pr_drawn, alpha),
        errors=_blend(base, err_lut.take(codes, axis=0), codes != 0, alpha),
        error_codes=codes,
    )


def render_comparison(
    image: np.ndarray | None,
    gt: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    *,
    task: TaskType | str = TaskType.MULTICLASS,
    num_classes: int,
    alpha: float = 0.5,
    show: Sequence[int] | None = None,
    ignore_index: int | None = 255,
    threshold: float = 0.5,
    region: tuple[int, int, int, int] | None = None,
    downscale: int = 1,
) -> np.ndarray:
    """Render where A is right and B wrong, the reverse, and both wrong (:data:`COMPARISON_LEGEND`).

    Args:
        image: ``HxWx3`` (or ``HxW``) uint8, or ``None``.
        gt: multiclass ``HxW`` integer map; multilabel ``CxHxW`` {0, 1}.
        pred_a: probabilities or class map / mask of A.
        pred_b: the same for B.
        task: multiclass or multilabel.
        num_classes: ``C``.
        alpha: opacity in ``[0, 1]``.
        show: class indices to consider (default all).
        ignore_index: multiclass value of unlabelled pixels (never coloured).
        threshold: multilabel decision threshold.
        region: ``(y0, x0, y1, x1)`` crop.
        downscale: keep every ``downscale``-th pixel.

    Returns:
        ``hxwx3`` uint8.
    """
    task = as_task(task)
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
    if task is TaskType.MULTILABEL:
        ignore_index = None
    shape = tuple(np.shape(gt)[-2:])
    _check_view(region, downscale, shape)
    cf = task is TaskType.MULTILABEL
    g = as_ground_truth(
        _window(np.asarray(gt), region, downscale, cf), task=task, num_classes=num_classes,
        ignore_index=ignore_index,
    )
    preds = []
    for pred in (np.asarray(pred_a), np.asarray(pred_b)):
        p = as_prediction(
            _window(pred, region, downscale, pred.ndim == 3), task=task, num_classes=num_classes,
            threshold=threshold,
        ).labels
        if p.shape != g.shape:
            raise ConfigError(f"prediction is {pred.shape} but the ground truth is {np.shape(gt)}")
        preds.append(p)
    codes = comparison_codes(
        g, preds[0], preds[1], task=task, num_classes=num_classes, ignore_index=ignore_index,
        show=_shown_mask(show, num_classes),
    )
    lut = np.zeros((4, 3), dtype=np.uint8)
    for kind, _, rgb in COMPARISON_LEGEND:
        lut[kind] = rgb
    base = _prepare_image(image, shape, region, downscale)
    return _blend(base, lut.take(codes, axis=0), codes != 0, alpha)
