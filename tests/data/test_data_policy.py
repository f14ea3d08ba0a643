"""The data policy: the 'auto' training crop from image-size statistics, 'auto' class weights, and their configs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segcore.config import ExperimentConfig, MaskFolderSource, TaskType, parse_config
from segcore.data.formats import open_dataset
from segcore.data.policy import (
    DataPolicy,
    auto_class_weights,
    auto_crop_side,
    resolve_crop_size,
    resolve_data_policy,
    short_sides_from_histogram,
)
from segcore.data.statistics import pixel_shares
from segcore.data.transforms import apply_transform, build_eval_transform, build_train_transform, preview_augmentations
from segcore.errors import ConfigError

CLASSES = ["bg", "common", "rare"]


class _Sizes:
    """A stand-in dataset that only knows its images' sizes."""

    def __init__(self, sizes: list[tuple[int, int]]) -> None:
        self.sizes = {f"i{k}": hw for k, hw in enumerate(sizes)}
        self.ids = list(self.sizes)

    def image_size(self, image_id: str) -> tuple[int, int]:
        return self.sizes[image_id]


def _config(**data) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "data": {"source": {"format": "mask_folder", "root": "/d"}, "classes": CLASSES, **data},
        "augmentation": {"preset": "none"},
    })


def _stanford_like() -> list[tuple[int, int]]:
    # 531 of 715 are 240x320; the rest 213-320 wide and 137-320 high
    rng = np.random.default_rng(0)
    other = [(int(rng.integers(137, 321)), int(rng.integers(213, 321))) for _ in range(184)]
    return [(240, 320)] * 531 + other


@pytest.mark.parametrize(
    ("sizes", "multiple", "side"),
    [
        ([(512, 512)] * 30, 32, 384),                 # uniform (ISBI): three quarters of the side
        ([(600, 800)] * 18, 32, 448),                 # uniform landscape: 0.75 x 600 = 450 -> 448
        ([(360, 480)] * 10, 32, 256),                 # 270 rounded down to the multiple
        (_stanford_like(), 32, 256),                  # mixed 137..320 px: median short side 240 -> 180 -> 256
        ([(300, 400)] * 6, 32, 256),                  # 225: raised to the floor of 256
        ([(100, 90)] * 5, 32, 96),                    # smaller than the floor: at most the short side, rounded up
        ([(64, 64)] * 4, 32, 64),                     # tiny: the whole image
        ([(20, 30)] * 4, 32, 32),                     # tinier than the multiple: one multiple, padded
        ([(4000, 6000)] * 3, 32, 512),                # huge: clamped to 512
        ([(600, 800)] * 18, 128, 384),                # a model needing multiples of 128 (PAN)
        ([(200, 200), (400, 400), (1000, 1000)], 32, 288),  # the median (400 -> 300 -> 288), not the mean
    ],
)
def test_auto_crop_side_follows_the_rule(sizes, multiple, side) -> None:
    assert auto_crop_side([min(s) for s in sizes], multiple) == side
    assert side % multiple == 0


def test_a_form_can_preview_the_crop_from_stored_statistics() -> None:
    sizes = short_sides_from_histogram({"320x240": 531, "213x320": 90, "300x137": 94})
    assert len(sizes) == 715 and sizes.count(240) == 531 and sizes.count(137) == 94
    assert auto_crop_side(sizes, 32) == 256


def test_resolve_crop_size_reads_the_training_images_only() -> None:
    ds = _Sizes([(512, 512)] * 3 + [(2000, 2000)] * 4)
    cfg = _config(crop_size="auto")
    assert resolve_crop_size(cfg, ds, ds.ids[:3], multiple=32) == (384, 384)
    assert resolve_crop_size(cfg, ds, ds.ids, multiple=32) == (512, 512)


def test_resolve_crop_size_after_resize_uses_image_size() -> None:
    ds = _Sizes([(2000, 3000)] * 3)
    cfg = _config(crop_size="auto", image_size=[480, 640])
    assert resolve_crop_size(cfg, ds, ds.ids, multiple=32) == (352, 352)  # 0.75 x 480 = 360, not 0.75 x 2000


def test_explicit_and_missing_crop_sizes_are_kept() -> None:
    ds = _Sizes([(512, 512)])
    assert resolve_crop_size(_config(crop_size=[64, 96]), ds, ds.ids) == (64, 96)
    assert resolve_crop_size(_config(), ds, ds.ids) is None


