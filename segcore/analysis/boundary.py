"""Boundary analysis: errors near ground-truth boundaries, and boundary IoU.

Two bands of width ``k`` (``boundary_px``, a Chebyshev distance: a ``(2k+1) x (2k+1)`` square) are
used, both from one max filter and one min filter of the label map:

- the **error band**: pixels with a pixel of another ground-truth label (the ignore value counts
  as a label) within ``k``. An error in the band is a *boundary* error, any other an *interior*
  error. The image edge is not a boundary.
- the **contour band** of a mask for boundary IoU (Cheng et al., 2021, "Boundary IoU: Improving
  Object-Centric Image Segmentation Evaluation"): the mask's pixels within ``k`` of its contour,
  i.e. ``mask & ~erode(mask)`` with the image padded by zeros, so the image edge is a contour as
  in the reference implementation. Boundary IoU of class ``c`` is
  ``|G_k ∩ P_k| / |G_k ∪ P_k|`` with ``G_k``, ``P_k`` the contour bands of the ground-truth and
  predicted masks. Ignored pixels belong to neither mask (in the prediction too, whatever was
  predicted there) and are left out of both bands. Summed over images, it is a dataset-level
  figure like the pooled IoU.

For a multiclass label map the contour band of every class comes from the same filters: a pixel of
class ``c`` lies within ``k`` of the contour of ``c`` exactly when its window holds another label
or crosses the image edge.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict

from segcore.analysis._confusion import stratified_confusion
from segcore.errors import ConfigError

__all__ = [
    "ClassBoundary",
    "BoundaryAnalysis",
    "label_boundary_band",
    "mask_contour_band",
    "boundary_iou",
    "multiclass_boundary_counts",
    "multilabel_boundary_counts",
]


class ClassBoundary(BaseModel):
    """Boundary figures of one class.

    Attributes:
        errors: the class's wrong pixels (false negatives + false positives).
        boundary_errors: those within ``boundary_px`` of a ground-truth boundary.
        interior_errors: the others.
        boundary_share: ``boundary_errors / errors`` (``None`` without errors).
        boundary_iou: Cheng et al. boundary IoU (``None`` when the class is in neither mask).
    """

    model_config = ConfigDict(extra="forbid")

    class_index: int
    name: str
    errors: int
    boundary_errors: int
    interior_errors: int
    boundary_share: float | None
    boundary_iou: float | None


class BoundaryAnalysis(BaseModel):
    """Boundary-versus-interior errors per class, and the taxonomy split by band.

    ``taxonomy_boundary`` and ``taxonomy_interior`` hold the error-kind totals (as in
    :class:`~segcore.analysis.taxonomy.ErrorTaxonomy`) of boundary and interior pixels.
    ``boundary_pixel_share`` is the share of all counted pixels that lie in the error band.
    """

    model_config = ConfigDict(extra="forbid")

    boundary_px: int
    boundary_pixel_share: float | None
    classes: list[ClassBoundary]
    taxonomy_boundary: dict[str, int]
    taxonomy_interior: dict[str, int]
    boundary_error_share: float | None


def _kernel(width: int) -> np.ndarray:
    if width < 1:
        raise ConfigError(f"boundary width must be at least 1 pixel, got {width}; pass boundary_px >= 1")
    return np.ones((2 * width + 1, 2 * width + 1), dtype=np.uint8)


def _as_cv(labels: np.ndarray) -> np.ndarray:
    if labels.dtype == bool:
        return labels.view(np.uint8)
    if labels.dtype in (np.uint8, np.uint16):
        return labels
    return labels.astype(np.uint16)


def label_boundary_band(labels: np.ndarray, width: int) -> np.ndarray:
    """Pixels with a different label within ``width`` (Chebyshev); the image edge is no boundary.

    Args:
        labels: ``HxW`` integer label map or bool mask.
        width: ``k`` >= 1.

    Returns:
        ``HxW`` bool band.
    """
    kernel = _kernel(width)
    img = _as_cv(labels)
    hi = cv2.dilate(img, kernel, borderType=cv2.BORDER_REPLICATE)
    lo = cv2.erode(img, kernel, borderType=cv2.BORDER_REPLICATE)
    return hi != lo


def _edge_frame(shape: tuple[int, int], width: int) -> np.ndarray:
    frame = np.zeros(shape, dtype=bool)
    frame[:width] = True
    frame[-width:] = True
    frame[:, :width] = True
    frame[:, -width:] = True
    return frame


def mask_contour_band(mask: np.ndarray, width: int) -> np.ndarray:
    """The mask's pixels within ``width`` of its contour (the image edge counts as contour).

    Args:
        mask: ``HxW`` bool.
        width: ``d`` >= 1.

    Returns:
        ``HxW`` bool, ``mask & ~erode(mask)`` with zero padding.
    """
    m = _as_cv(mask.astype(bool, copy=False))
    inner = cv2.erode(m, _kernel(width), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return mask.astype(bool, copy=False) & (inner == 0)


def boundary_iou(gt: np.ndarray, pred: np.ndarray, width: int) -> float | None:
    """Boundary IoU of two binary masks (Cheng et al. 2021).

    Args:
        gt: ``HxW`` bool ground-truth mask.
        pred: ``HxW`` bool predicted mask.
        width: contour band width ``d`` in pixels.

    Returns:
        ``|G_d ∩ P_d| / |G_d ∪ P_d|``, or ``None`` when both bands are empty.
    """
    g = mask_contour_band(gt, width)
    p = mask_contour_band(pred, width)
    union = int(np.count_nonzero(g | p))
    return int(np.count_nonzero(g & p)) / union if union else None


def multiclass_boundary_counts(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, *, ignore_index: int | None, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boundary counts of one multiclass image.

    Args:
        gt: ``HxW`` uint8/uint16 ground truth.
        pred: ``HxW`` uint8/uint16 prediction.
        num_classes: ``C``.
        ignore_index: value of unlabelled pixels (left out of every count).
        width: ``k``.

    Returns:
        ``(cm, g_band, p_band, inter)``: ``2xCxC`` confusion of interior (0) and error-band (1)
        pixels; ``C`` sizes of the ground-truth and predicted contour bands; ``C`` sizes of their
        intersections.
    """
    kernel = _kernel(width)
    shape = gt.shape
    frame = _edge_frame(shape, width)
    g_hi = cv2.dilate(_as_cv(gt), kernel, borderType=cv2.BORDER_REPLICATE)
    g_lo = cv2.erode(_as_cv(gt), kernel, borderType=cv2.BORDER_REPLICATE)
    band = g_hi != g_lo
    cm = stratified_confusion(gt, pred, num_classes, ignore_index=ignore_index, strata=band, n_strata=2)
    valid = None
    p_map = pred
    if ignore_index is not None:
        valid = gt != ignore_index
        if not valid.all():
            # predictions on ignored pixels must not move the predicted contours: the ignored
            # region is "another label" in both masks alike
            p_map = pred.astype(np.result_type(pred.dtype, np.min_scalar_type(ignore_index)))
            p_map[~valid] = ignore_index
    p_hi = cv2.dilate(_as_cv(p_map), kernel, borderType=cv2.BORDER_REPLICATE)
    p_lo = cv2.erode(_as_cv(p_map), kernel, borderType=cv2.BORDER_REPLICATE)
    g_band = band | frame
    p_band = (p_hi != p_lo) | frame
    if valid is not None:
        p_band &= valid
        g_band &= valid
    c = num_classes
    gb = np.bincount(gt[g_band], minlength=c)[:c]
    pb = np.bincount(pred[p_band], minlength=c)[:c]
    both = g_band & p_band
    both &= gt == pred
    inter = np.bincount(gt[both], minlength=c)[:c]
    return cm, gb.astype(np.int64), pb.astype(np.int64), inter.astype(np.int64)


