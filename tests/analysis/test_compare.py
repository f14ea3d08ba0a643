"""Comparing two predictions: per-class and per-image counts of where each one is right."""

from __future__ import annotations

import numpy as np
import pytest

from segcore.analysis import compare, compare_stores, comparison_codes
from segcore.errors import EnsembleError

CLASSES = ["bg", "one", "two"]
GT = np.array([[0, 1, 1, 2, 255, 2]], dtype=np.uint8)
A = np.array([[0, 1, 0, 2, 1, 0]], dtype=np.uint8)
B = np.array([[0, 0, 1, 1, 0, 1]], dtype=np.uint8)
# pixel 1: A right B wrong; 2: B right A wrong; 3: A right B wrong; 4: ignored; 5: both wrong


def test_comparison_codes() -> None:
    codes = comparison_codes(GT, A, B, task="multiclass", num_classes=3)
    assert codes.tolist() == [[0, 1, 2, 1, 0, 3]]
    only_two = comparison_codes(GT, A, B, task="multiclass", num_classes=3, show=np.array([0, 0, 1], bool))
    assert only_two.tolist() == [[0, 0, 0, 1, 0, 3]]


def test_compare_counts_per_class_and_image() -> None:
    worse = np.array([[1, 0, 0, 0, 0, 0]], dtype=np.uint8)  # A is wrong everywhere but pixel 4
    report = compare(
        [("x", A, B, GT), ("y", worse, B, GT)], task="multiclass", classes=CLASSES, names=("run", "ens")
    )
    bg, one, two = report.classes
    assert (bg.pixels, one.pixels, two.pixels) == (2, 4, 4)
    # x: one +1/-1, two +1 and 1 both wrong; y: A wrong on all 5 counted pixels
    assert (bg.a_right_b_wrong, bg.b_right_a_wrong, bg.both_wrong) == (0, 1, 0)
    assert (one.a_right_b_wrong, one.b_right_a_wrong, one.both_wrong) == (1, 2, 1)
    assert (two.a_right_b_wrong, two.b_right_a_wrong, two.both_wrong) == (1, 0, 3)
    x, y = report.images
    assert (x.a_right_b_wrong, x.b_right_a_wrong, x.both_wrong, x.n_pixels) == (2, 1, 1, 5)
    assert (y.a_right_b_wrong, y.b_right_a_wrong, y.both_wrong) == (0, 2, 3)
    assert (report.a_right_b_wrong, report.b_right_a_wrong, report.both_wrong) == (2, 3, 4)
    assert [im.image_id for im in report.top_images(2, better="b")] == ["y", "x"]
    assert [im.image_id for im in report.top_images(1, better="a")] == ["x"]
    assert one.iou_a == pytest.approx(1 / 5)  # tp 1 (x), fp 1 (y pixel 0), fn 3; x pixel 4 ignored
    assert report.names == ("run", "ens")


def test_compare_multilabel_per_class() -> None:
    gt = np.array([[[1, 1, 0]], [[0, 1, 1]]], dtype=bool)
    a = np.array([[[1, 0, 0]], [[0, 1, 1]]], dtype=bool)
    b = np.array([[[1, 1, 1]], [[0, 0, 1]]], dtype=bool)
    report = compare([("m", a, b, gt)], task="multilabel", classes=["c0", "c1"])
    c0, c1 = report.classes
    assert (c0.a_right_b_wrong, c0.b_right_a_wrong, c0.both_wrong) == (1, 1, 0)
    assert (c1.a_right_b_wrong, c1.b_right_a_wrong, c1.both_wrong) == (1, 0, 0)
    (m,) = report.images
    # pixel 1: A misses c0 but B misses c1 -> both wrong; pixel 2: B wrong on c0 only
    assert (m.a_right_b_wrong, m.b_right_a_wrong, m.both_wrong) == (1, 0, 1)


class FakeStore:
    def __init__(self, probs: dict[str, np.ndarray]) -> None:
        self._probs = probs

    @property
    def ids(self) -> list[str]:
        return sorted(self._probs)

    def read(self, image_id: str) -> np.ndarray:
        return self._probs[image_id]


def _onehot(labels: np.ndarray) -> np.ndarray:
    return np.stack([labels == k for k in range(3)]).astype(np.float32)


def test_compare_stores_and_missing_images() -> None:
    store_a = FakeStore({"x": _onehot(A)})
    store_b = FakeStore({"x": _onehot(B), "z": _onehot(B)})
    report = compare_stores(store_a, store_b, lambda _id: GT, task="multiclass", classes=CLASSES)
    assert (report.a_right_b_wrong, report.b_right_a_wrong, report.both_wrong) == (2, 1, 1)
    with pytest.raises(EnsembleError, match="same validation images"):
        compare_stores(store_b, store_a, lambda _id: GT, task="multiclass", classes=CLASSES)
    with pytest.raises(EnsembleError, match="same resolution"):
        compare([("x", A, B[:, :5], GT)], task="multiclass", classes=CLASSES)
