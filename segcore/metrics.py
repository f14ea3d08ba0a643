"""Exact segmentation metrics: a dataset-level confusion matrix plus per-image scores.

The math lives in pure functions (:func:`confusion_matrix`, :func:`scores_from_confusion`,
:func:`scores_from_counts`) that inspection and ensembling code reuse on stored probabilities;
:class:`MetricAccumulator` feeds them batch by batch during validation, on the batch's device,
without a host sync per batch.

Definitions (see ``docs/metrics.md``), for class ``c`` with TP, FP, FN counted over pixels:

- ``IoU_c = TP / (TP + FP + FN)``, ``Dice_c = 2 TP / (2 TP + FP + FN)``,
  ``precision_c = TP / (TP + FP)``, ``recall_c = TP / (TP + FN)``, ``support_c = TP + FN``.
- A class absent from both ground truth and prediction has no IoU/Dice (``NaN`` in tensors,
  ``None`` in :meth:`MetricAccumulator.compute`) and is left out of the mean, over the dataset
  and within each image. A class predicted but absent from the ground truth has IoU 0.
- ``miou``/``dice``: one confusion matrix over all validation pixels, then the mean over classes.
  ``miou_per_image``/``dice_per_image``: the mean over classes within each image, then the mean
  over images. Never a mean of per-batch means: that depends on the batch size.
- Multiclass pixels labelled ``ignore_index`` are not counted (whatever is predicted there).
- Multilabel: each class is a binary problem at ``threshold`` (``sigmoid(logit) >= threshold``).

Example:
    >>> acc = MetricAccumulator(TaskType.MULTICLASS, num_classes=3)
    >>> for images, masks in loader:
    ...     acc.update(model(images), masks)
    >>> acc.compute()["miou"]
    0.71...
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch

from segcore.config import TaskType
from segcore.errors import TrainingError

__all__ = [
    "METRIC_KEYS",
    "MetricAccumulator",
    "confusion_matrix",
    "scores_from_confusion",
    "scores_from_counts",
    "plugin_metrics",
]

#: The scalar keys of :meth:`MetricAccumulator.compute` (``"per_class"`` holds the rest).
METRIC_KEYS = ("miou", "miou_per_image", "dice", "dice_per_image", "pixel_accuracy")


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = 255
) -> torch.Tensor:
    """Pixel confusion matrix by ``torch.bincount``, on the inputs' device.

    Args:
        pred: predicted class indices in ``0..C-1``, any shape (e.g. ``[N, H, W]``), integer.
        target: ground-truth class indices, same shape as ``pred``, integer.
        num_classes: ``C``.
        ignore_index: target value whose pixels are not counted (``None``: count every pixel).
            Target values outside ``0..C-1`` are not counted either.

    Returns:
        ``[C, C]`` int64; ``cm[t, p]`` counts pixels of true class ``t`` predicted as ``p``
        (rows: ground truth, columns: prediction).

    Raises:
        ValueError: shapes differ or a predicted index is outside ``0..C-1``.

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 2)
        tensor([[1, 1],
                [0, 1]])
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    t = target.reshape(-1).long()
    p = pred.reshape(-1).long()
    if p.numel() and (int(p.min()) < 0 or int(p.max()) >= num_classes):
        raise ValueError(
            f"predicted class indices must lie in 0..{num_classes - 1}, got {int(p.min())}..{int(p.max())}"
        )
    keep = (t >= 0) & (t < num_classes)
    if ignore_index is not None:
        keep &= t != ignore_index
    counts = torch.bincount(t[keep] * num_classes + p[keep], minlength=num_classes * num_classes)
    return counts[: num_classes * num_classes].reshape(num_classes, num_classes)


