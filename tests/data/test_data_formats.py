"""Loading each on-disk format into a SegDataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from segcore.config import CocoSource, MaskFolderSource, MultilabelJsonSource, TaskType
from segcore.data.formats import SegDataset, open_dataset, read_image
from segcore.errors import DatasetError


def test_coco_loads_generated_dataset(coco_source: CocoSource) -> None:
    ds = open_dataset(coco_source, classes=None, task="multiclass")
    assert isinstance(ds, SegDataset)
    assert ds.ids == sorted(ds.ids) and len(ds.ids) == 12
    assert ds.test_ids == ["test_0000", "test_0001"]
    assert ds.classes[0] == "background" and ds.num_classes == 4
    img, mask = ds.load_image(ds.ids[0]), ds.load_mask(ds.ids[0])
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert mask.shape == (64, 64) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1, 2, 3}
    assert ds.load_test_image("test_0000").shape == (64, 64, 3)
    assert ds.image_size(ds.ids[0]) == (64, 64) and ds.test_image_size("test_0001") == (64, 64)
    presence = ds.class_presence()
    assert presence.shape == (12, 4) and presence.dtype == bool
    assert presence[:, 1:].any(axis=0).all()  # every class occurs somewhere


def test_coco_polygon_and_uncompressed_rle(hand_coco: CocoSource) -> None:
    ds = open_dataset(hand_coco, classes=["background", "cat", "dog"], task="multiclass")
    a = ds.load_mask("a")
    assert a[5, 5] == 1 and a[0, 0] == 0 and a[12, 12] == 0
    b = ds.load_mask("b")
    expected = np.zeros((16, 16), np.uint8)
    expected[:, 4:6] = 2
    np.testing.assert_array_equal(b, expected)


def test_coco_compressed_rle_and_category_map(tmp_path: Path, write_png, write_json) -> None:
    root = tmp_path / "c"
    write_png(root / "images" / "x.jpg", np.zeros((8, 8, 3), np.uint8))
    m = np.zeros((8, 8), np.uint8, order="F")
    m[1:3, 1:3] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode("ascii")
    write_json(root / "annotations.json", {
        "images": [{"id": 5, "file_name": "x.jpg", "width": 8, "height": 8}],
        "annotations": [{"id": 1, "image_id": 5, "category_id": 3, "iscrowd": 1, "segmentation": rle}],
        "categories": [{"id": 3, "name": "a"}, {"id": 4, "name": "b"}],
    })
    ds = open_dataset(CocoSource(root=str(root), category_map={3: 2, 4: 1}), classes=["bg", "b", "a"],
                      task="multiclass")
    mask = ds.load_mask("x")
    assert mask[1, 1] == 2 and mask.sum() == 2 * 4


def test_coco_overlap_smaller_on_top_ties_by_id(tmp_path: Path, write_png, write_json) -> None:
    root = tmp_path / "c"
    write_png(root / "images" / "x.png", np.zeros((20, 20, 3), np.uint8))
    big = [[0, 0, 16, 0, 16, 16, 0, 16]]
    small = [[4, 4, 8, 4, 8, 8, 4, 8]]
    tie = [[10, 10, 14, 10, 14, 14, 10, 14]]
    write_json(root / "annotations.json", {
        "images": [{"id": 1, "file_name": "x.png", "width": 20, "height": 20}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 2, "segmentation": small},  # listed first, still on top
            {"id": 2, "image_id": 1, "category_id": 1, "segmentation": big},
            {"id": 3, "image_id": 1, "category_id": 3, "segmentation": tie},
            {"id": 4, "image_id": 1, "category_id": 2, "segmentation": tie},  # same area: higher id on top
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}],
    })
    ds = open_dataset(CocoSource(root=str(root)), classes=None, task="multiclass")
    mask = ds.load_mask("x")
    assert mask[1, 1] == 1
    assert mask[6, 6] == 2
    assert mask[12, 12] == 2


def test_mask_folder_value_map_and_ignore(tmp_path: Path, write_png) -> None:
    src = MaskFolderSource(root=str(tmp_path / "m"), value_map={0: 0, 255: 1}, ignore_value=None)
    raw = np.zeros((8, 8), np.uint8)
    raw[:, 4:] = 255
    write_png(tmp_path / "m" / "images" / "s1.png", np.zeros((8, 8), np.uint8))  # grey image
    write_png(tmp_path / "m" / "masks" / "s1.png", raw)
    ds = open_dataset(src, classes=["membrane", "cell"], task="multiclass")
    mask = ds.load_mask("s1")
    assert set(np.unique(mask)) == {0, 1} and mask[0, 5] == 1
    assert ds.load_image("s1").shape == (8, 8, 3)


def test_mask_folder_generated(mask_source: MaskFolderSource) -> None:
    ds = open_dataset(mask_source, classes=["bg", "a", "b"], task="multiclass", ignore_index=255)
    mask = ds.load_mask(ds.ids[0])
    assert (mask[-1] == 255).all()  # the ignore strip
    assert set(np.unique(mask)) <= {0, 1, 2, 255}
    assert ds.test_ids == ["test_0000", "test_0001"]


def test_multilabel_overlapping_masks(multilabel_source: MultilabelJsonSource) -> None:
    ds = open_dataset(multilabel_source, classes=["bone", "joint", "implant"], task="multilabel")
    mask = ds.load_mask(ds.ids[0])
    assert mask.shape == (3, 64, 64) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}
    overlap = (mask.sum(axis=0) > 1).any()
    assert overlap, "the generator places smaller objects over the first class"
    assert ds.class_presence().shape == (6, 3)


def test_image_modes_are_converted_to_rgb(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    grey16 = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000)
    Image.fromarray(grey16).save(tmp_path / "b.png")
    a, b = read_image(tmp_path / "a.png"), read_image(tmp_path / "b.png")
    assert a.shape == b.shape == (4, 4, 3) and a.dtype == b.dtype == np.uint8
    assert a[0, 0, 0] == 200 and b.max() > b.min()


def test_relative_root(tmp_path: Path, mask_source: MaskFolderSource) -> None:
    rel = MaskFolderSource(root="masks", ignore_value=255)
    ds = open_dataset(rel, classes=["bg", "a", "b"], task="multiclass", dataset_root=tmp_path)
    assert len(ds.ids) == 8
    with pytest.raises(DatasetError, match="dataset_root"):
        open_dataset(rel, classes=["bg", "a", "b"], task="multiclass")


def test_missing_root_and_wrong_task(tmp_path: Path, mask_source: MaskFolderSource) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(MaskFolderSource(root=str(tmp_path / "nope")), classes=["a"], task="multiclass")
    with pytest.raises(DatasetError, match="multiclass"):
        open_dataset(mask_source, classes=["bg", "a", "b"], task=TaskType.MULTILABEL)


def test_class_count_mismatch(coco_source: CocoSource) -> None:
    with pytest.raises(DatasetError, match="one name per class"):
        open_dataset(coco_source, classes=["background", "only_one"], task="multiclass")


def test_fingerprint_stable_and_changes(mask_source: MaskFolderSource) -> None:
    classes = ["bg", "a", "b"]
    ds = open_dataset(mask_source, classes=classes, task="multiclass")
    fp = ds.fingerprint()
    assert len(fp) == 64 and fp == open_dataset(mask_source, classes=classes, task="multiclass").fingerprint()
    mask_path = Path(mask_source.root) / "masks" / f"{ds.ids[0]}.png"
    raw = np.asarray(Image.open(mask_path)).copy()
    raw[0, 0] = 1 if raw[0, 0] != 1 else 2
    Image.fromarray(raw).save(mask_path)
    assert open_dataset(mask_source, classes=classes, task="multiclass").fingerprint() != fp


def test_fingerprint_changes_with_coco_annotations(coco_source: CocoSource) -> None:
    fp = open_dataset(coco_source, classes=None, task="multiclass").fingerprint()
    path = Path(coco_source.root) / "annotations.json"
    data = json.loads(path.read_text())
    data["annotations"].pop()
    path.write_text(json.dumps(data))
    assert open_dataset(coco_source, classes=None, task="multiclass").fingerprint() != fp


def test_unknown_id_is_a_dataset_error(mask_source: MaskFolderSource) -> None:
    ds = open_dataset(mask_source, classes=["bg", "a", "b"], task="multiclass")
    with pytest.raises(DatasetError, match="unknown image id"):
        ds.load_mask("nope")


def test_loading_a_truncated_image_names_the_file(mask_source) -> None:
    ds = open_dataset(mask_source, classes=["bg", "a", "b"], task="multiclass")
    path = ds.image_path(ds.ids[0])
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DatasetError, match="truncated") as info:
        ds.load_image(ds.ids[0])
    assert str(path) in str(info.value)


def test_loading_a_colour_mask_is_an_error(mask_source, write_png) -> None:
    ds = open_dataset(mask_source, classes=["bg", "a", "b"], task="multiclass")
    colour = np.zeros((64, 64, 3), np.uint8)
    colour[..., 0] = 1
    write_png(Path(mask_source.root) / "masks" / f"{ds.ids[0]}.png", colour)
    with pytest.raises(DatasetError, match="single-channel index images"):
        ds.load_mask(ds.ids[0])


def test_loading_unknown_category_or_label_is_an_error(hand_coco, multilabel_source) -> None:
    path = Path(hand_coco.root) / "annotations.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 99
    path.write_text(json.dumps(data))
    ds = open_dataset(hand_coco, classes=None, task="multiclass")
    with pytest.raises(DatasetError, match="category id 99"):
        ds.load_mask("a")
    ml = open_dataset(multilabel_source, classes=["bone", "joint"], task="multilabel")
    with pytest.raises(DatasetError, match="not among the classes"):
        ml.load_mask(ml.ids[0])


def test_unmapped_mask_values_read_as_ignore(tmp_path: Path, write_png) -> None:
    root = tmp_path / "m"
    write_png(root / "images" / "x.png", np.zeros((4, 4, 3), np.uint8))
    write_png(root / "masks" / "x.png", np.array([[0, 1, 9, 200]] * 4, np.uint8))
    ds = open_dataset(MaskFolderSource(root=str(root), ignore_value=200), classes=["a", "b"], task="multiclass",
                      ignore_index=255)
    assert ds.load_mask("x")[0].tolist() == [0, 1, 255, 255]
