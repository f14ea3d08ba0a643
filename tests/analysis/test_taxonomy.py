"""Confusion matrix, per-class metrics and error taxonomy on arrays small enough to count by hand."""

from __future__ import annotations

import numpy as np
import pytest

from segcore.analysis import ErrorKind, analyze, error_codes
from segcore.analysis._confusion import confusion_matrix, normalize_rows

CLASSES = ["bg", "a", "b"]
# fmt: off
GT = np.array([[0, 0,   1, 1],
               [0, 2,   1, 1],
               [2, 2, 255, 0]], dtype=np.uint8)
PRED = np.array([[1, 0, 0, 1],
                 [0, 1, 1, 2],
                 [2, 0, 1, 0]], dtype=np.uint8)
# fmt: on
# pixel by pixel: (0,0) bg->a over(a); (0,2) a->bg under(a); (1,1) b->a wrong(b);
# (1,3) a->b wrong(a); (2,1) b->bg under(b); (2,2) ignored; the other six are right.
CM = [[3, 1, 0], [1, 2, 1], [1, 1, 1]]


def _report(pred=PRED, **kwargs):
    kwargs.setdefault("boundary_px", 1)
    return analyze([("img", pred, GT)], task="multiclass", classes=CLASSES, **kwargs)


def test_confusion_matrix_counts_and_row_normalisation() -> None:
    cm = confusion_matrix(GT, PRED, 3, ignore_index=255)
    assert cm.tolist() == CM
    norm = normalize_rows(cm)
    np.testing.assert_allclose(norm[1], [0.25, 0.5, 0.25])
    np.testing.assert_allclose(norm.sum(axis=1), 1.0)
    report = _report()
    assert report.confusion.counts == CM
    np.testing.assert_allclose(report.confusion.normalized[0], [0.75, 0.25, 0.0])


def test_normalised_row_of_absent_class_is_zero() -> None:
    cm = np.array([[2, 0], [0, 0]])
    assert normalize_rows(cm).tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_per_class_metrics() -> None:
    pooled = _report().pooled
    bg, a, b = pooled.classes
    assert (a.tp, a.fp, a.fn, a.support, a.predicted) == (2, 2, 2, 4, 4)
    assert a.iou == pytest.approx(2 / 6)
    assert a.dice == pytest.approx(0.5)
    assert a.precision == pytest.approx(0.5) and a.recall == pytest.approx(0.5)
    assert (bg.tp, bg.fp, bg.fn) == (3, 2, 1)
    assert bg.iou == pytest.approx(0.5)
    assert (b.tp, b.fp, b.fn) == (1, 1, 2)
    assert b.iou == pytest.approx(0.25)
    assert b.precision == pytest.approx(0.5) and b.recall == pytest.approx(1 / 3)
    assert pooled.mean_iou == pytest.approx((0.5 + 1 / 3 + 0.25) / 3)
    assert pooled.pixel_accuracy == pytest.approx(6 / 11)
    assert pooled.n_pixels == 11


def test_taxonomy_counts_and_shares() -> None:
    tax = _report().taxonomy
    assert [c.name for c in tax.classes] == ["a", "b"]  # no entry for the background
    a, b = tax.classes
    assert (a.under_prediction, a.over_prediction, a.wrong_class, a.confused_into) == (1, 1, 1, 1)
    assert (a.false_negatives, a.false_positives, a.total) == (2, 2, 3)
    assert a.shares == pytest.approx(
        {"under_prediction": 1 / 3, "over_prediction": 1 / 3, "wrong_class": 1 / 3}
    )
    assert (b.under_prediction, b.over_prediction, b.wrong_class, b.confused_into) == (1, 0, 1, 1)
    assert (b.false_negatives, b.false_positives, b.total) == (2, 1, 2)
    # every wrong pixel is counted exactly once
    assert tax.totals == {"under_prediction": 2, "over_prediction": 1, "wrong_class": 2}
    assert tax.shares == pytest.approx(
        {"under_prediction": 0.4, "over_prediction": 0.2, "wrong_class": 0.4}
    )


def test_without_background_only_wrong_class_is_reported() -> None:
    tax = _report(background=None).taxonomy
    assert [c.name for c in tax.classes] == CLASSES
    assert [c.wrong_class for c in tax.classes] == [1, 2, 2]
    assert all(c.under_prediction is None and c.over_prediction is None for c in tax.classes)
    assert tax.totals == {"wrong_class": 5}
    assert tax.shares == {"wrong_class": 1.0}


def test_error_codes_per_pixel() -> None:
    codes = error_codes(GT, PRED, task="multiclass", num_classes=3, background=0)
    U, O, W = ErrorKind.UNDER_PREDICTION, ErrorKind.OVER_PREDICTION, ErrorKind.WRONG_CLASS
    # fmt: off
    assert codes.tolist() == [[O, 0, U, 0],
                              [0, W, 0, W],
                              [0, U, 0, 0]]
    # fmt: on
    only_b = error_codes(GT, PRED, task="multiclass", num_classes=3, show=np.array([0, 0, 1], bool))
    assert only_b.tolist() == [[0, 0, 0, 0], [0, W, 0, W], [0, U, 0, 0]]
    no_bg = error_codes(GT, PRED, task="multiclass", num_classes=3, background=None)
    assert no_bg.tolist() == [[W, 0, W, 0], [0, W, 0, W], [0, W, 0, 0]]


def test_multilabel_false_negatives_and_false_positives() -> None:
    gt = np.zeros((2, 2, 3), dtype=np.uint8)
    gt[0, 0, :2] = 1  # class 0: top-left two pixels
    gt[1, 1, :] = 1  # class 1: bottom row
    pred = np.zeros((2, 2, 3), dtype=bool)
    pred[0, 0, 0] = pred[0, 0, 2] = True  # class 0: tp 1, fn 1, fp 1
    pred[0, 1, 1] = True  # class 0: fp (where class 1 is)
    pred[1, 1, 0] = True  # class 1: tp 1, fn 2
    report = analyze([("x", pred, gt)], task="multilabel", classes=["c0", "c1"], boundary_px=1)
    c0, c1 = report.taxonomy.classes
    assert (c0.false_negatives, c0.false_positives, c0.total) == (1, 2, 3)
    assert (c1.false_negatives, c1.false_positives, c1.total) == (2, 0, 2)
    assert c0.under_prediction is None and c0.wrong_class is None
    assert report.taxonomy.totals == {"false_negatives": 3, "false_positives": 2}
    assert report.confusion is None
    assert report.pooled.classes[0].iou == pytest.approx(1 / 4)
    assert report.pooled.classes[1].iou == pytest.approx(1 / 3)
    codes = error_codes(gt.astype(bool), pred, task="multilabel", num_classes=2)
    U, O, W = ErrorKind.UNDER_PREDICTION, ErrorKind.OVER_PREDICTION, ErrorKind.WRONG_CLASS
    # (1,1): class 1 missed and class 0 predicted there -> wrong class
    assert codes.tolist() == [[0, U, O], [0, W, U]]
