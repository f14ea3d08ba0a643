"""Error taxonomy: under-prediction, over-prediction and wrong class.

Multiclass, with a background class ``b``, every wrongly predicted pixel is exactly one of:

- **under-prediction** of class ``c``: ground truth ``c`` (foreground), predicted ``b``;
- **over-prediction** of class ``c``: ground truth ``b``, predicted ``c`` (foreground);
- **wrong class** of class ``c``: ground truth ``c`` (foreground), predicted another foreground class.

Each error is attributed to one class (the ground-truth class, or the predicted class for an
over-prediction), so the per-class counts add up to the total number of wrong pixels. Without a
background class (``background=None``) under- and over-prediction are undefined and every error is
a wrong class of its ground-truth class. Multilabel tasks have per-class false negatives (the class
is missed) and false positives (the class is predicted where it is absent).
"""

from __future__ import annotations

import enum

import numpy as np
from pydantic import BaseModel, ConfigDict

from segcore.analysis._confusion import confusion_tp_fp_fn
from segcore.config import TaskType

__all__ = [
    "ErrorKind",
    "ERROR_KINDS",
    "ClassErrors",
    "ErrorTaxonomy",
    "multiclass_taxonomy_counts",
    "taxonomy_from_confusion",
    "taxonomy_from_multilabel",
    "error_codes",
]


class ErrorKind(enum.IntEnum):
    """Per-pixel error code of an error map (see :func:`error_codes`)."""

    NONE = 0
    UNDER_PREDICTION = 1
    OVER_PREDICTION = 2
    WRONG_CLASS = 3


#: Names of the three error kinds, as used for the keys of the shares.
ERROR_KINDS = ("under_prediction", "over_prediction", "wrong_class")


class ClassErrors(BaseModel):
    """The errors attributed to one class.

    ``false_negatives`` and ``false_positives`` are always set. Multiclass with a background class
    also sets ``under_prediction``, ``over_prediction``, ``wrong_class`` (whose sum is ``total``)
    and ``confused_into`` (other foreground classes predicted as this one, counted as those
    classes' wrong class). Without a background only ``wrong_class`` is set. Multilabel: ``total``
    is ``false_negatives + false_positives``.
    """

    model_config = ConfigDict(extra="forbid")

    class_index: int
    name: str
    false_negatives: int
    false_positives: int
    under_prediction: int | None = None
    over_prediction: int | None = None
    wrong_class: int | None = None
    confused_into: int | None = None
    total: int
    shares: dict[str, float | None]


class ErrorTaxonomy(BaseModel):
    """Error counts per class and over all classes, with shares of the total."""

    model_config = ConfigDict(extra="forbid")

    task: TaskType
    background: int | None
    classes: list[ClassErrors]
    totals: dict[str, int]
    shares: dict[str, float | None]


def _share_dict(counts: dict[str, int]) -> dict[str, float | None]:
    total = sum(counts.values())
    return {k: (v / total if total else None) for k, v in counts.items()}


def multiclass_taxonomy_counts(
    cm: np.ndarray, background: int | None
) -> dict[str, np.ndarray | None]:
    """Per-class under-prediction, over-prediction, wrong class and confused-into counts.

    Args:
        cm: ``CxC`` confusion matrix, rows = ground truth.
        background: background class index, or ``None``.

    Returns:
        ``C`` int64 arrays keyed ``under_prediction``, ``over_prediction``, ``wrong_class``,
        ``confused_into`` (``None`` for the first two without a background). The background's
        own entries are zero.
    """
    cm = np.asarray(cm, dtype=np.int64)
    tp, fp, fn = confusion_tp_fp_fn(cm)
    if background is None:
        return {
            "under_prediction": None,
            "over_prediction": None,
            "wrong_class": fn,
            "confused_into": fp,
        }
    under = cm[:, background].copy()
    over = cm[background, :].copy()
    under[background] = 0
    over[background] = 0
    wrong = fn - under
    confused = fp - over
    wrong[background] = 0
    confused[background] = 0
    return {
        "under_prediction": under,
        "over_prediction": over,
        "wrong_class": wrong,
        "confused_into": confused,
    }


