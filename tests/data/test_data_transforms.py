"""Augmentation presets (contract test over the registry), config transforms and normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from segcore import catalog
from segcore.config import ExperimentConfig
from segcore.data.formats import open_dataset
from segcore.data.transforms import (
    IMAGENET_MEAN,
    PRESETS,
    apply_transform,
    build_eval_transform,
    build_train_transform,
    normalization,
    preview_augmentations,
)
from segcore.errors import ConfigError


def make_cfg(source, classes, **overrides) -> ExperimentConfig:
    data = {"source": source.model_dump(), "classes": classes, **overrides.pop("data", {})}
    return ExperimentConfig.model_validate({"data": data, **overrides})


def test_registry_matches_catalog() -> None:
    assert PRESETS.names() == list(catalog.AUGMENTATION_PRESETS)
    for entry in PRESETS:
        assert entry.description == catalog.AUGMENTATION_PRESETS[entry.name]


@pytest.mark.parametrize("preset", PRESETS.names())
def test_preset_multiclass_keeps_mask_valid(preset: str, mask_source) -> None:
    ds = open_dataset(mask_source, classes=["bg", "a", "b"], task="multiclass")
    cfg = make_cfg(mask_source, ds.classes, data={"crop_size": [32, 32]}, augmentation={"preset": preset})
    t = build_train_transform(cfg, seed=0)
    for image_id in ds.ids[:4]:
        for _ in range(3):
            img, mask = apply_transform(t, ds.load_image(image_id), ds.load_mask(image_id), ds.task)
            assert img.shape == (32, 32, 3) and img.dtype == np.float32
            assert mask.shape == (32, 32) and mask.dtype == np.uint8
            assert set(np.unique(mask)) <= {0, 1, 2, 255}


@pytest.mark.parametrize("preset", PRESETS.names())
def test_preset_multilabel_keeps_mask_valid(preset: str, multilabel_source) -> None:
    classes = ["bone", "joint", "implant"]
    ds = open_dataset(multilabel_source, classes=classes, task="multilabel")
    cfg = make_cfg(
        multilabel_source, classes, data={"task": "multilabel", "image_size": [64, 64]},
        loss="bce", augmentation={"preset": preset},
    )
    t = build_train_transform(cfg, seed=0)
    for image_id in ds.ids[:3]:
        img, mask = apply_transform(t, ds.load_image(image_id), ds.load_mask(image_id), ds.task)
        assert img.shape == (64, 64, 3)
        assert mask.shape == (3, 64, 64) and set(np.unique(mask)) <= {0, 1}


def test_padding_fills_mask_with_ignore_index(mask_source) -> None:
    ds = open_dataset(mask_source, classes=["bg", "a", "b"], task="multiclass")
    cfg = make_cfg(mask_source, ds.classes, data={"crop_size": [96, 96]}, augmentation={"preset": "none"})
    img, mask = apply_transform(build_train_transform(cfg, seed=0), ds.load_image(ds.ids[0]),
                                ds.load_mask(ds.ids[0]), ds.task)
    assert mask.shape == (96, 96) and (mask == 255).sum() >= 96 * 96 - 64 * 64


def test_resize_uses_nearest_for_masks(mask_source) -> None:
    ds = open_dataset(mask_source, classes=["bg", "a", "b"], task="multiclass")
    cfg = make_cfg(mask_source, ds.classes, data={"image_size": [96, 128]})
    img, mask = apply_transform(build_eval_transform(cfg), ds.load_image(ds.ids[0]), ds.load_mask(ds.ids[0]), ds.task)
    assert img.shape == (96, 128, 3) and set(np.unique(mask)) <= {0, 1, 2, 255}


def test_config_transforms_are_appended(mask_source) -> None:
    cfg = make_cfg(mask_source, ["bg", "a", "b"], data={"crop_size": [32, 32]}, augmentation={
        "preset": "flips",
        "transforms": [{"name": "Affine", "params": {"rotate": [-20, 20]}, "p": 1.0},
                       {"name": "RandomResizedCrop", "params": {"scale": [0.5, 1.0]}}],
    })
    t = build_train_transform(cfg)
    names = [type(x).__name__ for x in t.transforms]
    assert names == ["PadIfNeeded", "RandomCrop", "HorizontalFlip", "Affine", "RandomResizedCrop", "Normalize"]
    assert t.transforms[3].fill_mask == 255  # geometric transforms fill invented mask pixels with ignore
    assert tuple(t.transforms[4].size) == (32, 32)


def test_unknown_transform_lists_choices(mask_source) -> None:
    cfg = make_cfg(mask_source, ["bg", "a", "b"], augmentation={"transforms": [{"name": "Solarize"}]})
    with pytest.raises(ConfigError, match="unknown transform 'Solarize'.*HorizontalFlip"):
        build_train_transform(cfg)


def test_bad_params_name_the_transform(mask_source) -> None:
    cfg = make_cfg(mask_source, ["bg", "a", "b"], augmentation={"transforms": [{"name": "GaussianBlur", "params": {"radius": 3}}]})
    with pytest.raises(ConfigError, match="'GaussianBlur' has no parameter.*radius.*blur_limit"):
        build_train_transform(cfg)
    cfg = make_cfg(mask_source, ["bg", "a", "b"], augmentation={"transforms": [{"name": "CLAHE", "params": {"clip_limit": "lots"}}]})
    with pytest.raises(ConfigError, match="invalid params for transform 'CLAHE'"):
        build_train_transform(cfg)


def test_normalization(mask_source) -> None:
    cfg = make_cfg(mask_source, ["bg", "a", "b"])
    assert normalization(cfg) == (IMAGENET_MEAN, (0.229, 0.224, 0.225))
    unit = make_cfg(mask_source, ["bg", "a", "b"], augmentation={"normalize": "unit"})
    mean, std = normalization(unit)
    assert mean == (0.0, 0.0, 0.0) and std == (1.0, 1.0, 1.0)
    img = np.full((8, 8, 3), 255, np.uint8)
    out = build_eval_transform(unit)(image=img)["image"]
    assert np.allclose(out, 1.0)


def test_seeded_pipelines_repeat(mask_source) -> None:
    ds = open_dataset(mask_source, classes=["bg", "a", "b"], task="multiclass")
    cfg = make_cfg(mask_source, ds.classes, data={"crop_size": [32, 32]}, augmentation={"preset": "strong"})
    img, mask = ds.load_image(ds.ids[0]), ds.load_mask(ds.ids[0])
    a = apply_transform(build_train_transform(cfg, seed=5), img, mask, ds.task)
    b = apply_transform(build_train_transform(cfg, seed=5), img, mask, ds.task)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_preview_augmentations(mask_source) -> None:
    ds = open_dataset(mask_source, classes=["bg", "a", "b"], task="multiclass")
    cfg = make_cfg(mask_source, ds.classes, data={"crop_size": [32, 32]}, augmentation={"preset": "strong"})
    out = preview_augmentations(ds, cfg, ds.ids[:2], 5)
    assert len(out) == 5
    for img, mask in out:
        assert img.dtype == np.uint8 and img.shape == (32, 32, 3) and mask.shape == (32, 32)


@pytest.mark.parametrize("preset", PRESETS.names())
def test_preset_keeps_non_square_shape(preset: str, mask_source) -> None:
    ds = open_dataset(mask_source, classes=["bg", "a", "b"], task="multiclass")
    cfg = make_cfg(mask_source, ds.classes, data={"crop_size": [32, 64]}, augmentation={"preset": preset})
    t = build_train_transform(cfg, seed=1)
    for _ in range(6):  # 90-degree turns would swap height and width and break batching
        img, mask = apply_transform(t, ds.load_image(ds.ids[1]), ds.load_mask(ds.ids[1]), ds.task)
        assert img.shape == (32, 64, 3) and mask.shape == (32, 64)


@pytest.mark.parametrize("preset", PRESETS.names())
def test_preset_handles_many_multilabel_channels(preset: str) -> None:
    from segcore.config import TaskType

    classes = [f"bone_{i}" for i in range(19)]  # more channels than OpenCV warps in one call
    cfg = ExperimentConfig.model_validate({
        "data": {"source": {"format": "multilabel_json", "root": "/unused"}, "classes": classes,
                 "task": "multilabel", "crop_size": [32, 32]},
        "loss": "bce",
        "augmentation": {"preset": preset, "transforms": [{"name": "GridDistortion", "p": 1.0}]},
    })
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
    mask = (rng.random((19, 40, 48)) > 0.5).astype(np.uint8)
    img, out = apply_transform(build_train_transform(cfg, seed=0), image, mask, TaskType.MULTILABEL)
    assert img.shape == (32, 32, 3) and out.shape == (19, 32, 32) and set(np.unique(out)) <= {0, 1}
