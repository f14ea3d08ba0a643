"""predict: padding, TTA exactness, sliding windows, checkpoints, predict_to_store."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from segcore.errors import ConfigError
from segcore.inference import SlidingWindow, TTAPolicy, predict, predict_checkpoint, predict_to_store
from segcore.inference.tta import View, augment, deaugment

torch.set_num_threads(1)


def _pointwise(classes: int = 4, seed: int = 0) -> nn.Module:
    """A 1x1 conv: equivariant to flips, rotations and (on constant images) scales."""
    torch.manual_seed(seed)
    return nn.Conv2d(3, classes, kernel_size=1)


class _Spatial(nn.Module):
    """Not equivariant (3x3 conv + a position-dependent term), to see TTA change the output."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(0, 1, x.shape[-1], device=x.device)
        return self.conv(x) + ramp


def _images(n: int = 2, h: int = 48, w: int = 40, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _reference(model: nn.Module, image: np.ndarray, task: str = "multiclass") -> np.ndarray:
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255 - mean) / std
    with torch.no_grad():
        y = model(x)
    return (torch.softmax(y, 1) if task == "multiclass" else torch.sigmoid(y))[0].numpy()


@pytest.mark.parametrize(
    "view",
    [View(hflip=True), View(vflip=True), View(k=1), View(k=2), View(k=3), View(hflip=True, vflip=True, k=1)],
)
def test_each_inverse_transform_is_exact(view):
    x = torch.arange(2 * 3 * 6 * 10, dtype=torch.float32).view(2, 3, 6, 10)
    assert torch.equal(deaugment(augment(x, view), view), x)


def test_policy_views_and_json_round_trip():
    p = TTAPolicy(flips=["h", "v"], scales=[0.75, 1.0, 1.25], merge="gmean")
    assert p.num_views == 12 == len(p.views()) == len(set(p.views()))
    assert p.views()[0] == View()
    assert TTAPolicy.model_validate_json(p.model_dump_json()) == p
    assert TTAPolicy.d4().num_views == 8 and TTAPolicy().is_identity
    with pytest.raises(ValueError):
        TTAPolicy(rotations=[45])


def test_plain_prediction_matches_reference_and_crops_padding():
    model = _Spatial()
    images = _images(2, 45, 37)  # not multiples of 32: padded then cropped
    out = predict(model, images, task="multiclass", size_multiple=1)
    for im, p in zip(images, out):
        assert p.shape == (3, 45, 37) and p.dtype == np.float32
        np.testing.assert_allclose(p, _reference(model, im), atol=1e-5)
        np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)
    padded = predict(model, images[0], task="multiclass")
    assert padded.shape == (3, 45, 37)


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
@pytest.mark.parametrize("merge", ["mean", "gmean"])
def test_tta_of_equivariant_model_equals_plain(task, merge):
    model = _pointwise()
    images = _images(3, 40, 56)  # not square: rotated views take another shape
    plain = predict(model, images, task=task)
    policy = TTAPolicy(flips=["h", "v"], rotations=[0, 90, 180, 270], merge=merge)
    tta = predict(model, images, task=task, tta=policy, batch_size=5)
    for a, b in zip(plain, tta):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_scales_on_constant_image_equal_plain():
    model = _pointwise()
    image = np.full((64, 64, 3), (10, 200, 90), np.uint8)
    plain = predict(model, image)
    scaled = predict(model, image, tta=TTAPolicy(flips=["h"], scales=[0.75, 1.0, 1.25]))
    np.testing.assert_allclose(plain, scaled, atol=1e-5)


def test_tta_changes_a_non_equivariant_model_and_is_mean_of_views():
    model = _Spatial()
    image = _images(1, 32, 32)[0]
    plain = predict(model, image, size_multiple=1)
    flipped = predict(model, np.ascontiguousarray(image[:, ::-1]), size_multiple=1)[:, :, ::-1]
    tta = predict(model, image, tta=TTAPolicy(flips=["h"]), size_multiple=1)
    assert np.abs(tta - plain).max() > 1e-3
    np.testing.assert_allclose(tta, (plain + flipped) / 2, atol=1e-5)


def test_batching_does_not_change_results_and_mixed_sizes():
    model = _Spatial()
    images = _images(3, 32, 32) + _images(2, 40, 24, seed=5)
    a = predict(model, images, tta=TTAPolicy.flip(), batch_size=1)
    b = predict(model, images, tta=TTAPolicy.flip(), batch_size=16)
    assert [p.shape[1:] for p in b] == [(32, 32)] * 3 + [(40, 24)] * 2
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-5)


