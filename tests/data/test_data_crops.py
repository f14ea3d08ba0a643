"""Rare-class-aware crops land on rare classes measurably more often than uniform crops, and stay seeded per item."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segcore.config import ExperimentConfig, MaskFolderSource, TaskType
from segcore.data.crops import RareClassCrop, present_classes
from segcore.data.dataset import make_train_dataset
from segcore.data.formats import open_dataset
from segcore.data.policy import resolve_data_policy
from segcore.data.transforms import _albumentations, apply_transform

CLASSES = ["bg", "common", "rare"]
RARE = 2
SIZE, BLOB, CROP = 128, 6, 32


@pytest.fixture
def rare_source(tmp_path) -> MaskFolderSource:
    """Twelve 128x128 images: class 1 fills the left half, class 2 one 6x6 blob at a random place."""
    rng = np.random.default_rng(0)
    root = tmp_path / "rare"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for k in range(12):
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[:, : SIZE // 2] = 1
        y, x = rng.integers(0, SIZE - BLOB, size=2)
        mask[y : y + BLOB, x : x + BLOB] = RARE
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / "images" / f"{k}.png")
        Image.fromarray(mask).save(root / "masks" / f"{k}.png")
    return MaskFolderSource(root=str(root))


def _config(source: MaskFolderSource, p: float) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "data": {"source": source.model_dump(), "classes": CLASSES, "crop_size": [CROP, CROP],
                 "rare_class_crop": {"p": p}},
        "augmentation": {"preset": "none"},
    })


def _rare_crop_rate(source: MaskFolderSource, p: float, draws: int = 480) -> float:
    ds = open_dataset(source, classes=CLASSES, task="multiclass")
    cfg, _ = resolve_data_policy(_config(source, p), ds, ds.ids, multiple=32)
    train = make_train_dataset(cfg, ds, ds.ids, seed=0)
    hits = sum(bool((train[(k % len(train), 1000 + k)]["mask"] == RARE).any()) for k in range(draws))
    return hits / draws


def test_rare_class_crops_hit_rare_pixels_far_more_often(rare_source) -> None:
    uniform = _rare_crop_rate(rare_source, p=0.0)
    half = _rare_crop_rate(rare_source, p=0.5)
    always = _rare_crop_rate(rare_source, p=1.0)
    # a uniform 32x32 crop meets a 6x6 blob in a 128x128 image at most ((32+6-1)/(128-32+1))^2 ~ 15% of the
    # time (less near the borders; 7.5% with these seeds)
    assert 0.02 < uniform < 0.25
    # with p the crop is placed on a drawn class: the rare one with probability ~0.83 here (its auto weight is
    # capped at 10x the others'), so p=1 hits it ~86% of the time and p=0.5 about half way between
    assert half > uniform + 0.25
    assert always > 0.6 and always > half + 0.15


def test_crops_repeat_for_the_same_item_seed(rare_source) -> None:
    ds = open_dataset(rare_source, classes=CLASSES, task="multiclass")
    cfg, _ = resolve_data_policy(_config(rare_source, 0.5), ds, ds.ids, multiple=32)
    train = make_train_dataset(cfg, ds, ds.ids, seed=0)
    a, b = train[(3, 77)], train[(3, 77)]
    assert a["mask"].shape == (CROP, CROP)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])
    others = {train[(3, s)]["mask"].numpy().tobytes() for s in range(78, 90)}
    assert len(others) > 1  # other seeds, other crops


def test_the_class_is_drawn_among_present_classes_by_weight() -> None:
    A = _albumentations()
    mask = np.zeros((64, 64), np.uint8)
    mask[:8, :8] = 1
    mask[56:, 56:] = 255  # ignored pixels are never a crop target
    crop = RareClassCrop(16, 16, class_weights=[1.0, 3.0, 100.0], rare_p=1.0)  # class 2 is absent
    t = A.Compose([crop], seed=0)
    hits = 0
    for s in range(400):
        t.set_random_seed(s)
        hits += bool((apply_transform(t, np.zeros((64, 64, 3), np.uint8), mask, TaskType.MULTICLASS)[1] == 1).any())
    # P(class 1 drawn) = 3/4; else the crop sits on background and meets the 8x8 corner rarely (~(8/49)^2)
    assert hits / 400 == pytest.approx(0.75 + 0.25 * (8 / 49) ** 2, abs=0.07)


def test_multilabel_masks_are_supported() -> None:
    A = _albumentations()
    mask = np.zeros((3, 64, 64), np.uint8)
    mask[0] = 1
    mask[2, 60:, 60:] = 1
    t = A.Compose([RareClassCrop(16, 16, class_weights=[0.0, 0.0, 1.0], rare_p=1.0)], seed=0)
    for s in range(20):
        t.set_random_seed(s)
        out = apply_transform(t, np.zeros((64, 64, 3), np.uint8), mask, TaskType.MULTILABEL)[1]
        assert out.shape == (3, 16, 16) and out[2].any()


def test_present_classes() -> None:
    mask = np.array([[0, 2], [255, 2]], np.uint8)
    assert present_classes(mask, 3).tolist() == [True, False, True]
    assert present_classes(np.stack([mask == 0, mask == 9], axis=-1), 2).tolist() == [True, False]


def test_rare_p_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="rare_p"):
        RareClassCrop(16, 16, class_weights=[1.0], rare_p=2.0)
