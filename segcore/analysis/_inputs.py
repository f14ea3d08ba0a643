"""Turning what a caller hands in (probabilities, class maps, masks) into one canonical form.

Multiclass: a prediction is an ``HxW`` integer class map (argmax of ``CxHxW`` probabilities),
the ground truth an ``HxW`` integer map with ``ignore_index`` where unlabelled.
Multilabel: a prediction is a ``CxHxW`` bool mask (probabilities thresholded), the ground truth a
``CxHxW`` {0, 1} mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segcore.config import TaskType
from segcore.errors import ConfigError, DatasetError, StoreError

__all__ = ["Prediction", "as_task", "as_prediction", "as_ground_truth", "label_dtype"]


@dataclass(frozen=True)
class Prediction:
    """A prediction in canonical form.

    Attributes:
        labels: multiclass ``HxW`` class map (uint8 or uint16); multilabel ``CxHxW`` bool.
        confidence: ``HxW`` float32 probability of the predicted class (multiclass) or ``CxHxW``
            float32 class probability (multilabel); ``None`` when only labels were given.
    """

    labels: np.ndarray
    confidence: np.ndarray | None


def as_task(task: TaskType | str) -> TaskType:
    """Return ``task`` as a :class:`TaskType`, raising ``ConfigError`` for unknown names."""
    try:
        return TaskType(task)
    except ValueError as exc:
        valid = ", ".join(t.value for t in TaskType)
        raise ConfigError(f"unknown task {task!r}; use one of: {valid}") from exc


def label_dtype(num_classes: int, ignore_index: int | None) -> type[np.unsignedinteger]:
    """Smallest unsigned dtype that holds every class index and the ignore value."""
    top = max(num_classes - 1, ignore_index if ignore_index is not None else 0)
    return np.uint8 if top <= 255 else np.uint16


def _argmax_channels(probs: np.ndarray, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Argmax and max over the first axis of ``CxHxW`` in one sweep over the channels.

    ``ndarray.argmax(axis=0)`` reduces across strided memory and is several times slower on large
    images; a running maximum keeps every step contiguous. Ties go to the lowest index, as argmax.
    """
    best = probs[0].astype(np.float32, copy=True)
    labels = np.zeros(best.shape, dtype=dtype)
    better = np.empty(best.shape, dtype=bool)
    for k in range(1, probs.shape[0]):
        np.greater(probs[k], best, out=better)
        np.putmask(labels, better, k)
        np.maximum(best, probs[k], out=best)
    return labels, best


def as_prediction(
    pred: np.ndarray, *, task: TaskType, num_classes: int, threshold: float = 0.5
) -> Prediction:
    """Canonicalise a prediction.

    Args:
        pred: ``CxHxW`` float probabilities, or a multiclass ``HxW`` integer class map, or a
            multilabel ``CxHxW`` bool/integer {0, 1} mask.
        task: multiclass or multilabel.
        num_classes: ``C``.
        threshold: multilabel decision threshold on probabilities.

    Returns:
        The :class:`Prediction`.

    Raises:
        StoreError: the array's shape or values do not fit ``num_classes``.
    """
    pred = np.asarray(pred)
    floating = np.issubdtype(pred.dtype, np.floating)
    if task is TaskType.MULTICLASS:
        if pred.ndim == 3 and floating:
            if pred.shape[0] != num_classes:
                raise StoreError(
                    f"probabilities have {pred.shape[0]} channels but {num_classes} classes were "
                    "given; pass the class list the run was trained with"
                )
            labels, conf = _argmax_channels(pred, label_dtype(num_classes, None))
            return Prediction(labels, conf)
        if pred.ndim == 2 and not floating:
            if pred.size and int(pred.max()) >= num_classes:
                raise StoreError(
                    f"class map holds index {int(pred.max())} but only {num_classes} classes were "
                    "given; pass the full class list"
                )
            if pred.size and np.issubdtype(pred.dtype, np.signedinteger) and int(pred.min()) < 0:
                raise StoreError("class map holds negative indices; pass class indices 0..C-1")
            return Prediction(pred.astype(label_dtype(num_classes, None), copy=False), None)
        raise StoreError(
            f"multiclass prediction must be CxHxW float probabilities or an HxW integer class map, "
            f"got shape {pred.shape} dtype {pred.dtype}"
        )
    if pred.ndim != 3 or pred.shape[0] != num_classes:
        raise StoreError(
            f"multilabel prediction must be {num_classes}xHxW (one channel per class), got shape "
            f"{pred.shape}; pass the class list the run was trained with"
        )
    if floating:
        return Prediction(pred >= threshold, pred.astype(np.float32, copy=False))
    return Prediction(pred.astype(bool, copy=False), None)


def as_ground_truth(
    gt: np.ndarray, *, task: TaskType, num_classes: int, ignore_index: int | None
) -> np.ndarray:
    """Canonicalise a ground truth.

    Args:
        gt: multiclass ``HxW`` integer map; multilabel ``CxHxW`` {0, 1} mask.
        task: multiclass or multilabel.
        num_classes: ``C``.
        ignore_index: multiclass value of unlabelled pixels (``None``: none).

    Returns:
        Multiclass ``HxW`` uint8/uint16 map; multilabel ``CxHxW`` bool mask.

    Raises:
        DatasetError: the mask's shape or values do not fit the classes.
    """
    gt = np.asarray(gt)
    if task is TaskType.MULTILABEL:
        if gt.ndim != 3 or gt.shape[0] != num_classes:
            raise DatasetError(
                f"multilabel ground truth must be {num_classes}xHxW, got shape {gt.shape}; "
                "load it with the dataset's load_mask"
            )
        return gt.astype(bool, copy=False)
    if gt.ndim != 2 or np.issubdtype(gt.dtype, np.floating):
        raise DatasetError(
            f"multiclass ground truth must be an HxW integer class map, got shape {gt.shape} "
            f"dtype {gt.dtype}"
        )
    if gt.size:
        bad = (gt >= num_classes) if ignore_index is None else (gt >= num_classes) & (gt != ignore_index)
        if np.issubdtype(gt.dtype, np.signedinteger):
            bad |= gt < 0
        if bad.any():
            values = np.unique(gt[bad])[:5].tolist()
            raise DatasetError(
                f"ground truth holds values {values} outside 0..{num_classes - 1}"
                + (f" and ignore_index {ignore_index}" if ignore_index is not None else "")
                + "; pass the full class list or the dataset's ignore_index"
            )
    return gt.astype(label_dtype(num_classes, ignore_index), copy=False)