def test_model_input_multiple_is_used_by_default() -> None:
    ds = _Sizes([(600, 800)] * 3)
    cfg = _config(crop_size="auto").model_copy(update={"model": _config().model.model_copy(update={"arch": "PAN"})})
    assert resolve_crop_size(cfg, ds, ds.ids) == (384, 384)  # PAN: multiples of 128 (450 -> 384, not 448)


def test_images_smaller_than_the_crop_are_padded_and_ignored() -> None:
    cfg = _config(crop_size=[128, 128])
    t = build_train_transform(cfg, normalize=False, seed=0)
    img, mask = apply_transform(t, np.full((100, 90, 3), 200, np.uint8), np.ones((100, 90), np.uint8),
                                TaskType.MULTICLASS)
    assert img.shape == (128, 128, 3) and mask.shape == (128, 128)
    assert (mask == 1).sum() == 100 * 90 and (mask == 255).sum() == 128 * 128 - 100 * 90
    assert (img[mask == 255] == 0).all()


def test_mixed_sizes_give_one_training_shape_and_full_size_validation() -> None:
    cfg = _config(crop_size=[128, 128])
    train, val = build_train_transform(cfg, normalize=False, seed=0), build_eval_transform(cfg, normalize=False)
    for h, w in [(240, 320), (137, 213), (320, 240), (96, 400)]:
        image, mask = np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.uint8)
        assert apply_transform(train, image, mask, TaskType.MULTICLASS)[1].shape == (128, 128)
        assert apply_transform(val, image, mask, TaskType.MULTICLASS)[1].shape == (h, w)


@pytest.fixture
def rare_folder(tmp_path):
    """Six 64x96 images: class 2 covers a 4x4 square in each, class 1 a third, 255 a strip."""
    root = tmp_path / "rare"
    for k in range(6):
        mask = np.zeros((64, 96), np.uint8)
        mask[:, :32] = 1
        mask[10 + k : 14 + k, 50:54] = 2
        mask[-2:, :] = 255
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((64, 96, 3), 40 * k, np.uint8)).save(root / "images" / f"{k}.png")
        Image.fromarray(mask).save(root / "masks" / f"{k}.png")
    return MaskFolderSource(root=str(root), ignore_value=255)


def test_pixel_shares_count_labelled_pixels_of_the_given_ids(rare_folder) -> None:
    ds = open_dataset(rare_folder, classes=CLASSES, task="multiclass")
    labelled = 62 * 96
    shares = pixel_shares(ds, ds.ids[:2])
    assert shares.tolist() == pytest.approx([(labelled - 62 * 32 - 16) / labelled, 62 * 32 / labelled, 16 / labelled])


def test_auto_class_weights_are_inverse_sqrt_capped_and_mean_one() -> None:
    w = np.array(auto_class_weights([0.64, 0.32, 0.04]))
    raw = np.array([0.64, 0.32, 0.04]) ** -0.5
    assert w == pytest.approx(raw / raw.mean())
    assert w.mean() == pytest.approx(1.0)
    capped = np.array(auto_class_weights([0.9999, 0.0001, 0.0]))  # ratio 100 -> capped at 10; absent gets the max
    assert capped.max() / capped.min() == pytest.approx(10.0)
    assert capped[2] == pytest.approx(capped[1])


def test_resolve_data_policy_replaces_every_auto(rare_folder) -> None:
    ds = open_dataset(rare_folder, classes=CLASSES, task="multiclass")
    cfg = ExperimentConfig.model_validate({
        "data": {"source": rare_folder.model_dump(), "classes": CLASSES, "crop_size": "auto",
                 "rare_class_crop": {"p": 0.5}},
        "loss": {"terms": [{"name": "weighted_ce", "weight": 0.6, "params": {"weights": "auto"}},
                           {"name": "jaccard", "weight": 0.4}]},
    })
    resolved, policy = resolve_data_policy(cfg, ds, ds.ids[:4])
    expected = auto_class_weights(pixel_shares(ds, ds.ids[:4]))
    assert resolved.data.crop_size == (64, 64)  # median short side 64: the 256 floor is capped by the image
    assert resolved.data.rare_class_crop.class_weights == pytest.approx(expected)
    assert resolved.loss.terms[0].params["weights"] == pytest.approx(expected)
    assert policy.crop_size == (64, 64) and policy.crop_auto and policy.median_short_side == 64
    assert "auto" in policy.crop_rule and "64x64" in policy.crop_rule
    assert policy.loss_weights == policy.rare_crop_weights == pytest.approx(expected)
    assert DataPolicy.model_validate_json(policy.model_dump_json()) == policy
    assert "auto" not in json.dumps([resolved.to_dict()["data"], resolved.to_dict()["loss"]])
    build_train_transform(resolved)  # no auto left


