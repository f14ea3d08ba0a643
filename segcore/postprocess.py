"""Post-processing of predictions: small-component removal, hole filling, DenseCRF.

Each function takes either labels or probabilities and returns labels:

- multiclass labels: H x W integer class map; probabilities: C x H x W (argmax first);
- multilabel labels: C x H x W {0, 1}; probabilities: C x H x W float (``>= threshold`` first).

Pass ``task=`` with probabilities (a float array) so the decoding is unambiguous.

Example:
    >>> labels = remove_small_components(probs, min_area=64, task="multiclass")  # doctest: +SKIP
    >>> labels = fill_holes(labels, classes=[3])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from segcore.errors import ConfigError

__all__ = ["dense_crf", "fill_holes", "remove_small_components", "to_labels"]

MinArea = int | Sequence[int] | Mapping[int, int]


def to_labels(
    x: np.ndarray, *, task: str | None = None, threshold: float | Sequence[float] = 0.5
) -> tuple[np.ndarray, str]:
    """Labels from labels or probabilities, and the task.

    Args:
        x: H x W class map, C x H x W {0,1} masks, or C x H x W float probabilities.
        task: required for float input; inferred for labels (2-D: multiclass, 3-D: multilabel).
        threshold: multilabel probability threshold (one, or one per class).

    Returns:
        (labels, task).
    """
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.floating):
        if x.ndim != 3:
            raise ConfigError(f"probabilities must be C x H x W, got shape {x.shape}")
        if task == "multiclass":
            return x.argmax(0).astype(np.int32), task
        if task == "multilabel":
            thr = np.asarray(threshold, np.float32)
            thr = thr[:, None, None] if thr.ndim == 1 else thr
            return (x >= thr).astype(np.uint8), task
        raise ConfigError("pass task='multiclass' or task='multilabel' with probabilities")
    if x.ndim == 2:
        return x, task or "multiclass"
    if x.ndim == 3:
        return (x > 0).astype(np.uint8), task or "multilabel"
    raise ConfigError(f"labels must be H x W (multiclass) or C x H x W (multilabel), got shape {x.shape}")


def _structure(connectivity: int) -> np.ndarray:
    if connectivity == 4:
        return ndimage.generate_binary_structure(2, 1)
    if connectivity == 8:
        return ndimage.generate_binary_structure(2, 2)
    raise ConfigError(f"connectivity must be 4 or 8, got {connectivity}")


def _area_of(value: MinArea, what: str = "min_area") -> Callable[[int], int]:
    """A function class -> minimum area (0: leave the class alone)."""
    if isinstance(value, Mapping):
        table = {int(k): int(v) for k, v in value.items()}
    elif isinstance(value, (int, np.integer)):
        if value < 0:
            raise ConfigError(f"{what} must be >= 0, got {value}")
        return lambda c: int(value)
    else:
        table = {i: int(v) for i, v in enumerate(value)}
    if any(v < 0 for v in table.values()):
        raise ConfigError(f"{what} must be >= 0, got {table}")
    return lambda c: table.get(int(c), 0)


def _surrounding_class(labels: np.ndarray, component: np.ndarray, own: int, fallback: int) -> int:
    """The most frequent class on the one-pixel ring around a component (not its own class)."""
    ring = ndimage.binary_dilation(component, structure=_structure(8)) & ~component
    values = labels[ring]
    values = values[values != own]
    if values.size == 0:
        return fallback
    uniq, counts = np.unique(values, return_counts=True)
    return int(uniq[counts.argmax()])


def remove_small_components(
    x: np.ndarray,
    min_area: MinArea,
    *,
    task: str | None = None,
    threshold: float | Sequence[float] = 0.5,
    connectivity: int = 8,
    background: int = 0,
    skip_classes: Sequence[int] = (),
) -> np.ndarray:
    """Remove connected components smaller than a minimum area.

    Args:
        x: labels or probabilities (see the module docstring).
        min_area: pixels; one value for every class, one per class, or a mapping class -> area
            (classes not named are left alone).
        task, threshold: to decode probabilities.
        connectivity: 4 or 8.
        background: multiclass: the class used when a component has no neighbouring class.
        skip_classes: classes never removed (multiclass: the background is always skipped).

    Returns:
        Labels of the same shape as the decoded input: a removed multiclass component takes the
        most frequent class around it (so a speck inside an object joins the object); a removed
        multilabel component is cleared.
    """
    labels, task = to_labels(x, task=task, threshold=threshold)
    structure = _structure(connectivity)
    if task == "multiclass":
        area = _area_of(min_area)
        present = [int(c) for c in np.unique(labels) if c != background and c not in skip_classes]
        out = labels.copy()
        for c in present:
            limit = area(c)
            if limit <= 0:
                continue
            comp, n = ndimage.label(labels == c, structure=structure)
            if n == 0:
                continue
            sizes = np.bincount(comp.ravel())
            boxes = ndimage.find_objects(comp)
            for idx in np.flatnonzero(sizes < limit):
                if idx == 0:
                    continue
                grown = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in boxes[idx - 1])
                mask = comp[grown] == idx
                view = out[grown]  # a view: assigning through it edits out
                view[mask] = _surrounding_class(view, mask, c, background)
        return out
    area = _area_of(min_area)
    out = labels.copy()
    for c in range(labels.shape[0]):
        limit = area(c)
        if limit <= 0 or c in skip_classes:
            continue
        comp, n = ndimage.label(labels[c] > 0, structure=structure)
        if n:
            sizes = np.bincount(comp.ravel())
            small = sizes < limit
            small[0] = False
            out[c][small[comp]] = 0
    return out


def fill_holes(
    x: np.ndarray,
    *,
    classes: Sequence[int] | None = None,
    max_hole_area: int | None = None,
    task: str | None = None,
    threshold: float | Sequence[float] = 0.5,
) -> np.ndarray:
    """Fill holes: regions fully enclosed by one class become that class.

    Args:
        x: labels or probabilities.
        classes: the classes whose holes are filled (default: every class; multiclass skips 0).
        max_hole_area: fill only holes up to this many pixels (None: every hole).
        task, threshold: to decode probabilities.

    Returns:
        Labels. Multiclass: a hole's pixels (whatever class they had) take the enclosing class,
        classes processed in the given order. Multilabel: each class mask is filled on its own.
    """
    labels, task = to_labels(x, task=task, threshold=threshold)
    out = labels.copy()
    if task == "multiclass":
        todo = list(classes) if classes is not None else [int(c) for c in np.unique(labels) if c != 0]
        for c in todo:
            out[_holes(out == c, max_hole_area)] = c
        return out
    todo = list(classes) if classes is not None else list(range(labels.shape[0]))
    for c in todo:
        out[c][_holes(out[c] > 0, max_hole_area)] = 1
    return out


def _holes(mask: np.ndarray, max_hole_area: int | None) -> np.ndarray:
    """Pixels enclosed by ``mask`` (4-connected background not reaching the border)."""
    holes = ndimage.binary_fill_holes(mask) & ~mask
    if max_hole_area is not None and holes.any():
        comp, _ = ndimage.label(holes, structure=_structure(4))
        sizes = np.bincount(comp.ravel())
        keep = sizes <= max_hole_area
        keep[0] = False
        holes = keep[comp]
    return holes


def dense_crf(
    image: np.ndarray,
    probs: np.ndarray,
    *,
    iterations: int = 5,
    gaussian_sxy: float = 3.0,
    gaussian_compat: float = 3.0,
    bilateral_sxy: float = 80.0,
    bilateral_srgb: float = 13.0,
    bilateral_compat: float = 10.0,
) -> np.ndarray:
    """Fully connected CRF refinement (Kraehenbuehl and Koltun) of multiclass probabilities.

    Needs the optional package ``pydensecrf2`` (``pip install pydensecrf2``; it builds from
    source with a C++ compiler). The original ``pydensecrf`` does not build with Cython 3.

    Args:
        image: H x W x 3 uint8 RGB image the probabilities belong to.
        probs: C x H x W softmax probabilities.
        iterations: mean-field iterations.
        gaussian_sxy, gaussian_compat: the smoothness kernel.
        bilateral_sxy, bilateral_srgb, bilateral_compat: the appearance kernel.

    Returns:
        C x H x W float32 refined probabilities.

    Raises:
        ConfigError: pydensecrf2 is not installed, or shapes do not match.
    """
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as exc:
        raise ConfigError("dense_crf needs the optional package pydensecrf2: pip install pydensecrf2") from exc
    probs = np.asarray(probs, dtype=np.float32)
    image = np.asarray(image)
    if probs.ndim != 3 or image.shape[:2] != probs.shape[1:] or image.ndim != 3 or image.shape[2] != 3:
        raise ConfigError(
            f"dense_crf needs an H x W x 3 image and C x H x W probabilities, got {image.shape} and {probs.shape}"
        )
    c, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, c)
    unary = -np.log(np.clip(probs, 1e-8, 1.0)).reshape(c, -1)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=np.ascontiguousarray(image, dtype=np.uint8),
        compat=bilateral_compat,
    )
    return np.asarray(crf.inference(iterations), dtype=np.float32).reshape(c, h, w)
