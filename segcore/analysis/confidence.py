"""Confidence histograms of correct and wrong pixels.

Multiclass: pixels are grouped by their **predicted** class ``c``; the confidence is the predicted
(maximum) probability, and a pixel is correct when its ground truth is ``c``. Multilabel: for each
class ``c`` every pixel is counted with the class probability ``p_c``; it is correct when the
thresholded decision ``p_c >= threshold`` equals the ground truth. Histograms have ``n_bins``
equal bins on ``[0, 1]`` (a probability of exactly 1 falls in the last bin); the means are exact,
not taken from the bins. Ignored pixels are left out. Only probabilities give confidences: class
maps carry none, and the report's ``confidence`` is ``None`` unless every image came with
probabilities.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict

from segcore.config import TaskType
from segcore.errors import ConfigError

__all__ = [
    "ClassConfidence",
    "ConfidenceAnalysis",
    "multiclass_confidence_counts",
    "multilabel_confidence_counts",
    "confidence_report",
]


class ClassConfidence(BaseModel):
    """Histogram counts of one class's correct and wrong pixels, and their mean confidence."""

    model_config = ConfigDict(extra="forbid")

    class_index: int
    name: str
    correct: list[int]
    wrong: list[int]
    mean_correct: float | None
    mean_wrong: float | None


class ConfidenceAnalysis(BaseModel):
    """Per-class confidence histograms; ``grouping`` says which pixels a class's histogram holds."""

    model_config = ConfigDict(extra="forbid")

    grouping: str
    bin_edges: list[float]
    classes: list[ClassConfidence]


def _bins(conf: np.ndarray, n_bins: int) -> np.ndarray:
    if n_bins < 1:
        raise ConfigError(f"confidence_bins must be at least 1, got {n_bins}")
    idx = (conf * np.float32(n_bins)).astype(np.int32)
    np.clip(idx, 0, n_bins - 1, out=idx)
    return idx


def multiclass_confidence_counts(
    conf: np.ndarray,
    pred: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    *,
    ignore_index: int | None,
    n_bins: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Histogram counts and confidence sums of one multiclass image.

    Args:
        conf: ``HxW`` float32 probability of the predicted class.
        pred: ``HxW`` predicted class map.
        gt: ``HxW`` ground truth.
        num_classes: ``C``.
        ignore_index: ground-truth value left out.
        n_bins: number of bins.

    Returns:
        ``(counts, sums)``: ``Cx2xB`` int64 counts and ``Cx2`` float64 confidence sums, index 0 of
        the second axis = correct, 1 = wrong.
    """
    c = num_classes
    group = pred.astype(np.int32) * 2 + (pred != gt)
    if ignore_index is not None:
        group[gt == ignore_index] = 2 * c  # a dropped slot
    key = group * n_bins + _bins(conf, n_bins)
    counts = np.bincount(key.ravel(), minlength=(2 * c + 1) * n_bins)[: 2 * c * n_bins]
    sums = np.bincount(group.ravel(), weights=conf.ravel(), minlength=2 * c + 1)[: 2 * c]
    return counts.reshape(c, 2, n_bins).astype(np.int64), sums.reshape(c, 2)


def multilabel_confidence_counts(
    prob: np.ndarray, pred: np.ndarray, gt: np.ndarray, *, n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Histogram counts and probability sums of one multilabel image.

    Args:
        prob: ``CxHxW`` float32 class probabilities.
        pred: ``CxHxW`` bool thresholded decisions.
        gt: ``CxHxW`` bool ground truth.
        n_bins: number of bins.

    Returns:
        ``(counts, sums)`` as in :func:`multiclass_confidence_counts`.
    """
    c = prob.shape[0]
    counts = np.zeros((c, 2, n_bins), dtype=np.int64)
    sums = np.zeros((c, 2), dtype=np.float64)
    if 2 * n_bins > 256 or prob[0].size >= 2**24:
        # beyond uint8 keys or float32-exact histogram counts: the general path
        for k in range(c):
            wrong = pred[k] != gt[k]
            key = _bins(prob[k], n_bins) + wrong * n_bins
            counts[k] = np.bincount(key.ravel(), minlength=2 * n_bins).reshape(2, n_bins)
            s_wrong = float(prob[k][wrong].sum(dtype=np.float64))
            sums[k] = (float(prob[k].sum(dtype=np.float64)) - s_wrong, s_wrong)
        return counts, sums
    # one class at a time with uint8 keys and OpenCV reductions: 2048x2048 x 29 classes stays fast
    scaled = np.empty(prob.shape[1:], dtype=np.float32)
    key = np.empty(prob.shape[1:], dtype=np.uint8)
    wrong = np.empty(prob.shape[1:], dtype=bool)
    offset = np.empty(prob.shape[1:], dtype=np.uint8)
    for k in range(c):
        pk = np.ascontiguousarray(prob[k], dtype=np.float32)
        np.multiply(pk, np.float32(n_bins), out=scaled)
        np.clip(scaled, 0, n_bins - 1, out=scaled)
        key[...] = scaled  # truncation = floor for non-negative values
        np.not_equal(pred[k], gt[k], out=wrong)
        np.multiply(wrong.view(np.uint8), np.uint8(n_bins), out=offset)
        key += offset
        hist = cv2.calcHist([key], [0], None, [2 * n_bins], [0, 2 * n_bins])
        counts[k] = np.rint(hist.ravel()).astype(np.int64).reshape(2, n_bins)
        s_wrong = cv2.sumElems(cv2.copyTo(pk, wrong.view(np.uint8)))[0]
        sums[k] = (cv2.sumElems(pk)[0] - s_wrong, s_wrong)
    return counts, sums


def confidence_report(
    counts: np.ndarray, sums: np.ndarray, classes: list[str], *, task: TaskType
) -> ConfidenceAnalysis:
    """Build the :class:`ConfidenceAnalysis` from accumulated counts and sums."""
    n_bins = counts.shape[2]
    totals = counts.sum(axis=2)
    out = []
    for k, name in enumerate(classes):
        means = [float(sums[k, j] / totals[k, j]) if totals[k, j] else None for j in (0, 1)]
        out.append(
            ClassConfidence(
                class_index=k,
                name=name,
                correct=counts[k, 0].tolist(),
                wrong=counts[k, 1].tolist(),
                mean_correct=means[0],
                mean_wrong=means[1],
            )
        )
    grouping = (
        "pixels predicted as the class; confidence = predicted (max) probability"
        if task is TaskType.MULTICLASS
        else "every pixel; confidence = the class probability; correct = the thresholded "
        "decision equals the ground truth"
    )
    return ConfidenceAnalysis(
        grouping=grouping, bin_edges=np.linspace(0.0, 1.0, n_bins + 1).round(10).tolist(), classes=out
    )