def test_input_size_resizes_and_restores():
    model = _pointwise()
    out = predict(model, _images(1, 50, 70)[0], input_size=(32, 32), normalize="unit")
    assert out.shape == (4, 50, 70)
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)


def test_sliding_window_of_one_window_equals_plain():
    model = _Spatial()
    image = _images(1, 64, 64)[0]
    plain = predict(model, image)
    win = predict(model, image, window=SlidingWindow(size=(64, 64), overlap=0.5))
    np.testing.assert_allclose(win, plain, atol=1e-6)


@pytest.mark.parametrize("blend", ["gaussian", "linear", "constant"])
def test_overlapping_windows_of_equivariant_model_equal_plain(blend):
    model = _pointwise()
    image = _images(1, 96, 80)[0]
    plain = predict(model, image, task="multilabel")
    win = SlidingWindow(size=(32, 32), overlap=0.5, blend=blend)
    assert len(win.positions(96, 80)) > 4
    out = predict(model, image, task="multilabel", window=win, tta=TTAPolicy.d4(), batch_size=6)
    np.testing.assert_allclose(out, plain, atol=1e-5)


def test_sliding_window_memmap_accumulator_when_over_budget():
    model = _pointwise()
    image = _images(1, 64, 96)[0]
    plain = predict(model, image)
    out = predict(model, image, window=SlidingWindow(size=(32, 32), overlap=0.25, memory_budget_mb=0.01))
    assert isinstance(out, np.memmap)
    np.testing.assert_allclose(np.asarray(out), plain, atol=1e-5)


def test_bf16_autocast_on_cpu_stays_close():
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, classes=3)
    images = _images(1, 64, 64)
    ref = predict(model, images, tta=TTAPolicy.flip())[0]
    low = predict(model, images, tta=TTAPolicy.flip(), precision="bf16", channels_last=True)[0]
    assert np.abs(ref - low).max() < 0.05
    assert model.training  # the caller's mode is restored
    fused = predict(model, images, tta=TTAPolicy.flip(), fuse_batchnorm=True)[0]
    np.testing.assert_allclose(fused, ref, atol=1e-4)


def test_fuse_batchnorm_falls_back_for_untraceable_models():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return self.conv(x) if x.sum() > -1e9 else -self.conv(x)  # data-dependent: fx cannot trace

    model = Branchy()
    image = _images(1, 32, 32)[0]
    np.testing.assert_allclose(predict(model, image, fuse_batchnorm=True), predict(model, image), atol=1e-6)


def test_bad_settings_raise_config_error():
    model = _pointwise()
    with pytest.raises(ConfigError, match="task"):
        predict(model, _images(1), task="binary")
    with pytest.raises(ConfigError, match="normalize"):
        predict(model, _images(1), normalize="imagenet21k")
    with pytest.raises(ConfigError, match="fp16"):
        predict(model, _images(1), precision="fp16")


def _fake_checkpoint_module(monkeypatch, model: nn.Module, *, normalize: str = "unit", task: str = "multiclass"):
    from segcore.config import ExperimentConfig

    loss = "bce" if task == "multilabel" else "ce"
    cfg = ExperimentConfig.model_validate(
        {
            "data": {"source": {"format": "mask_folder", "root": "/x"}, "classes": ["a", "b", "c", "d"], "task": task},
            "augmentation": {"normalize": normalize},
            "loss": loss,
        }
    )
    calls = []

    def load_checkpoint(path, device="cpu"):
        calls.append((str(path), str(device)))
        return types.SimpleNamespace(model=model.eval(), config=cfg, metrics={})

    monkeypatch.setitem(sys.modules, "segcore.checkpoint", types.SimpleNamespace(load_checkpoint=load_checkpoint))
    return calls


def test_predict_checkpoint_uses_config_normalisation(monkeypatch, tmp_path):
    model = _pointwise()
    calls = _fake_checkpoint_module(monkeypatch, model, normalize="unit")
    image = _images(1, 32, 32)[0]
    out = predict_checkpoint(tmp_path / "ckpt", image, precision="fp32")
    np.testing.assert_allclose(out, predict(model, image, normalize="unit"), atol=1e-6)
    assert calls == [(str(tmp_path / "ckpt"), "cpu")]