def taxonomy_from_confusion(
    cm: np.ndarray, classes: list[str], *, background: int | None
) -> ErrorTaxonomy:
    """Build the multiclass :class:`ErrorTaxonomy` from a pooled confusion matrix.

    Args:
        cm: ``CxC`` confusion matrix, rows = ground truth.
        classes: ``C`` class names.
        background: background class index, or ``None``.

    Returns:
        One :class:`ClassErrors` per class except the background.
    """
    tp, fp, fn = confusion_tp_fp_fn(cm)
    parts = {k: v for k, v in multiclass_taxonomy_counts(cm, background).items() if v is not None}
    kinds = ERROR_KINDS if background is not None else ("wrong_class",)
    out = []
    for c, name in enumerate(classes):
        if c == background:
            continue
        counts = {k: int(parts[k][c]) for k in kinds}
        out.append(
            ClassErrors(
                class_index=c,
                name=name,
                false_negatives=int(fn[c]),
                false_positives=int(fp[c]),
                under_prediction=counts.get("under_prediction"),
                over_prediction=counts.get("over_prediction"),
                wrong_class=counts["wrong_class"],
                confused_into=int(parts["confused_into"][c]),
                total=sum(counts.values()),
                shares=_share_dict(counts),
            )
        )
    totals = {k: int(parts[k].sum()) for k in kinds}
    return ErrorTaxonomy(
        task=TaskType.MULTICLASS,
        background=background,
        classes=out,
        totals=totals,
        shares=_share_dict(totals),
    )


def taxonomy_from_multilabel(counts: np.ndarray, classes: list[str]) -> ErrorTaxonomy:
    """Build the multilabel :class:`ErrorTaxonomy` from per-class ``[tp, fp, fn, tn]`` counts.

    Args:
        counts: ``Cx4`` int counts.
        classes: ``C`` class names.
    """
    out = []
    for c, name in enumerate(classes):
        parts = {"false_negatives": int(counts[c, 2]), "false_positives": int(counts[c, 1])}
        out.append(
            ClassErrors(
                class_index=c,
                name=name,
                **parts,
                total=sum(parts.values()),
                shares=_share_dict(parts),
            )
        )
    totals = {"false_negatives": int(counts[:, 2].sum()), "false_positives": int(counts[:, 1].sum())}
    return ErrorTaxonomy(
        task=TaskType.MULTILABEL, background=None, classes=out, totals=totals, shares=_share_dict(totals)
    )


def error_codes(
    gt: np.ndarray,
    pred: np.ndarray,
    *,
    task: TaskType | str,
    num_classes: int,
    background: int | None = 0,
    show: np.ndarray | None = None,
) -> np.ndarray:
    """Per-pixel :class:`ErrorKind` of a prediction, by table lookups (no per-pixel Python).

    Multiclass: the codes follow the taxonomy above. Multilabel: a pixel where some class is
    missed and none is wrongly predicted is an under-prediction, the reverse an over-prediction,
    and a pixel with both a missed and a wrongly predicted class a wrong class.

    Args:
        gt: multiclass ``HxW`` uint8/uint16 map; values ``>= C`` (the ignore value) get code
            ``NONE``; multilabel ``CxHxW`` bool.
        pred: multiclass ``HxW`` integer map in ``0..C-1``; multilabel ``CxHxW`` bool.
        task: multiclass or multilabel.
        num_classes: ``C``.
        background: multiclass background class, or ``None`` (every error is a wrong class).
        show: optional ``C`` bool: only errors that involve a shown class (as ground truth or
            prediction) are coded.

    Returns:
        ``HxW`` uint8 codes.

    Example:
        >>> gt = np.array([[0, 1, 1, 2]], np.uint8)
        >>> pred = np.array([[1, 0, 2, 2]], np.uint8)
        >>> error_codes(gt, pred, task="multiclass", num_classes=3).tolist()
        [[2, 1, 3, 0]]
    """
    task = TaskType(task)
    shown = np.ones(num_classes, dtype=bool) if show is None else np.asarray(show, dtype=bool)
    if task is TaskType.MULTILABEL:
        if show is not None:
            idx = np.flatnonzero(shown)
            gt, pred = gt[idx], pred[idx]
        fn = np.any(gt & ~pred, axis=0)
        fp = np.any(pred & ~gt, axis=0)
        # 1 = missed only, 2 = wrongly predicted only, 3 = both: exactly the ErrorKind values
        return fn.view(np.uint8) + 2 * fp.view(np.uint8)
    c = num_classes
    g = np.arange(c)[:, None]
    p = np.arange(c)[None, :]
    table = np.where(g != p, int(ErrorKind.WRONG_CLASS), int(ErrorKind.NONE))
    if background is not None:
        table = np.where((p == background) & (g != background), int(ErrorKind.UNDER_PREDICTION), table)
        table = np.where((g == background) & (p != background), int(ErrorKind.OVER_PREDICTION), table)
    table = np.where(shown[:, None] | shown[None, :], table, int(ErrorKind.NONE))
    # one row per possible ground-truth value; the ignore value (and any non-class) codes NONE
    full = np.zeros((256 if gt.dtype == np.uint8 else 65536, c), dtype=np.uint8)
    full[:c] = table
    return full.ravel()[gt.astype(np.intp) * c + pred].reshape(gt.shape)
