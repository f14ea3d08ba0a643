"""The pretrained-weights cache: read before any download, filled by a checked, atomic import.

Weights files are made in the test (random resnet18 encoders); nothing is downloaded: the caches
are offline, and HF_HUB_OFFLINE is set for the whole suite (tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import save_file

from segcore.config import ModelConfig
from segcore.errors import CheckpointError, ConfigError
from segcore.models import build_model
from segcore.weights import WeightsCache, import_weights

IMAGENET = ModelConfig(arch="Unet", encoder="resnet18", encoder_weights="imagenet")


def _encoder_state(seed: int, name: str = "resnet18", in_channels: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    encoder = smp.encoders.get_encoder(name, in_channels=in_channels, weights=None)
    return {k: v.clone() for k, v in encoder.state_dict().items()}


def test_a_model_with_imagenet_weights_loads_exactly_the_cached_file(tmp_path: Path) -> None:
    state = _encoder_state(seed=1)
    torch.save(state, tmp_path / "r18.pth")
    cache = WeightsCache(tmp_path / "cache", offline=True)
    cached = import_weights(tmp_path / "r18.pth", cache=cache, encoder="resnet18")
    assert cached == tmp_path / "cache" / "resnet18" / "imagenet.pth"
    model = build_model(IMAGENET, num_classes=2, weights_cache=cache)
    loaded = model.encoder.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert [(e.encoder, e.weights, e.path) for e in cache.entries()] == [("resnet18", "imagenet", cached)]


def test_safetensors_keyed_like_a_whole_model_replace_an_older_file(tmp_path: Path) -> None:
    cache = WeightsCache(tmp_path / "cache", offline=True)
    torch.save(_encoder_state(seed=1), tmp_path / "old.pth")
    import_weights(tmp_path / "old.pth", cache=cache, encoder="resnet18")
    state = _encoder_state(seed=2)
    save_file({f"encoder.{k}": v for k, v in state.items()}, str(tmp_path / "unet.safetensors"))
    cached = import_weights(tmp_path / "unet.safetensors", cache=cache, encoder="resnet18", weights="imagenet")
    assert cached.name == "imagenet.safetensors" and [e.path for e in cache.entries()] == [cached]
    loaded = build_model(IMAGENET, num_classes=2, weights_cache=cache).encoder.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_offline_without_a_cached_file_names_the_encoder_the_file_and_the_import_command(tmp_path: Path) -> None:
    cache = WeightsCache(tmp_path / "cache", offline=True)
    expected = tmp_path / "cache" / "resnet18" / "imagenet.safetensors"
    with pytest.raises(ConfigError) as exc:
        build_model(IMAGENET, num_classes=2, weights_cache=cache)
    message = str(exc.value)
    assert "no cached 'imagenet' weights for encoder 'resnet18', and downloads are off (offline mode)" in message
    assert f"expected the file {expected}" in message
    assert "segboard weights import FILE --encoder resnet18 --weights imagenet" in message


def test_a_failed_download_gives_the_same_error(tmp_path: Path) -> None:
    # downloads are allowed, but the hub is unreachable (HF_HUB_OFFLINE=1 in the test environment)
    cache = WeightsCache(tmp_path / "cache", offline=False)
    with pytest.raises(ConfigError, match=r"weights for encoder 'resnet18', and downloading them failed .*expected "
                                          r"the file .*resnet18/imagenet\.safetensors.*segboard weights import FILE"):
        build_model(IMAGENET, num_classes=2, weights_cache=cache)


def test_import_refuses_weights_whose_keys_or_shapes_do_not_fit_and_caches_nothing(tmp_path: Path) -> None:
    cache = WeightsCache(tmp_path / "cache")
    torch.save(_encoder_state(seed=0, name="resnet34"), tmp_path / "r34.pth")
    with pytest.raises(CheckpointError, match=r"do not match encoder ResNetEncoder: unexpected \d+ keys: layer1\.2"):
        import_weights(tmp_path / "r34.pth", cache=cache, encoder="resnet18")
    torch.save(_encoder_state(seed=0, in_channels=1), tmp_path / "grey.pth")
    with pytest.raises(CheckpointError, match=r"1 tensors of the wrong shape \(file vs model\): conv1\.weight "
                                              r"\(64, 1, 7, 7\) vs \(64, 3, 7, 7\)"):
        import_weights(tmp_path / "grey.pth", cache=cache, encoder="resnet18")
    assert cache.entries() == [] and [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
    # the same file fits the encoder it was made for
    assert import_weights(tmp_path / "grey.pth", cache=cache, encoder="resnet18", weights="grey", in_channels=1)


def test_bad_names_and_missing_files_are_refused(tmp_path: Path) -> None:
    cache = WeightsCache(tmp_path / "cache")
    torch.save(_encoder_state(seed=0), tmp_path / "r18.pth")
    with pytest.raises(ConfigError, match="unknown encoder 'resnet_18'"):
        import_weights(tmp_path / "r18.pth", cache=cache, encoder="resnet_18")
    with pytest.raises(ConfigError, match=r"weights tag '\.\./x' cannot name a cache file"):
        import_weights(tmp_path / "r18.pth", cache=cache, encoder="resnet18", weights="../x")
    with pytest.raises(ConfigError, match="weights file .*nope.pth does not exist"):
        import_weights(tmp_path / "nope.pth", cache=cache, encoder="resnet18")
    with pytest.raises(ConfigError, match="no weights cache folder is set"):
        import_weights(tmp_path / "r18.pth", cache=WeightsCache(), encoder="resnet18")


def test_the_cache_travels_as_plain_data() -> None:
    cache = WeightsCache(Path("/w"), offline=True)
    assert WeightsCache.from_dict(cache.to_dict()) == cache and WeightsCache.from_dict(None) == WeightsCache()
