"""Class colours: one fixed colour per class index, the same on every page and in every overlay.

Numpy only (no torch), so the dashboard draws dataset samples with the colours the error analysis
(:mod:`segcore.analysis.overlay`) uses. The 20 base colours are the Tableau-20 hues without its two
greys, which would read as ignored pixels (:data:`IGNORE_COLOUR`); beyond 20 classes, hues are
spaced by the golden ratio. A dataset's background class, when it has one, is black and never drawn.

Example:
    >>> default_palette(3, background=0).tolist()
    [[0, 0, 0], [31, 119, 180], [255, 127, 14]]
    >>> default_palette(2, background=None).tolist()
    [[31, 119, 180], [255, 127, 14]]
"""

from __future__ import annotations

import colorsys

import numpy as np

__all__ = ["IGNORE_COLOUR", "BASE_COLOURS", "default_palette"]

#: Colour of ignored (unlabelled) pixels; no class colour is grey.
IGNORE_COLOUR: tuple[int, int, int] = (128, 128, 128)

BASE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (0, 128, 128), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (128, 0, 64), (219, 219, 141), (158, 218, 229),
)  # fmt: skip


def default_palette(num_classes: int, *, background: int | None = 0) -> np.ndarray:
    """A fixed colour per class: the base colours in class order, skipping the background (black).

    Args:
        num_classes: ``C``.
        background: The background class (coloured black, never drawn), or None.

    Returns:
        ``Cx3`` uint8.
    """
    n_fg = num_classes - (background is not None and 0 <= background < num_classes)
    colours = list(BASE_COLOURS[: max(n_fg, 0)])
    golden = 0.618033988749895
    i = 0
    while len(colours) < n_fg:  # beyond 20 classes: hues spaced by the golden ratio
        h = (i * golden) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.65 if i % 2 else 0.9, 0.95 if i % 3 else 0.75)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
        i += 1
    out = np.zeros((num_classes, 3), dtype=np.uint8)
    fg = [k for k in range(num_classes) if k != background]
    if fg:
        out[fg] = np.array(colours, dtype=np.uint8)
    return out
