"""Fixtures for the data tests: tiny synthetic datasets written into tmp folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segcore.config import CocoSource, MaskFolderSource, MultilabelJsonSource
from segcore.data.synthetic import make_synthetic_coco, make_synthetic_mask_folder, make_synthetic_multilabel


def _write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def write_png():
    """Write an array as an image file (folders created)."""
    return _write_png


@pytest.fixture
def write_json():
    """Write data as a JSON file (folders created)."""
    return _write_json


@pytest.fixture
def coco_source(tmp_path: Path) -> CocoSource:
    return make_synthetic_coco(tmp_path / "coco", num_images=12, num_classes=3, num_test_images=2, rle_every=4)


@pytest.fixture
def mask_source(tmp_path: Path) -> MaskFolderSource:
    return make_synthetic_mask_folder(tmp_path / "masks", num_images=8, num_classes=3, write_splits=True)


@pytest.fixture
def multilabel_source(tmp_path: Path) -> MultilabelJsonSource:
    return make_synthetic_multilabel(tmp_path / "ml", num_images=6)


@pytest.fixture
def hand_coco(tmp_path: Path) -> CocoSource:
    """Two 16x16 images, hand-written annotations (one polygon, one uncompressed RLE)."""
    root = tmp_path / "hand_coco"
    for name in ("a.png", "b.png"):
        _write_png(root / "images" / name, np.full((16, 16, 3), 100, np.uint8))
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 16, "height": 16},
            {"id": 2, "file_name": "b.png", "width": 16, "height": 16},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "iscrowd": 0,
             "segmentation": [[2, 2, 10, 2, 10, 10, 2, 10]]},
            {"id": 2, "image_id": 2, "category_id": 9, "iscrowd": 1,
             "segmentation": {"size": [16, 16], "counts": [16 * 4, 16 * 2, 16 * 10]}},
        ],
        "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}],
    }
    _write_json(root / "annotations.json", coco)
    return CocoSource(root=str(root))
