"""Boundary bands, boundary-versus-interior errors and boundary IoU on a square counted by hand."""

from __future__ import annotations

import numpy as np
import pytest

from segcore.analysis import analyze, boundary_iou
from segcore.analysis.boundary import label_boundary_band, mask_contour_band


def square(x0: int, size: int = 20) -> np.ndarray:
    """20x20 map with a 10x10 square of class 1 at rows 5..14, columns x0..x0+9."""
    m = np.zeros((size, size), dtype=np.uint8)
    m[5:15, x0 : x0 + 10] = 1
    return m


GT = square(5)


def _report(pred: np.ndarray, k: int):
    return analyze([("sq", pred, GT)], task="multiclass", classes=["bg", "fg"], boundary_px=k)


def test_label_band_is_both_sides_of_the_edge() -> None:
    band = label_boundary_band(GT, 1)
    # inner ring of the square (100 - 8*8 = 36) and outer ring (12*12 - 100 = 44)
    assert int(band.sum()) == 36 + 44
    assert band[5, 5] and band[4, 4] and not band[7, 7] and not band[0, 0]


def test_shift_by_one_pixel_puts_every_error_on_the_boundary() -> None:
    cls = _report(square(6), k=1).boundary.classes[1]
    # column 5 missed (10 px), column 15 over-predicted (10 px): all next to the edge
    assert (cls.errors, cls.boundary_errors, cls.interior_errors) == (20, 20, 0)
    assert cls.boundary_share == 1.0


def test_shift_by_three_pixels_boundary_and_interior_counts() -> None:
    report = _report(square(8), k=1)
    fg = report.boundary.classes[1]
    # missed: columns 5-7 (30 px); in the band: all of column 5 (10) + rows 5 and 14 of
    # columns 6-7 (4) = 14. Over-predicted: columns 15-17 (30 px); in the band: column 15 (10).
    assert (fg.errors, fg.boundary_errors, fg.interior_errors) == (60, 24, 36)
    assert fg.boundary_share == pytest.approx(0.4)
    assert report.boundary.taxonomy_boundary == {
        "under_prediction": 14,
        "over_prediction": 10,
        "wrong_class": 0,
    }
    assert report.boundary.taxonomy_interior == {
        "under_prediction": 16,
        "over_prediction": 20,
        "wrong_class": 0,
    }
    assert report.boundary.boundary_error_share == pytest.approx(24 / 60)
    assert report.boundary.boundary_pixel_share == pytest.approx(80 / 400)
    # wider band: everything within 3 px of the edge; the farthest miss (column 7) is 3 from column 4
    assert _report(square(8), k=3).boundary.classes[1].boundary_errors == 60


def test_boundary_iou_of_shifted_square() -> None:
    # contour bands (d=1) are the 36-pixel rings; they share rows 5 and 14 of columns 8..14
    expected = 14 / (36 + 36 - 14)
    assert boundary_iou(GT == 1, square(8) == 1, 1) == pytest.approx(expected)
    assert _report(square(8), k=1).boundary.classes[1].boundary_iou == pytest.approx(expected)
    assert boundary_iou(GT == 1, GT == 1, 2) == 1.0
    assert boundary_iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool), 1) is None


def test_contour_band_counts_the_image_edge() -> None:
    full = np.ones((6, 6), dtype=bool)
    band = mask_contour_band(full, 1)
    assert int(band.sum()) == 36 - 16  # the outer ring, as in Cheng et al.'s padded erosion
    # but the image edge is no boundary for the error band
    assert not label_boundary_band(full.astype(np.uint8), 1).any()


def test_ignored_pixels_are_not_boundary_errors_and_do_not_move_contours() -> None:
    gt = GT.copy()
    gt[5:15, 12:15] = 255  # right part of the square unlabelled
    a = square(8)
    b = a.copy()
    b[gt == 255] = 0  # a different prediction on the ignored pixels only
    ra = analyze([("sq", a, gt)], task="multiclass", classes=["bg", "fg"], boundary_px=1)
    rb = analyze([("sq", b, gt)], task="multiclass", classes=["bg", "fg"], boundary_px=1)
    assert ra.boundary == rb.boundary
    assert ra.boundary.classes[1].errors == 30 + 30 - 0  # columns 5-7 missed, 15-17 over


def test_multilabel_boundary_per_class() -> None:
    gt = np.stack([GT, np.zeros_like(GT)]).astype(bool)
    pred = np.stack([square(8), np.zeros_like(GT)]).astype(bool)
    report = analyze([("sq", pred, gt)], task="multilabel", classes=["fg", "other"], boundary_px=1)
    fg, other = report.boundary.classes
    assert (fg.errors, fg.boundary_errors, fg.interior_errors) == (60, 24, 36)
    assert fg.boundary_iou == pytest.approx(14 / 58)
    assert other.errors == 0 and other.boundary_iou is None
    assert report.boundary.taxonomy_boundary == {"false_negatives": 14, "false_positives": 10}


def test_multilabel_bounding_box_shortcut_matches_full_image_bands() -> None:
    from segcore.analysis.boundary import multilabel_boundary_counts

    rng = np.random.default_rng(3)
    gt = np.zeros((4, 40, 50), dtype=bool)
    gt[0, 0:6, 0:9] = True  # touches two image edges
    gt[1, 12:20, 15:30] = True  # inside
    gt[2, 30:40, 44:50] = True  # touches the bottom-right corner
    pred = gt ^ (rng.random(gt.shape) < 0.05)
    pred[3, 18:22, 20:25] = True  # class 3: only predicted
    k = 2
    fn_b, fp_b, g_b, p_b, inter = multilabel_boundary_counts(gt, pred, width=k)
    for c in range(4):
        band = label_boundary_band(gt[c], k)
        assert fn_b[c] == np.count_nonzero(gt[c] & ~pred[c] & band)
        assert fp_b[c] == np.count_nonzero(pred[c] & ~gt[c] & band)
        gb, pb = mask_contour_band(gt[c], k), mask_contour_band(pred[c], k)
        assert (g_b[c], p_b[c], inter[c]) == (gb.sum(), pb.sum(), (gb & pb).sum())
