"""Sliding-window settings, window placement and blending weights.

Windows of ``size`` are placed every ``stride = size * (1 - overlap)`` pixels, the last one flush
with the image edge, so every window is full-size when the image is at least one window big.
Each window's probabilities are multiplied by a blending weight (Gaussian or linear, highest at
the window centre, never zero) and summed; the sum is divided by the summed weights.

Example:
    >>> SlidingWindow(size=(512, 512), overlap=0.5).positions(1024, 1024)[:3]
    [(0, 0), (0, 256), (0, 512)]
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SlidingWindow", "blend_weights"]


class SlidingWindow(BaseModel):
    """How to tile an image too large to predict in one pass.

    Attributes:
        size: (height, width) of a window, e.g. the training crop size.
        overlap: fraction of a window shared with its neighbour, in [0, 0.95].
        blend: ``gaussian`` (sigma = ``sigma_scale`` x size), ``linear`` (a tent), or ``constant``.
        sigma_scale: Gaussian sigma relative to the window size.
        memory_budget_mb: largest in-memory float32 accumulator (classes + 1 weight plane, full
            image); above it the accumulator is a memory-mapped temp file.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: tuple[int, int] = Field(description="(height, width) of one window.")
    overlap: float = Field(default=0.25, ge=0.0, le=0.95)
    blend: Literal["gaussian", "linear", "constant"] = "gaussian"
    sigma_scale: float = Field(default=0.125, gt=0.0, le=1.0)
    memory_budget_mb: float = Field(default=1024.0, gt=0.0)

    def _axis_starts(self, length: int, win: int) -> list[int]:
        if length <= win:
            return [0]
        stride = max(1, int(win * (1.0 - self.overlap)))
        starts = list(range(0, length - win, stride))
        starts.append(length - win)
        return starts

    def positions(self, height: int, width: int) -> list[tuple[int, int]]:
        """Top-left corners (y, x) of every window for an image of ``height x width``."""
        ys = self._axis_starts(height, self.size[0])
        xs = self._axis_starts(width, self.size[1])
        return [(y, x) for y in ys for x in xs]

    def window_shape(self, height: int, width: int) -> tuple[int, int]:
        """The actual window shape: ``size`` clipped to the image."""
        return min(self.size[0], height), min(self.size[1], width)


def _profile_1d(n: int, blend: str, sigma_scale: float) -> np.ndarray:
    centre = (n - 1) / 2.0
    idx = np.arange(n, dtype=np.float64)
    if blend == "gaussian":
        sigma = max(sigma_scale * n, 1e-6)
        p = np.exp(-((idx - centre) ** 2) / (2.0 * sigma**2))
    elif blend == "linear":
        p = 1.0 - np.abs(idx - centre) / (centre + 1.0)
    else:
        p = np.ones(n)
    return p / p.max()


def blend_weights(shape: tuple[int, int], blend: str = "gaussian", sigma_scale: float = 0.125) -> np.ndarray:
    """Blending weights of one window.

    Args:
        shape: (height, width) of the window.
        blend: ``gaussian``, ``linear`` or ``constant``.
        sigma_scale: Gaussian sigma relative to the window side.

    Returns:
        H x W float32, maximum 1 at the centre, at least 1e-3 everywhere (edges of the image
        are covered by one window only, so they must keep a non-zero weight).
    """
    w = np.outer(_profile_1d(shape[0], blend, sigma_scale), _profile_1d(shape[1], blend, sigma_scale))
    return np.maximum(w, 1e-3).astype(np.float32)