def test_predict_to_store_from_model_and_checkpoint(monkeypatch, tmp_path):
    model = _pointwise()
    images = {f"im{i}": im for i, im in enumerate(_images(3, 32, 48))}
    store = predict_to_store(
        model, images.__getitem__, list(images), tmp_path / "s", classes=list("abcd"), task="multilabel",
        tta=TTAPolicy.flip(), batch_size=4, precision="fp32",
    )
    assert store.ids == list(images) and store.task == "multilabel"
    assert store.tta == TTAPolicy.flip().model_dump(mode="json")
    for i, im in images.items():
        np.testing.assert_allclose(store.read(i), predict(model, im, task="multilabel"), atol=1 / 255)
    _fake_checkpoint_module(monkeypatch, model, normalize="imagenet")
    ck = predict_to_store(tmp_path / "ck", images.__getitem__, ["im0"], tmp_path / "s2", dtype="float16")
    assert ck.classes == list("abcd") and ck.source == str(tmp_path / "ck") and ck.dtype == "float16"
    with pytest.raises(ConfigError, match="classes"):
        predict_to_store(model, images.__getitem__, ["im0"], tmp_path / "s3")


class _Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = _pointwise(3)
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(int(x.shape[0]))
        return self.conv(x)


def test_views_of_one_image_share_a_forward_pass():
    model = _Counting()
    predict(model, _images(2, 32, 32), tta=TTAPolicy.d4(), batch_size=8)
    assert model.batches == [8, 8]  # one pass per image, all 8 views together
    model.batches.clear()
    predict(model, _images(1, 32, 64), tta=TTAPolicy.d4(), batch_size=8)
    assert sorted(model.batches) == [4, 4]  # non-square: rotated views have another shape
    model.batches.clear()
    predict(model, _images(4, 32, 32), tta=TTAPolicy.flip(), batch_size=8)
    assert model.batches == [8, 8]  # 2 images x 4 views per pass


def test_iter_predict_consumes_images_lazily():
    from segcore.inference import iter_predict

    consumed = []

    def images():
        for i, im in enumerate(_images(6, 32, 32)):
            consumed.append(i)
            yield im

    it = iter_predict(_pointwise(), images(), batch_size=2)
    first = next(it)
    assert first.shape == (4, 32, 32) and len(consumed) <= 3  # one batch (+1 look-ahead), not all six
    assert len(list(it)) == 5


def test_unet_with_windows_and_tta_gives_probabilities():
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, classes=3)
    image = _images(1, 96, 80)[0]
    out = predict(model, image, window=SlidingWindow(size=(64, 64), overlap=0.5), tta=TTAPolicy.flip(),
                  task="multiclass", batch_size=8)
    assert out.shape == (3, 96, 80)
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)
    multilabel = predict(model, image, window=SlidingWindow(size=(64, 64), blend="linear"), task="multilabel")
    assert multilabel.min() >= 0 and multilabel.max() <= 1


def test_uint16_images_scale_like_uint8():
    model = _pointwise()
    image8 = _images(1, 32, 32)[0]
    image16 = image8.astype(np.uint16) * 257  # 255 -> 65535
    np.testing.assert_allclose(predict(model, image16), predict(model, image8), atol=1e-5)


def test_predict_to_store_with_windows_on_a_reduced_grid(tmp_path):
    model = _pointwise(5)
    image = _images(1, 128, 96)[0]
    store = predict_to_store(
        model, lambda _: image, ["xray"], tmp_path / "s", classes=list("abcde"), task="multilabel",
        window=SlidingWindow(size=(64, 64), overlap=0.5, memory_budget_mb=0.05), max_side=48, precision="fp32",
    )
    assert store.stored_size("xray") == (48, 36) and store.size("xray") == (128, 96)
    from segcore.inference._store_entry import resize_chw

    small = resize_chw(predict(model, image, task="multilabel"), (48, 36), area=True)
    np.testing.assert_allclose(store.read("xray", resolution="stored"), small, atol=0.5 / 255 + 1e-4)


def test_predict_checkpoint_with_a_real_checkpoint_folder(tmp_path):
    from segcore.checkpoint import save_checkpoint
    from segcore.config import ExperimentConfig
    from segcore.models import build_model

    cfg = ExperimentConfig.model_validate(
        {
            "data": {"source": {"format": "mask_folder", "root": "/x"}, "classes": ["bg", "a"], "image_size": [32, 32]},
            "model": {"arch": "Unet", "encoder": "resnet18"},
            "augmentation": {"normalize": "unit"},
        }
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, 2).eval()
    save_checkpoint(tmp_path / "ckpt", model=model, config=cfg, metrics={"miou": 0.5})
    image = _images(1, 48, 40)[0]
    out = predict_checkpoint(tmp_path / "ckpt", image, precision="fp32")
    expected = predict(model, image, normalize="unit", input_size=(32, 32))
    assert out.shape == (2, 48, 40)  # resized to the config's image_size and back
    np.testing.assert_allclose(out, expected, atol=1e-5)
