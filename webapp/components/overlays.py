"""Masks drawn over images, and the class legend that goes with them.

A multiclass mask (``HxW`` class indices) is coloured per class; a multilabel mask (``CxHxW``
0/1) blends the colours of every class present at a pixel. Pixels equal to ``ignore_index`` stay
uncoloured and are hatched grey so that "unlabelled" never reads as background. The dataset's
background class (``DatasetRead.background``: declared at registration, or none) is the only class
left uncoloured and out of the legend; without one, every class is drawn. The palette is fixed per
class index and holds no grey, so the same class has the same colour on every page and never looks
like an ignored pixel.

Example:
    >>> import numpy as np
    >>> img = np.zeros((4, 4, 3), np.uint8); mask = np.zeros((4, 4), np.uint8); mask[0, 0] = 1
    >>> over = overlay_mask(img, mask, num_classes=2, alpha=1.0, background=0)
    >>> over[0, 0].tolist() == list(class_color(1, background_index=0))
    True
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import streamlit as st

from segcore.palette import IGNORE_COLOUR, default_palette

__all__ = [
    "IGNORE_COLOR",
    "class_color",
    "class_palette",
    "overlay_mask",
    "legend_html",
    "render_legend",
    "classes_present",
]

IGNORE_COLOR = IGNORE_COLOUR


def class_color(index: int, *, background_index: int | None = None) -> tuple[int, int, int]:
    """The RGB colour of class ``index`` (black for the background class when one is named)."""
    rgb = default_palette(max(index + 1, (background_index or 0) + 1), background=background_index)[index]
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))


def class_palette(num_classes: int, *, background: int | None = None) -> np.ndarray:
    """``[num_classes, 3]`` uint8 colours, row ``k`` for class ``k`` (:func:`segcore.palette.default_palette`)."""
    return default_palette(num_classes, background=background)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[:, :, :3]
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    return img


def overlay_mask(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    num_classes: int,
    alpha: float = 0.5,
    ignore_index: int | None = 255,
    background: int | None = None,
    visible: Sequence[int] | None = None,
) -> np.ndarray:
    """Blend class colours over an image.

    Args:
        image: ``HxWx3`` (or ``HxW`` grey) uint8.
        mask: Multiclass ``HxW`` class indices, or multilabel ``CxHxW`` 0/1.
        num_classes: Number of classes (the palette size).
        alpha: Opacity of the colours, 0..1.
        ignore_index: Multiclass label of unlabelled pixels; drawn as a grey checker pattern.
        background: The dataset's background class, left uncoloured in multiclass masks (None: none).
        visible: Only these class indices are coloured (None: all).

    Returns:
        ``HxWx3`` uint8.

    Raises:
        ValueError: the mask's height and width differ from the image's.
    """
    img = _as_rgb(image).astype(np.float32)
    m = np.asarray(mask)
    palette = class_palette(num_classes, background=background).astype(np.float32)
    show = np.ones(num_classes, dtype=bool) if visible is None else np.isin(np.arange(num_classes), list(visible))
    if m.ndim == 3:  # multilabel CxHxW
        if m.shape[1:] != img.shape[:2]:
            raise ValueError(f"mask size {m.shape[1:]} differs from image size {img.shape[:2]}")
        on = (m[:num_classes] > 0) & show[: m.shape[0], None, None]
        count = on.sum(axis=0)
        color = np.einsum("chw,cd->hwd", on.astype(np.float32), palette[: on.shape[0]])
        covered = count > 0
        color[covered] /= count[covered, None]
        a = np.where(covered, alpha, 0.0)[:, :, None]
        return (img * (1 - a) + color * a).round().astype(np.uint8)
    if m.shape != img.shape[:2]:
        raise ValueError(f"mask size {m.shape} differs from image size {img.shape[:2]}")
    idx = m.astype(np.int64)
    valid = (idx >= 0) & (idx < num_classes)
    coloured = valid.copy()
    coloured[valid] = show[idx[valid]]
    if background is not None:
        coloured &= idx != background
    color = np.zeros_like(img)
    color[coloured] = palette[idx[coloured]]
    a = np.where(coloured, alpha, 0.0)[:, :, None]
    out = img * (1 - a) + color * a
    if ignore_index is not None:
        ignored = idx == ignore_index
        if ignored.any():
            yy, xx = np.indices(idx.shape)
            checker = ((yy // 4 + xx // 4) % 2 == 0) & ignored
            out[checker] = out[checker] * 0.5 + np.array(IGNORE_COLOR, np.float32) * 0.5
    return out.round().astype(np.uint8)


def classes_present(mask: np.ndarray, num_classes: int) -> list[int]:
    """Class indices that occur in a multiclass ``HxW`` or multilabel ``CxHxW`` mask."""
    m = np.asarray(mask)
    if m.ndim == 3:
        return [k for k in range(min(num_classes, m.shape[0])) if m[k].any()]
    counts = np.bincount(m.ravel().astype(np.int64), minlength=num_classes)
    return [k for k in range(num_classes) if counts[k] > 0]


def legend_html(
    classes: Sequence[str],
    *,
    present: Sequence[int] | None = None,
    background: int | None = None,
    ignore_label: str | None = "unlabelled (ignored)",
) -> str:
    """HTML of coloured swatches with class names (absent classes dimmed when ``present`` is given);
    the ``background`` class (never coloured) is left out."""
    items = []
    for k, name in enumerate(classes):
        if background is not None and k == background:
            continue
        r, g, b = class_color(k, background_index=background)
        dim = present is not None and k not in present
        style = "opacity:0.35;" if dim else ""
        items.append(
            f'<span style="display:inline-flex;align-items:center;margin:0 12px 4px 0;{style}">'
            f'<span style="width:14px;height:14px;border-radius:3px;background:rgb({r},{g},{b});'
            f'display:inline-block;margin-right:5px;border:1px solid #0003"></span>{html.escape(str(name))}</span>'
        )
    if ignore_label:
        r, g, b = IGNORE_COLOR
        items.append(
            '<span style="display:inline-flex;align-items:center;margin:0 12px 4px 0">'
            f'<span style="width:14px;height:14px;border-radius:3px;display:inline-block;margin-right:5px;'
            f'background:repeating-linear-gradient(45deg,rgb({r},{g},{b}) 0 3px,transparent 3px 6px);'
            f'border:1px solid #0003"></span>{html.escape(ignore_label)}</span>'
        )
    return '<div style="display:flex;flex-wrap:wrap">' + "".join(items) + "</div>"


def render_legend(
    classes: Sequence[str], *, present: Sequence[int] | None = None, background: int | None = None
) -> None:
    """Draw the class legend (see :func:`legend_html`)."""
    st.html(legend_html(classes, present=present, background=background))
