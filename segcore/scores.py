"""Per-class scores from pixel counts, in numpy (no torch): the one definition the probability-store
consumers use (ensembles, weight search, out-of-fold scoring, error analysis).

A class whose denominator is zero (absent from both the ground truth and the prediction) scores
NaN and is left out of the mean, the rule of ``docs/metrics.md``; :mod:`segcore.metrics` is the
torch counterpart used while training.

Example:
    >>> cm = confusion([0, 1, 1], [0, 1, 0], num_classes=3)   # predictions, ground truth
    >>> s = class_scores(*confusion_tp_fp_fn(cm))
    >>> round(nan_mean(s["iou"]), 3)   # class 2 is absent everywhere: not counted
    0.5
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["confusion", "confusion_tp_fp_fn", "safe_div", "class_scores", "nan_mean"]


def confusion(pred: Any, target: Any, num_classes: int) -> np.ndarray:
    """``C x C`` int64 confusion (rows: ground truth, columns: prediction) of 1-D label arrays.

    Both must hold valid class indices only (drop ignored pixels first).
    """
    idx = np.asarray(target).astype(np.int64) * num_classes + np.asarray(pred).astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def confusion_tp_fp_fn(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class tp, fp, fn of a ``CxC`` confusion matrix (rows = ground truth)."""
    tp = np.diag(cm)
    return tp, cm.sum(axis=0) - tp, cm.sum(axis=1) - tp


def safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` as float64 with NaN where ``den == 0``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def class_scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """IoU, Dice, precision and recall per class (NaN where undefined: the class is absent).

    Args:
        tp: ``C`` true-positive pixel counts.
        fp: ``C`` false-positive pixel counts.
        fn: ``C`` false-negative pixel counts.

    Returns:
        ``{"iou", "dice", "precision", "recall"}``, each a ``C`` float64 array.
    """
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    return {
        "iou": safe_div(tp, tp + fp + fn),
        "dice": safe_div(2 * tp, 2 * tp + fp + fn),
        "precision": safe_div(tp, tp + fp),
        "recall": safe_div(tp, tp + fn),
    }


def nan_mean(values: np.ndarray) -> float:
    """Mean of the defined (non-NaN) values; NaN when none is defined."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else math.nan