def _batched_confusion(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None
) -> torch.Tensor:
    """``[N, C, C]``: one confusion matrix per image, with a single bincount."""
    n = target.shape[0]
    t = target.reshape(n, -1).long()
    p = pred.reshape(n, -1).long()
    keep = (t >= 0) & (t < num_classes)
    if ignore_index is not None:
        keep &= t != ignore_index
    image = torch.arange(n, device=t.device).unsqueeze(1).expand_as(t)
    index = (image * num_classes + t) * num_classes + p
    counts = torch.bincount(index[keep], minlength=n * num_classes * num_classes)
    return counts.reshape(n, num_classes, num_classes)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    num, den = num.double(), den.double()
    return torch.where(den > 0, num / den.clamp_min(1), torch.full_like(den, math.nan))


def scores_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-class scores from pixel counts.

    Args:
        tp, fp, fn: ``[..., C]`` counts (any leading batch dimensions).

    Returns:
        ``iou``, ``dice``, ``precision``, ``recall`` (float64, ``NaN`` where undefined: IoU and
        Dice when the class is absent from both ground truth and prediction, precision when it
        is never predicted, recall when it is absent from the ground truth) and ``support``
        (``TP + FN``, int64), each ``[..., C]``.
    """
    union = tp + fp + fn
    return {
        "iou": _ratio(tp, union),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "support": (tp + fn).long(),
    }


def scores_from_confusion(cm: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-class scores from a confusion matrix (rows: ground truth, columns: prediction).

    Args:
        cm: ``[..., C, C]`` counts, e.g. from :func:`confusion_matrix`; a NumPy array works too.

    Returns:
        See :func:`scores_from_counts`; each value is ``[..., C]``.

    Example:
        >>> s = scores_from_confusion(torch.tensor([[3, 1], [0, 4]]))
        >>> s["iou"]
        tensor([0.7500, 0.8000], dtype=torch.float64)
    """
    cm = torch.as_tensor(cm)
    tp = torch.diagonal(cm, dim1=-2, dim2=-1)
    fp = cm.sum(-2) - tp
    fn = cm.sum(-1) - tp
    return scores_from_counts(tp, fp, fn)


def _nanmean_or_nan(x: torch.Tensor) -> torch.Tensor:
    """Mean over the last dimension ignoring NaN; NaN where every entry is NaN (no warning)."""
    valid = ~torch.isnan(x)
    count = valid.sum(-1)
    total = torch.where(valid, x, torch.zeros_like(x)).sum(-1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))


