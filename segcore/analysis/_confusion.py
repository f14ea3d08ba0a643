"""Confusion counts by one ``bincount`` and the per-class scores derived from them."""

from __future__ import annotations

import numpy as np

from segcore.scores import class_scores, confusion_tp_fp_fn, safe_div

__all__ = [
    "confusion_matrix",
    "stratified_confusion",
    "multilabel_counts",
    "class_scores",
    "normalize_rows",
    "safe_div",
    "confusion_tp_fp_fn",
]


def _row_lut(num_classes: int, ignore_index: int | None, dtype: np.dtype) -> np.ndarray:
    """Map each possible ground-truth value to its row; ignored and out-of-range values to ``C``."""
    size = 256 if dtype == np.uint8 else 65536
    lut = np.full(size, num_classes, dtype=np.int32)
    lut[:num_classes] = np.arange(num_classes, dtype=np.int32)
    if ignore_index is not None and 0 <= ignore_index < size:
        lut[ignore_index] = num_classes
    return lut


def stratified_confusion(
    gt: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    *,
    ignore_index: int | None = None,
    strata: np.ndarray | None = None,
    n_strata: int = 1,
) -> np.ndarray:
    """Confusion matrices of several pixel strata in one ``bincount``.

    Args:
        gt: ``HxW`` uint8/uint16 ground-truth class map.
        pred: ``HxW`` uint8/uint16 predicted class map, values in ``0..C-1``.
        num_classes: ``C``.
        ignore_index: pixels with this ground truth are not counted.
        strata: ``HxW`` integer (or bool) stratum of each pixel in ``0..n_strata-1``
            (e.g. 1 = near a boundary); ``None``: one stratum.
        n_strata: number of strata.

    Returns:
        ``n_strata x C x C`` int64 counts, rows = ground truth, columns = prediction.
    """
    c = num_classes
    rows = _row_lut(c, ignore_index, gt.dtype)[gt]  # ignored pixels land in the dropped row C
    key = rows * c + pred
    if strata is not None:
        key += strata.astype(np.int32) * ((c + 1) * c)
    counts = np.bincount(key.ravel(), minlength=n_strata * (c + 1) * c)
    return counts.reshape(n_strata, c + 1, c)[:, :c, :].astype(np.int64)


def confusion_matrix(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, *, ignore_index: int | None = None
) -> np.ndarray:
    """``CxC`` int64 confusion matrix (rows = ground truth) of one image, ignored pixels left out.

    Example:
        >>> confusion_matrix(np.array([[0, 1]], np.uint8), np.array([[1, 1]], np.uint8), 2)
        array([[0, 1],
               [0, 1]])
    """
    return stratified_confusion(gt, pred, num_classes, ignore_index=ignore_index)[0]


def multilabel_counts(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-class ``[tp, fp, fn, tn]`` of a multilabel image.

    Args:
        gt: ``CxHxW`` bool ground truth.
        pred: ``CxHxW`` bool prediction.

    Returns:
        ``Cx4`` int64 counts.
    """
    c = gt.shape[0]
    n = gt.shape[1] * gt.shape[2]
    out = np.zeros((c, 4), dtype=np.int64)
    both = np.empty(gt.shape[1:], dtype=bool)
    # class by class: count_nonzero over a whole CxHxW array along axes is several times slower
    for k in range(c):
        g, p = gt[k], pred[k]
        np.logical_and(g, p, out=both)
        tp, n_gt, n_pred = np.count_nonzero(both), np.count_nonzero(g), np.count_nonzero(p)
        out[k] = (tp, n_pred - tp, n_gt - tp, n - n_gt - n_pred + tp)
    return out


def normalize_rows(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the share of a ground-truth class's pixels per prediction).

    Rows of classes absent from the ground truth stay zero.
    """
    sums = cm.sum(axis=1, keepdims=True).astype(np.float64)
    out = np.zeros(cm.shape, dtype=np.float64)
    np.divide(cm, sums, out=out, where=sums != 0)
    return out
