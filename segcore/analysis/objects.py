"""Object-level recall by object size.

An **object** is a connected component (8-connected by default) of one class's ground-truth mask.
It is **found** when at least ``found_share`` (default 0.5) of its pixels are predicted as its
class. Objects are binned by pixel count with ``size_bins`` (increasing lower edges; the last bin
is open-ended), so a class whose small objects are all missed shows a low recall in its small bins
even when its pixel IoU looks fine.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict

from segcore.errors import ConfigError

__all__ = [
    "DEFAULT_SIZE_BINS",
    "SizeBin",
    "ClassObjects",
    "ObjectRecall",
    "check_size_bins",
    "object_hits",
    "bin_objects",
]

#: Lower edges (pixels) of the default object-size bins: <64, 64-255, 256-1023, 1024-4095,
#: 4096-16383, >=16384.
DEFAULT_SIZE_BINS: tuple[int, ...] = (0, 64, 256, 1024, 4096, 16384)


class SizeBin(BaseModel):
    """Objects of one class in one size bin: ``lower <= pixels < upper`` (``upper=None``: no end)."""

    model_config = ConfigDict(extra="forbid")

    lower: int
    upper: int | None
    objects: int
    found: int
    recall: float | None


class ClassObjects(BaseModel):
    """Object recall of one class, overall and per size bin."""

    model_config = ConfigDict(extra="forbid")

    class_index: int
    name: str
    objects: int
    found: int
    recall: float | None
    bins: list[SizeBin]


class ObjectRecall(BaseModel):
    """Object-level recall of every analysed class."""

    model_config = ConfigDict(extra="forbid")

    found_share: float
    connectivity: int
    size_bins: list[int]
    classes: list[ClassObjects]


def check_size_bins(size_bins: Sequence[int]) -> np.ndarray:
    """Validate ``size_bins`` (strictly increasing, non-negative lower edges) as an int64 array."""
    edges = np.asarray(list(size_bins), dtype=np.int64)
    if edges.ndim != 1 or edges.size == 0 or edges[0] < 0 or np.any(np.diff(edges) <= 0):
        raise ConfigError(
            f"size_bins must be strictly increasing non-negative lower edges, e.g. "
            f"{list(DEFAULT_SIZE_BINS)}; got {list(size_bins)}"
        )
    return edges


def object_hits(
    gt: np.ndarray, pred: np.ndarray, *, connectivity: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of ``gt`` and how many of each one's pixels ``pred`` covers.

    Args:
        gt: ``HxW`` bool ground-truth mask of one class.
        pred: ``HxW`` bool predicted mask of the same class.
        connectivity: 4 or 8.

    Returns:
        ``(sizes, hits)``: one int64 entry per object (pixels, pixels predicted as the class).
    """
    if connectivity not in (4, 8):
        raise ConfigError(f"connectivity must be 4 or 8, got {connectivity}")
    ys, xs = np.nonzero(gt.any(axis=1))[0], np.nonzero(gt.any(axis=0))[0]
    if ys.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    # label only the bounding box of the mask: rare classes cover a small part of the image
    box = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
    g = gt[box]
    n, labels, stats, _ = cv2.connectedComponentsWithStats(
        g.view(np.uint8), connectivity=connectivity, ltype=cv2.CV_32S
    )
    sizes = stats[1:, cv2.CC_STAT_AREA].astype(np.int64)
    hits = np.bincount(labels[g & pred[box]], minlength=n)[1:].astype(np.int64)
    return sizes, hits


def bin_objects(
    sizes: np.ndarray, found: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Count objects and found objects per size bin.

    Args:
        sizes: ``N`` object pixel counts.
        found: ``N`` bool.
        edges: ``B`` lower edges.

    Returns:
        ``(objects, found)``, each ``B`` int64.
    """
    idx = np.searchsorted(edges, sizes, side="right") - 1
    keep = idx >= 0  # objects below the first edge are not counted
    b = edges.size
    return (
        np.bincount(idx[keep], minlength=b).astype(np.int64),
        np.bincount(idx[keep & found], minlength=b).astype(np.int64),
    )
