"""Two predictions of the same images side by side (two runs, or a run and an ensemble).

A pixel is **right** for a prediction when it equals the ground truth (multiclass), or when every
class's decision equals the ground truth (multilabel, per pixel; per class the class's decision).
Multiclass per-class counts group pixels by their ground-truth class; ignored pixels are left out.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from segcore.analysis._confusion import (
    _row_lut,
    class_scores,
    confusion_matrix,
    confusion_tp_fp_fn,
    multilabel_counts,
)
from segcore.analysis._inputs import as_ground_truth, as_prediction, as_task
from segcore.analysis._pipeline import ProbabilitySource
from segcore.config import TaskType
from segcore.errors import ConfigError, DatasetError, EnsembleError, SegcoreError, StoreError

__all__ = [
    "ComparisonKind",
    "COMPARISON_LEGEND",
    "ClassComparison",
    "ImageComparison",
    "ComparisonReport",
    "comparison_codes",
    "compare",
    "compare_stores",
]


class ComparisonKind(enum.IntEnum):
    """Per-pixel code of a comparison map (see :func:`comparison_codes`)."""

    SAME = 0  # both right, or ignored / not shown
    A_RIGHT_B_WRONG = 1
    B_RIGHT_A_WRONG = 2
    BOTH_WRONG = 3


#: Colours of the comparison map (Okabe-Ito, colour-blind-safe): code, label, RGB.
COMPARISON_LEGEND: tuple[tuple[ComparisonKind, str, tuple[int, int, int]], ...] = (
    (ComparisonKind.A_RIGHT_B_WRONG, "A right, B wrong", (86, 180, 233)),
    (ComparisonKind.B_RIGHT_A_WRONG, "B right, A wrong", (230, 159, 0)),
    (ComparisonKind.BOTH_WRONG, "both wrong", (204, 121, 167)),
)


class ClassComparison(BaseModel):
    """Pixels of one class where A and B differ in being right, and each one's pooled IoU.

    ``pixels`` is the class's ground-truth pixels (multiclass) or every counted pixel (multilabel).
    """

    model_config = ConfigDict(extra="forbid")

    class_index: int
    name: str
    pixels: int
    a_right_b_wrong: int
    b_right_a_wrong: int
    both_wrong: int
    iou_a: float | None
    iou_b: float | None


class ImageComparison(BaseModel):
    """Per-image counts and mean IoU of A and B."""

    model_config = ConfigDict(extra="forbid")

    image_id: str
    n_pixels: int
    a_right_b_wrong: int
    b_right_a_wrong: int
    both_wrong: int
    mean_iou_a: float | None
    mean_iou_b: float | None


class ComparisonReport(BaseModel):
    """The comparison of prediction ``a`` with prediction ``b``."""

    model_config = ConfigDict(extra="forbid")

    task: TaskType
    names: tuple[str, str]
    classes: list[ClassComparison]
    images: list[ImageComparison]
    a_right_b_wrong: int
    b_right_a_wrong: int
    both_wrong: int

    def top_images(self, k: int = 10, *, better: Literal["a", "b"] = "b") -> list[ImageComparison]:
        """The ``k`` images where ``better`` gains most pixels over the other (net), best first."""
        sign = 1 if better == "a" else -1
        ranked = sorted(
            self.images,
            key=lambda im: (-sign * (im.a_right_b_wrong - im.b_right_a_wrong), im.image_id),
        )
        return ranked[:k]


def comparison_codes(
    gt: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    *,
    task: TaskType | str,
    num_classes: int,
    ignore_index: int | None = 255,
    show: np.ndarray | None = None,
) -> np.ndarray:
    """Per-pixel :class:`ComparisonKind` of two canonical predictions.

    Args:
        gt: multiclass ``HxW`` integer map; multilabel ``CxHxW`` bool.
        pred_a: like ``gt`` (class map / bool mask).
        pred_b: like ``gt``.
        task: multiclass or multilabel.
        num_classes: ``C``.
        ignore_index: multiclass value of unlabelled pixels (code ``SAME``).
        show: optional ``C`` bool; multiclass: only pixels whose ground truth or either prediction
            is a shown class are coded; multilabel: only the shown classes are judged.

    Returns:
        ``HxW`` uint8 codes.
    """
    task = TaskType(task)
    if task is TaskType.MULTILABEL:
        if show is not None:
            idx = np.flatnonzero(np.asarray(show, dtype=bool))
            gt, pred_a, pred_b = gt[idx], pred_a[idx], pred_b[idx]
        a_wrong = np.any(pred_a != gt, axis=0)
        b_wrong = np.any(pred_b != gt, axis=0)
    else:
        a_wrong = pred_a != gt
        b_wrong = pred_b != gt
    codes = b_wrong.view(np.uint8) + 2 * a_wrong.view(np.uint8)
    if task is TaskType.MULTICLASS:
        if ignore_index is not None:
            codes[gt == ignore_index] = 0
        if show is not None:
            shown = np.zeros(256 if gt.dtype == np.uint8 else 65536, dtype=bool)
            shown[:num_classes] = np.asarray(show, dtype=bool)
            keep = shown[gt] | shown[pred_a] | shown[pred_b]
            codes[~keep] = 0
    return codes


def _image_counts(codes: np.ndarray, n_pixels: int) -> dict[str, int]:
    n = np.bincount(codes.ravel(), minlength=4)
    return {
        "n_pixels": n_pixels,
        "a_right_b_wrong": int(n[1]),
        "b_right_a_wrong": int(n[2]),
        "both_wrong": int(n[3]),
    }


def _mean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def compare(
    samples: Iterable[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    *,
    task: TaskType | str,
    classes: Sequence[str],
    ignore_index: int | None = 255,
    threshold: float = 0.5,
    names: tuple[str, str] = ("A", "B"),
) -> ComparisonReport:
    """Compare two predictions of the same images in one streaming pass.

    Args:
        samples: ``(image_id, prediction_a, prediction_b, ground_truth)``; predictions as in
            :func:`~segcore.analysis.analyze` (probabilities or class maps / masks).
        task: ``"multiclass"`` or ``"multilabel"``.
        classes: ``C`` class names.
        ignore_index: multiclass value of unlabelled pixels (left out).
        threshold: multilabel decision threshold.
        names: display names of A and B.

    Returns:
        The :class:`ComparisonReport`; ``images`` in input order.

    Raises:
        EnsembleError: A, B and the ground truth of an image differ in size.
    """
    task = as_task(task)
    c = len(classes)
    if c == 0:
        raise ConfigError("classes is empty; pass the dataset's class names in index order")
    if task is TaskType.MULTILABEL:
        ignore_index = None
    per_class = np.zeros((c, 4), dtype=np.int64)  # pixels, a only, b only, both wrong
    stats_a = stats_b = None
    images: list[ImageComparison] = []
    for image_id, pa, pb, g in samples:
        gt = as_ground_truth(g, task=task, num_classes=c, ignore_index=ignore_index)
        a = as_prediction(pa, task=task, num_classes=c, threshold=threshold).labels
        b = as_prediction(pb, task=task, num_classes=c, threshold=threshold).labels
        if a.shape != gt.shape or b.shape != gt.shape:
            raise EnsembleError(
                f"image {image_id!r}: A is {a.shape[-2:]}, B is {b.shape[-2:]}, ground truth "
                f"{gt.shape[-2:]}; compare predictions made at the same resolution"
            )
        codes = comparison_codes(gt, a, b, task=task, num_classes=c, ignore_index=ignore_index)
        if task is TaskType.MULTICLASS:
            rows = _row_lut(c, ignore_index, gt.dtype)[gt]
            cnt = np.bincount((rows * 4 + codes).ravel(), minlength=(c + 1) * 4)
            per_class += cnt.reshape(c + 1, 4)[:c]
            sa = confusion_matrix(gt, a, c, ignore_index=ignore_index)
            sb = confusion_matrix(gt, b, c, ignore_index=ignore_index)
            n_pixels = int(sa.sum())
            ta, tb = confusion_tp_fp_fn(sa), confusion_tp_fp_fn(sb)
        else:
            a_ok = a == gt
            b_ok = b == gt
            per_class[:, 0] += gt.shape[1] * gt.shape[2]
            per_class[:, 1] += np.count_nonzero(a_ok & ~b_ok, axis=(1, 2))
            per_class[:, 2] += np.count_nonzero(~a_ok & b_ok, axis=(1, 2))
            per_class[:, 3] += np.count_nonzero(~a_ok & ~b_ok, axis=(1, 2))
            sa, sb = multilabel_counts(gt, a), multilabel_counts(gt, b)
            n_pixels = int(gt.shape[1] * gt.shape[2])
            ta, tb = (sa[:, 0], sa[:, 1], sa[:, 2]), (sb[:, 0], sb[:, 1], sb[:, 2])
        stats_a = sa if stats_a is None else stats_a + sa
        stats_b = sb if stats_b is None else stats_b + sb
        images.append(
            ImageComparison(
                image_id=str(image_id),
                mean_iou_a=_mean(class_scores(*ta)["iou"]),
                mean_iou_b=_mean(class_scores(*tb)["iou"]),
                **_image_counts(codes, n_pixels),
            )
        )
    if not images or stats_a is None or stats_b is None:  # the statistics are set with the first image
        raise DatasetError("no images to compare; pass at least one sample")
    if task is TaskType.MULTICLASS:
        iou_a = class_scores(*confusion_tp_fp_fn(stats_a))["iou"]
        iou_b = class_scores(*confusion_tp_fp_fn(stats_b))["iou"]
        per_class[:, 0] = stats_a.sum(axis=1)
    else:
        iou_a = class_scores(stats_a[:, 0], stats_a[:, 1], stats_a[:, 2])["iou"]
        iou_b = class_scores(stats_b[:, 0], stats_b[:, 1], stats_b[:, 2])["iou"]
    out = [
        ClassComparison(
            class_index=k,
            name=name,
            pixels=int(per_class[k, 0]),
            a_right_b_wrong=int(per_class[k, 1]),
            b_right_a_wrong=int(per_class[k, 2]),
            both_wrong=int(per_class[k, 3]),
            iou_a=None if np.isnan(iou_a[k]) else float(iou_a[k]),
            iou_b=None if np.isnan(iou_b[k]) else float(iou_b[k]),
        )
        for k, name in enumerate(classes)
    ]
    return ComparisonReport(
        task=task,
        names=names,
        classes=out,
        images=images,
        a_right_b_wrong=sum(im.a_right_b_wrong for im in images),
        b_right_a_wrong=sum(im.b_right_a_wrong for im in images),
        both_wrong=sum(im.both_wrong for im in images),
    )


def compare_stores(
    store_a: ProbabilitySource,
    store_b: ProbabilitySource,
    load_gt: Callable[[str], np.ndarray],
    *,
    ids: Sequence[str] | None = None,
    **kwargs: Any,
) -> ComparisonReport:
    """Compare two probability stores on the images they share.

    Args:
        store_a: ``.ids`` and ``.read(id) -> CxHxW float32`` (e.g. a run's validation store).
        store_b: the same for the other run or ensemble.
        load_gt: image id -> ground truth.
        ids: the images to compare (default: those of ``store_a``; all must be in ``store_b``).
        **kwargs: the keyword arguments of :func:`compare`.

    Raises:
        EnsembleError: an image is missing from ``store_b``.
    """
    ids = list(store_a.ids if ids is None else ids)
    missing = sorted(set(ids) - set(store_b.ids))
    if missing:
        raise EnsembleError(
            f"{len(missing)} images are not in the second store (e.g. {missing[:3]}); compare "
            "predictions of the same validation images, or pass ids= with the shared ones"
        )

    def samples() -> Iterable[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
        for image_id in ids:
            try:
                pa, pb = store_a.read(image_id), store_b.read(image_id)
            except SegcoreError:
                raise
            except (OSError, KeyError, ValueError) as exc:
                raise StoreError(
                    f"cannot read the probabilities of image {image_id!r}: {exc}; check that both "
                    "stores are complete"
                ) from exc
            yield image_id, pa, pb, load_gt(image_id)

    return compare(samples(), **kwargs)