def _json(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


@dataclass
class _Counts:
    """The running sums of a :class:`MetricAccumulator`, on its device."""

    tp: torch.Tensor  # [C] dataset counts
    fp: torch.Tensor
    fn: torch.Tensor
    cm: torch.Tensor | None  # [C, C] multiclass only
    pixels: torch.Tensor  # scored pixel (x class, multilabel) count
    correct: torch.Tensor
    image_iou_sum: torch.Tensor
    image_dice_sum: torch.Tensor
    image_count: torch.Tensor

    @classmethod
    def zeros(cls, task: TaskType, num_classes: int, device: torch.device) -> _Counts:
        def z(*shape: Any, dtype: torch.dtype = torch.long) -> torch.Tensor:
            return torch.zeros(*shape, dtype=dtype, device=device)

        c = num_classes
        return cls(
            tp=z(c), fp=z(c), fn=z(c),
            cm=z(c, c) if task is TaskType.MULTICLASS else None,
            pixels=z(()), correct=z(()),
            image_iou_sum=z((), dtype=torch.float64),
            image_dice_sum=z((), dtype=torch.float64),
            image_count=z(()),
        )


class MetricAccumulator:
    """Accumulates exact validation metrics over batches.

    Args:
        task: multiclass (argmax over classes) or multilabel (per-class threshold).
        num_classes: ``C``.
        ignore_index: multiclass target value that is not scored.
        threshold: multilabel probability threshold; a pixel is positive when ``p >= threshold``.
        device: where counts live; ``None`` uses the device of the first batch.

    Example:
        >>> acc = MetricAccumulator(TaskType.MULTILABEL, num_classes=2, threshold=0.5)
        >>> acc.update(logits, masks)          # logits [N, 2, H, W], masks [N, 2, H, W] in {0, 1}
        >>> acc.compute()["dice"]
    """

    def __init__(
        self,
        task: TaskType | str,
        num_classes: int,
        ignore_index: int = 255,
        threshold: float = 0.5,
        device: torch.device | str | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.task = TaskType(task)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.threshold = threshold
        self.device = None if device is None else torch.device(device)
        self.reset()

    def reset(self) -> None:
        """Forget every update."""
        self._counts: _Counts | None = None  # created on the first update, on its device
        self.num_images = 0

    def _zeros(self, device: torch.device) -> _Counts:
        self._counts = _Counts.zeros(self.task, self.num_classes, device)
        return self._counts

    @torch.no_grad()
    def update(self, logits_or_probs: torch.Tensor, target: torch.Tensor, *, is_probs: bool = False) -> None:
        """Add one batch.

        Args:
            logits_or_probs: ``[N, C, H, W]`` logits (or probabilities with ``is_probs=True``).
            target: multiclass ``[N, H, W]`` class indices with ``ignore_index`` where unlabelled;
                multilabel ``[N, C, H, W]`` in ``{0, 1}``.
            is_probs: the scores are probabilities (softmax / sigmoid already applied).
        """
        scores = logits_or_probs
        if scores.ndim != 4 or scores.shape[1] != self.num_classes:
            raise ValueError(f"expected scores [N, {self.num_classes}, H, W], got {tuple(scores.shape)}")
        n, c, h, w = scores.shape
        if self.device is None:
            self.device = scores.device
        k = self._counts if self._counts is not None else self._zeros(self.device)
        scores = scores.to(self.device)
        target = target.to(self.device)
        if self.task is TaskType.MULTICLASS:
            if target.shape != (n, h, w):
                raise ValueError(f"expected a multiclass target [N, H, W] = {(n, h, w)}, got {tuple(target.shape)}")
            pred = scores.argmax(1)  # softmax is monotonic: same for logits and probabilities
            per_image = _batched_confusion(pred, target, c, self.ignore_index)  # [N, C, C]
            cm = per_image.sum(0)
            assert k.cm is not None  # a multiclass accumulator always has its confusion matrix
            k.cm += cm
            stats = scores_from_confusion(per_image)
            tp = torch.diagonal(cm)
            k.tp += tp
            k.fp += cm.sum(0) - tp
            k.fn += cm.sum(1) - tp
            k.pixels += cm.sum()
            k.correct += tp.sum()
        else:
            if target.shape != scores.shape:
                raise ValueError(
                    f"expected a multilabel target [N, C, H, W] = {(n, c, h, w)}, got {tuple(target.shape)}"
                )
            probs = scores.float() if is_probs else torch.sigmoid(scores.float())
            pred = probs >= self.threshold
            truth = target > 0.5
            tp_i = (pred & truth).sum((2, 3))  # [N, C]
            fp_i = (pred & ~truth).sum((2, 3))
            fn_i = (~pred & truth).sum((2, 3))
            k.tp += tp_i.sum(0)
            k.fp += fp_i.sum(0)
            k.fn += fn_i.sum(0)
            k.pixels += pred.numel()
            k.correct += (pred == truth).sum()
            stats = scores_from_counts(tp_i, fp_i, fn_i)
        image_iou = _nanmean_or_nan(stats["iou"])  # [N]; NaN for an image with nothing to score
        image_dice = _nanmean_or_nan(stats["dice"])
        scored = ~torch.isnan(image_iou)
        k.image_iou_sum += torch.where(scored, image_iou, 0.0).sum()
        k.image_dice_sum += torch.where(scored, image_dice, 0.0).sum()
        k.image_count += scored.sum()
        self.num_images += n

    def all_reduce(self, group: Any = None) -> None:
        """Sum the counts of every rank of a ``torch.distributed`` group into each rank.

        Every rank must call it, also one that scored no image. Counts are exact integers, so the
        result equals one process scoring every image once.
        """
        import torch.distributed as dist

        k = self._counts if self._counts is not None else self._zeros(self.device or torch.device("cpu"))
        for f in fields(k):  # in declaration order, the same on every rank
            t = getattr(k, f.name)
            if t is not None:
                dist.all_reduce(t, group=group)
        n = torch.tensor([self.num_images], dtype=torch.long, device=k.tp.device)
        dist.all_reduce(n, group=group)
        self.num_images = int(n)

    @property
    def confusion(self) -> torch.Tensor:
        """The dataset confusion matrix ``[C, C]`` (multiclass; rows ground truth)."""
        if self.task is not TaskType.MULTICLASS:
            raise ValueError("a multilabel accumulator has per-class counts, not a confusion matrix")
        if self._counts is None or self._counts.cm is None:
            return torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        return self._counts.cm.clone()

    def counts(self) -> tuple[list[int], list[int], list[int]]:
        """Dataset-level per-class ``(tp, fp, fn)`` pixel counts so far, as plain lists of ``C`` ints."""
        if self._counts is None:
            return [0] * self.num_classes, [0] * self.num_classes, [0] * self.num_classes
        k = self._counts
        return [int(v) for v in k.tp.tolist()], [int(v) for v in k.fp.tolist()], [int(v) for v in k.fn.tolist()]

    def compute(self) -> dict[str, Any]:
        """The metrics so far, as JSON-ready data.

        Returns:
            ``miou``, ``miou_per_image``, ``dice``, ``dice_per_image``, ``pixel_accuracy`` (float,
            or None when undefined, e.g. before any labelled pixel) and ``per_class`` =
            ``{"iou", "dice", "precision", "recall": [float | None] * C, "support": [int] * C}``.
        """
        k = self._counts
        if k is None:
            empty: list[Any] = [None] * self.num_classes
            return {
                **{k: None for k in METRIC_KEYS},
                "per_class": {"iou": empty, "dice": empty, "precision": empty, "recall": empty,
                              "support": [0] * self.num_classes},
            }
        s = scores_from_counts(k.tp, k.fp, k.fn)
        count = int(k.image_count)
        pixels = int(k.pixels)
        return {
            "miou": _json(float(_nanmean_or_nan(s["iou"]))),
            "miou_per_image": float(k.image_iou_sum) / count if count else None,
            "dice": _json(float(_nanmean_or_nan(s["dice"]))),
            "dice_per_image": float(k.image_dice_sum) / count if count else None,
            "pixel_accuracy": int(k.correct) / pixels if pixels else None,
            "per_class": {
                "iou": [_json(v) for v in s["iou"].tolist()],
                "dice": [_json(v) for v in s["dice"].tolist()],
                "precision": [_json(v) for v in s["precision"].tolist()],
                "recall": [_json(v) for v in s["recall"].tolist()],
                "support": [int(v) for v in s["support"].tolist()],
            },
        }


def plugin_metrics(acc: MetricAccumulator) -> dict[str, float | None]:
    """The installed plugins' metrics (entry-point group ``segboard.metrics``) of ``acc``'s counts.

    A metric plugin is ``metric(*, tp, fp, fn) -> float | None`` over per-class pixel counts (lists of
    ``C`` ints); it is maximised when it is the monitored metric. None (or NaN) means undefined.

    Raises:
        TrainingError: a plugin metric raised; the message names it and its package.
    """
    from segcore import plugins

    found = plugins.items("metrics")
    if not found:
        return {}
    tp, fp, fn = acc.counts()
    out: dict[str, float | None] = {}
    for name, item in found.items():
        try:
            value = item.obj(tp=list(tp), fp=list(fp), fn=list(fn))
        except Exception as exc:  # a plugin's own bug: stop the run and name the plugin
            raise TrainingError(f"plugin metric {item.source} failed: {type(exc).__name__}: {exc}") from exc
        out[name] = None if value is None or not math.isfinite(float(value)) else float(value)
    return out