def multilabel_boundary_counts(
    gt: np.ndarray, pred: np.ndarray, *, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boundary counts of one multilabel image, each class's band from its own mask.

    Args:
        gt: ``CxHxW`` bool ground truth.
        pred: ``CxHxW`` bool prediction.
        width: ``k``.

    Returns:
        ``(fn_band, fp_band, g_band, p_band, inter)``, each ``C`` int64: false negatives and false
        positives in the class's error band, contour-band sizes and their intersection.
    """
    kernel = _kernel(width)
    c, h, w = gt.shape
    out = np.zeros((5, c), dtype=np.int64)
    for k in range(c):
        either = (gt[k] | pred[k]).view(np.uint8)
        x, y, bw, bh = cv2.boundingRect(either)
        if bw == 0:
            continue
        # work on the masks' bounding box plus a margin of zeros: the filters give the same bands
        # there, and a class covers a small part of a large image
        m = width + 1
        box = (slice(max(y - m, 0), min(y + bh + m, h)), slice(max(x - m, 0), min(x + bw + m, w)))
        g, p = gt[k][box], pred[k][box]
        gu = np.ascontiguousarray(g).view(np.uint8)
        hi = cv2.dilate(gu, kernel, borderType=cv2.BORDER_REPLICATE)
        lo = cv2.erode(gu, kernel, borderType=cv2.BORDER_REPLICATE)
        band = hi != lo
        out[0, k] = np.count_nonzero(g & ~p & band)
        out[1, k] = np.count_nonzero(p & ~g & band)
        gb = g & (lo == 0) if _touches_no_edge(box, h, w) else mask_contour_band(g, width)
        pb = mask_contour_band(p, width)
        out[2, k] = np.count_nonzero(gb)
        out[3, k] = np.count_nonzero(pb)
        out[4, k] = np.count_nonzero(gb & pb)
    return out[0], out[1], out[2], out[3], out[4]


def _touches_no_edge(box: tuple[slice, slice], h: int, w: int) -> bool:
    """Whether a crop lies strictly inside the image (replicated and zero padding then agree)."""
    ys, xs = box
    return ys.start > 0 and xs.start > 0 and ys.stop < h and xs.stop < w
