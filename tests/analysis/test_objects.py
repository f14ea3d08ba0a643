"""Object recall by size: objects of known sizes, some found, some missed."""

from __future__ import annotations

import numpy as np
import pytest

from segcore.analysis import analyze
from segcore.analysis.objects import object_hits
from segcore.errors import ConfigError

BINS = (0, 16, 64, 256)  # [0,16) [16,64) [64,256) [256,inf)


def _scene() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((64, 64), dtype=np.uint8)
    pred = np.zeros((64, 64), dtype=np.uint8)
    gt[1:3, 1:3] = 1  # 4 px, missed
    gt[1:4, 10:13] = 1  # 9 px, found entirely
    pred[1:4, 10:13] = 1
    gt[10:20, 1:11] = 1  # 100 px, 60 predicted -> found
    pred[10:16, 1:11] = 1
    gt[10:20, 20:30] = 1  # 100 px, 40 predicted -> missed
    pred[10:14, 20:30] = 1
    gt[30:50, 30:50] = 1  # 400 px, exactly half predicted -> found (share >= 0.5)
    pred[30:40, 30:50] = 1
    gt[55:60, 1:6] = 2  # 25 px of class 2, predicted as class 1 -> missed
    pred[55:60, 1:6] = 1
    return gt, pred


def _objects(**kwargs):
    gt, pred = _scene()
    report = analyze(
        [("s", pred, gt)], task="multiclass", classes=["bg", "one", "two"], size_bins=BINS, **kwargs
    )
    return report.objects


def test_object_recall_per_size_bin() -> None:
    objects = _objects()
    assert [c.name for c in objects.classes] == ["one", "two"]  # background has no objects
    one, two = objects.classes
    assert [(b.lower, b.upper, b.objects, b.found) for b in one.bins] == [
        (0, 16, 2, 1),
        (16, 64, 0, 0),
        (64, 256, 2, 1),
        (256, None, 1, 1),
    ]
    assert [b.recall for b in one.bins] == [0.5, None, 0.5, 1.0]
    assert (one.objects, one.found) == (5, 3)
    assert one.recall == pytest.approx(0.6)
    assert [(b.objects, b.found) for b in two.bins] == [(0, 0), (1, 0), (0, 0), (0, 0)]
    assert two.recall == 0.0


def test_found_share_is_configurable() -> None:
    one = _objects(found_share=0.6).classes[0]
    # the 400 px object at 50% is now missed; the 100 px one at 60% still found
    assert [(b.objects, b.found) for b in one.bins] == [(2, 1), (0, 0), (2, 1), (1, 0)]


def test_connectivity_decides_what_one_object_is() -> None:
    gt = np.zeros((6, 6), dtype=bool)
    gt[1:3, 1:3] = True
    gt[3:5, 3:5] = True  # touches the first square only at a corner
    sizes8, _ = object_hits(gt, gt, connectivity=8)
    sizes4, hits4 = object_hits(gt, gt, connectivity=4)
    assert sizes8.tolist() == [8]
    assert sorted(sizes4.tolist()) == [4, 4] and hits4.tolist() == [4, 4]
    with pytest.raises(ConfigError, match="4 or 8"):
        object_hits(gt, gt, connectivity=6)


def test_ignored_pixels_never_belong_to_an_object() -> None:
    gt, pred = _scene()
    gt[1:3, 1:3] = 255  # the missed 4 px object becomes unlabelled
    report = analyze([("s", pred, gt)], task="multiclass", classes=["bg", "one", "two"], size_bins=BINS)
    assert report.objects.classes[0].bins[0].objects == 1


def test_size_bins_must_increase() -> None:
    gt, pred = _scene()
    with pytest.raises(ConfigError, match="strictly increasing"):
        analyze([("s", pred, gt)], task="multiclass", classes=["bg", "one", "two"], size_bins=(0, 64, 32))


def test_multilabel_objects_per_class_mask() -> None:
    gt = np.zeros((2, 32, 32), dtype=np.uint8)
    gt[0, 2:6, 2:6] = 1  # 16 px, found
    gt[0, 20:22, 20:22] = 1  # 4 px, missed
    gt[1, 0:10, 0:10] = 1  # overlaps class 0's first object: its own 100 px object, missed
    pred = np.zeros((2, 32, 32), dtype=bool)
    pred[0, 2:6, 2:6] = True
    report = analyze([("m", pred, gt)], task="multilabel", classes=["c0", "c1"], size_bins=BINS)
    c0, c1 = report.objects.classes
    assert [(b.objects, b.found) for b in c0.bins] == [(1, 0), (1, 1), (0, 0), (0, 0)]
    assert [(b.objects, b.found) for b in c1.bins] == [(0, 0), (0, 0), (1, 0), (0, 0)]