def test_resolving_a_config_without_auto_changes_nothing(rare_folder) -> None:
    ds = open_dataset(rare_folder, classes=CLASSES, task="multiclass")
    cfg = _config(crop_size=[32, 32])
    resolved, policy = resolve_data_policy(cfg, ds, ds.ids)
    assert resolved == cfg
    assert policy.crop_rule == "fixed: 32x32" and policy.class_shares is None


def test_unresolved_auto_fails_with_a_fix() -> None:
    with pytest.raises(ConfigError, match="resolve_data_policy"):
        build_train_transform(_config(crop_size="auto"))
    with pytest.raises(ConfigError, match="resolve_data_policy"):
        build_train_transform(_config(crop_size=[32, 32], rare_class_crop={"p": 0.3}))
    from segcore.losses import build_loss

    cfg = parse_config({"data": {"source": {"format": "mask_folder", "root": "/d"}, "classes": CLASSES},
                        "loss": {"terms": [{"name": "weighted_ce", "params": {"weights": "auto"}}]}})
    with pytest.raises(ConfigError, match="resolve_data_policy"):
        build_loss(cfg)


def test_validation_runs_at_full_resolution_with_an_auto_crop() -> None:
    t = build_eval_transform(_config(crop_size="auto"), normalize=False)
    img, mask = apply_transform(t, np.zeros((137, 213, 3), np.uint8), np.zeros((137, 213), np.uint8),
                                TaskType.MULTICLASS)
    assert img.shape == (137, 213, 3) and mask.shape == (137, 213)


def test_preview_resolves_auto_like_a_run(rare_folder) -> None:
    ds = open_dataset(rare_folder, classes=CLASSES, task="multiclass")
    cfg = ExperimentConfig.model_validate({
        "data": {"source": rare_folder.model_dump(), "classes": CLASSES, "crop_size": "auto",
                 "rare_class_crop": {"p": 1.0}},
        "augmentation": {"preset": "none"},
    })
    out = preview_augmentations(ds, cfg, ds.ids, 3)
    assert [m.shape for _, m in out] == [(64, 64)] * 3


@pytest.mark.parametrize(
    ("data", "loss", "hint"),
    [
        ({"crop_size": "big"}, "ce", "crop_size is [height, width], 'auto' or null"),
        ({"crop_size": [100, 100]}, "ce", "multiples of 32"),
        ({"rare_class_crop": {"p": 0.5}}, "ce", "needs data.crop_size"),
        ({"crop_size": "auto", "rare_class_crop": {"p": 1.5}}, "ce", "less than or equal to 1"),
        ({"crop_size": "auto", "rare_class_crop": {"p": 0.5, "class_weights": [1, 2]}}, "ce", "one weight per class"),
        ({"crop_size": "auto", "rare_class_crop": {"class_weights": [1, -1, 0]}}, "ce", "non-negative"),
        ({"crop_size": "auto", "rare_class_crop": {"class_weights": [0, 0, 0]}}, "ce", "not all zero"),
        ({}, {"terms": [{"name": "weighted_ce", "params": {"weights": "avto"}}]}, "'auto'"),
        ({}, {"terms": [{"name": "weighted_ce", "params": {"weights": [1, 2]}}]}, "one weight per class"),
    ],
)
def test_bad_policy_values_fail_with_clear_errors(data, loss, hint) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"data": {"source": {"format": "mask_folder", "root": "/d"}, "classes": CLASSES, **data},
                      "loss": loss})
    assert hint in str(err.value)


def test_auto_spellings_round_trip() -> None:
    cfg = _config(crop_size="AUTO", rare_class_crop={"p": 0.25})
    assert cfg.data.crop_size == "auto" and cfg.data.rare_class_crop.class_weights == "auto"
    assert ExperimentConfig.model_validate_json(cfg.to_json()) == cfg
