"""Masks drawn over images, and the class legend that goes with them.

A multiclass mask (``HxW`` class indices) is coloured per class; a multilabel mask (``CxHxW``
0/1) blends the colours of every class present at a pixel. Pixels equal to ``ignore_index`` stay
uncoloured and are hatched grey so that "unlabelled" never reads as background. The palette is
fixed per class index, so the same class has the same colour on every page.

Example:
    >>> import numpy as np
    >>> img = np.zeros((4, 4, 3), np.uint8); mask = np.zeros((4, 4), np.uint8); mask[0, 0] = 1
    >>> overlay_mask(img, mask, num_classes=2, alpha=1.0)[0, 0].tolist() == list(class_color(1))
    True
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import streamlit as st

__all__ = [
    "IGNORE_COLOR",
    "class_color",
    "class_palette",
    "overlay_mask",
    "legend_html",
    "render_legend",
    "classes_present",
]

# Tableau-20 order: well separated, colour-blind friendlier than a rainbow.
_BASE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120), (152, 223, 138),
    (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (219, 219, 141), (158, 218, 229),
    (127, 127, 127), (199, 199, 199),
]
IGNORE_COLOR = (128, 128, 128)


def class_color(index: int, *, background_index: int | None = None) -> tuple[int, int, int]:
    """The RGB colour of class ``index`` (black for the background class when one is named)."""
    if background_index is not None and index == background_index:
        return (0, 0, 0)
    if index < len(_BASE):
        return _BASE[index]
    rng = np.random.default_rng(index)  # beyond 20 classes: stable pseudo-random colours
    return tuple(int(v) for v in rng.integers(40, 230, size=3))  # type: ignore[return-value]  # size=3: an RGB triple


def class_palette(num_classes: int) -> np.ndarray:
    """``[num_classes, 3]`` uint8 colours, row ``k`` for class ``k``."""
    return np.array([class_color(k) for k in range(num_classes)], dtype=np.uint8)


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
    skip_background: bool = True,
    visible: Sequence[int] | None = None,
) -> np.ndarray:
    """Blend class colours over an image.

    Args:
        image: ``HxWx3`` (or ``HxW`` grey) uint8.
        mask: Multiclass ``HxW`` class indices, or multilabel ``CxHxW`` 0/1.
        num_classes: Number of classes (the palette size).
        alpha: Opacity of the colours, 0..1.
        ignore_index: Multiclass label of unlabelled pixels; drawn as a grey checker pattern.
        skip_background: Leave class 0 uncoloured in multiclass masks.
        visible: Only these class indices are coloured (None: all).

    Returns:
        ``HxWx3`` uint8.

    Raises:
        ValueError: the mask's height and width differ from the image's.
    """
    img = _as_rgb(image).astype(np.float32)
    m = np.asarray(mask)
    palette = class_palette(num_classes).astype(np.float32)
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
    if skip_background:
        coloured &= idx != 0
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
    skip_background: bool = False,
    ignore_label: str | None = "unlabelled (ignored)",
) -> str:
    """HTML of coloured swatches with class names (absent classes dimmed when ``present`` is given)."""
    items = []
    for k, name in enumerate(classes):
        if skip_background and k == 0:
            continue
        r, g, b = class_color(k)
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
    classes: Sequence[str], *, present: Sequence[int] | None = None, skip_background: bool = False
) -> None:
    """Draw the class legend (see :func:`legend_html`)."""
    st.html(legend_html(classes, present=present, skip_background=skip_background))
