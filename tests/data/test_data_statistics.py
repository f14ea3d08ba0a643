"""compute_statistics on hand-built datasets whose figures are counted by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segcore.config import MaskFolderSource
from segcore.data.formats import open_dataset
from segcore.data.statistics import PRESENCE_ROWS, DatasetStatistics, compute_statistics, polygon_area


@pytest.fixture
def hand_built(tmp_path: Path, write_png) -> MaskFolderSource:
    root = tmp_path / "hand"
    m1 = np.zeros((8, 8), np.uint8)
    m1[0:2, 0:2] = 1  # object of 4 px
    m1[4, 5:8] = 1  # object of 3 px
    m1[7, :] = 255  # ignored row
    m2 = np.zeros((8, 8), np.uint8)
    m2[2:5, 2:5] = 2  # object of 9 px
    for stem, m in (("one", m1), ("two", m2)):
        write_png(root / "images" / f"{stem}.png", np.zeros((8, 8, 3), np.uint8))
        write_png(root / "masks" / f"{stem}.png", m)
    return MaskFolderSource(root=str(root), ignore_value=255)


def test_mask_folder_figures(hand_built: MaskFolderSource) -> None:
    ds = open_dataset(hand_built, classes=["bg", "a", "b"], task="multiclass")
    stats = compute_statistics(ds, rare_pixel_share=0.07)
    assert stats.num_images == 2 and not stats.sampled
    assert stats.total_pixels == 128 and stats.ignored_pixels == 8
    assert stats.image_sizes == {"8x8": 2}
    bg, a, b = stats.classes
    assert (bg.pixel_count, a.pixel_count, b.pixel_count) == (104, 7, 9)
    assert a.pixel_share == pytest.approx(7 / 120) and b.pixel_share == pytest.approx(9 / 120)
    assert (bg.instance_count, a.instance_count, b.instance_count) == (2, 2, 1)
    assert (bg.image_count, a.image_count, b.image_count) == (2, 1, 1)
    assert a.area_min == 3 and a.area_max == 4 and a.area_median == 3.5
    assert a.area_histogram[1] == 1 and a.area_histogram[2] == 1 and sum(a.area_histogram) == 2
    assert b.area_histogram[3] == 1
    assert stats.rare_classes == ["a"] and a.rare and not b.rare
    assert sum(c.pixel_share for c in stats.classes) == pytest.approx(1.0)
    # per-image presence, for the page's charts without reading a mask: "one" has bg and a, "two" bg and b
    assert stats.presence == {"one": "110", "two": "101"} and stats.classes_per_image == [0, 0, 2, 0]
    assert stats.presence == {i: "".join("1" if v else "0" for v in row)
                              for i, row in zip(ds.ids, ds.class_presence())}


def test_presence_is_kept_for_a_bounded_number_of_images(coco_source) -> None:
    ds = open_dataset(coco_source, classes=None, task="multiclass")
    stats = compute_statistics(ds)
    assert stats.presence is not None and len(stats.presence) == min(len(ds.ids), PRESENCE_ROWS)
    assert list(stats.presence) == list(ds.ids)[:PRESENCE_ROWS]
    assert stats.classes_per_image is not None and sum(stats.classes_per_image) == len(ds.ids)
    counts = np.bincount(ds.class_presence().sum(axis=1), minlength=ds.num_classes + 1)
    assert stats.classes_per_image == counts.tolist()


def test_statistics_are_json_round_trippable(hand_built: MaskFolderSource) -> None:
    ds = open_dataset(hand_built, classes=["bg", "a", "b"], task="multiclass")
    stats = compute_statistics(ds)
    again = DatasetStatistics.model_validate(json.loads(stats.model_dump_json()))
    assert again == stats
    w = stats.class_weights()
    assert len(w) == 3 and w[0] < w[1] and np.mean(w) == pytest.approx(1.0)


def test_coco_counts_annotations(hand_coco) -> None:
    ds = open_dataset(hand_coco, classes=None, task="multiclass")
    stats = compute_statistics(ds)
    assert [c.instance_count for c in stats.classes] == [0, 1, 1]
    dog = stats.classes[2]
    assert dog.pixel_count == 32 and dog.area_min == 32 and dog.area_histogram[5] == 1


def test_multilabel_counts_polygons(tmp_path: Path, write_png, write_json) -> None:
    from segcore.config import MultilabelJsonSource

    root = tmp_path / "ml"
    write_png(root / "images" / "x.png", np.zeros((10, 10), np.uint8))
    write_json(root / "annotations" / "x.json", {"annotations": [
        {"label": "a", "points": [[0, 0], [4, 0], [4, 4], [0, 4]]},
        {"label": "b", "points": [[2, 2], [6, 2], [6, 6], [2, 6]]},
    ]})
    ds = open_dataset(MultilabelJsonSource(root=str(root)), classes=["a", "b"], task="multilabel")
    stats = compute_statistics(ds)
    assert [c.instance_count for c in stats.classes] == [1, 1]
    assert stats.classes[0].area_min == 16
    assert stats.classes[0].pixel_count == 25  # PIL fills the outline inclusively: 5x5 pixels
    assert stats.ignored_pixels == 0


def test_max_images_samples(coco_source) -> None:
    ds = open_dataset(coco_source, classes=None, task="multiclass")
    stats = compute_statistics(ds, max_images=4)
    assert stats.sampled and stats.num_images == 4


def test_polygon_area() -> None:
    assert polygon_area([[0, 0], [4, 0], [4, 3]]) == 6.0
    assert polygon_area([[0, 0], [1, 1]]) == 0.0
