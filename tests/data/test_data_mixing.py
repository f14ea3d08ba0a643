"""CutMix, MixUp and rare-object copy-paste keep shapes and valid mask values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segcore.config import MixingConfig
from segcore.data.formats import open_dataset
from segcore.data.mixing import BatchMixer, CopyPaste, ObjectBank, cutmix, mixed_loss, mixup
from segcore.errors import ConfigError


def batch(multilabel: bool = False):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 16, 16, generator=g)
    if multilabel:
        masks = (torch.rand(4, 2, 16, 16, generator=g) > 0.5).float()
    else:
        masks = torch.randint(0, 3, (4, 16, 16), generator=g)
        masks[:, 0] = 255
    return images, masks


@pytest.mark.parametrize("multilabel", [False, True])
def test_cutmix_exact_mask(multilabel: bool) -> None:
    images, masks = batch(multilabel)
    out = cutmix(images, masks, alpha=1.0, rng=np.random.default_rng(1))
    assert out.images.shape == images.shape and out.mask_a.shape == masks.shape
    assert out.lam == 1.0 and out.mask_b is None
    assert set(out.mask_a.unique().tolist()) <= set(masks.unique().tolist())
    # every pixel comes from one source image, with its own label
    changed = (out.images != images).any(dim=1)
    if multilabel:
        assert (out.mask_a[~changed[:, None].expand_as(masks)] == masks[~changed[:, None].expand_as(masks)]).all()
    else:
        assert (out.mask_a[~changed] == masks[~changed]).all()


def test_mixup_weights() -> None:
    images, masks = batch()
    out = mixup(images, masks, alpha=0.4, rng=np.random.default_rng(2))
    assert 0.0 <= out.lam <= 1.0 and out.images.shape == images.shape
    assert out.mask_a is masks and out.mask_b.shape == masks.shape and out.mask_b.dtype == masks.dtype
    calls = []

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls.append(target)
        return torch.tensor(1.0 if target is masks else 3.0)

    value = mixed_loss(loss, images, out)
    assert value.item() == pytest.approx(out.lam * 1.0 + (1 - out.lam) * 3.0)


def test_batch_mixer_probabilities() -> None:
    images, masks = batch()
    off = BatchMixer(MixingConfig(), seed=0)
    assert not off.enabled and off(images, masks).images is images
    on = BatchMixer(MixingConfig(cutmix_p=1.0), seed=0)
    out = on(images, masks)
    assert on.enabled and out.lam == 1.0 and not torch.equal(out.images, images)
    mix = BatchMixer(MixingConfig(mixup_p=1.0), seed=0)(images, masks)
    assert mix.lam < 1.0


def test_object_bank_rarest_third_and_paste(coco_source) -> None:
    ds = open_dataset(coco_source, classes=None, task="multiclass")
    bank = ObjectBank.build(ds, ds.ids, bank_size=20, min_area=4)
    assert bank.classes and 0 not in bank.classes and len(bank) > 0
    assert all(o.cls in bank.classes and o.region.any() for o in bank.objects)
    paste = CopyPaste(bank, p=1.0, max_objects=3)
    image, mask = ds.load_image(ds.ids[0]), ds.load_mask(ds.ids[0])
    rng = np.random.default_rng(0)
    out_img, out_mask = paste(image, mask, rng)
    assert out_img.shape == image.shape and out_mask.shape == mask.shape and out_mask.dtype == np.uint8
    assert set(np.unique(out_mask)) <= set(range(ds.num_classes)) | {255}
    assert (out_mask != mask).any() and (image == ds.load_image(ds.ids[0])).all()  # inputs untouched
    assert np.isin(out_mask[out_mask != mask], bank.classes).all()


def test_object_bank_named_classes_and_errors(coco_source) -> None:
    ds = open_dataset(coco_source, classes=None, task="multiclass")
    bank = ObjectBank.build(ds, ds.ids, classes=[ds.classes[1]], min_area=4)
    assert bank.classes == [1] and {o.cls for o in bank.objects} == {1}
    with pytest.raises(ConfigError, match="not among the classes"):
        ObjectBank.build(ds, ds.ids, classes=["unicorn"])


def test_copy_paste_multilabel(multilabel_source) -> None:
    ds = open_dataset(multilabel_source, classes=["bone", "joint", "implant"], task="multilabel")
    cp = CopyPaste.from_config(ds, ds.ids, MixingConfig(copy_paste_p=1.0, copy_paste_classes=["implant"]))
    assert cp is not None
    image, mask = ds.load_image(ds.ids[0]), ds.load_mask(ds.ids[0])
    out_img, out = cp(image, mask, np.random.default_rng(0))
    assert out.shape == mask.shape and set(np.unique(out)) <= {0, 1}
    assert (out_img != image).any() and (out != mask).any()  # something was pasted
    # on an empty canvas every pasted pixel is new: the implant count grows from 0, and the
    # image changes only where the mask now says implant (pasted pixels carry their own labels)
    blank_img, blank = np.zeros_like(image), np.zeros_like(mask)
    pasted_img, pasted = cp(blank_img, blank, np.random.default_rng(0))
    changed = (pasted_img != blank_img).any(axis=-1)
    assert pasted[2].sum() > 0 and changed.any()
    assert pasted[2][changed].all()
    assert not blank.any() and not blank_img.any()  # inputs untouched
    assert CopyPaste.from_config(ds, ds.ids, MixingConfig()) is None


def test_batch_mixer_unpacks_and_follows_numpy_seed() -> None:
    images, masks = batch()
    mixer = BatchMixer(MixingConfig(mixup_p=1.0), task="multiclass", ignore_index=255)
    np.random.seed(7)
    first = mixer(images, masks)
    np.random.seed(7)
    imgs, mask_a, mask_b, lam = mixer(images, masks)
    assert torch.equal(imgs, first.images) and lam == first.lam and torch.equal(mask_b, first.mask_b)
    none = BatchMixer(MixingConfig())(images, masks)
    assert tuple(none)[2] is None and tuple(none)[3] == 1.0
    with pytest.raises(ValueError, match=r"multilabel masks must be \[B, K, H, W\]"):
        BatchMixer(MixingConfig(), task="multilabel")(images, masks)
