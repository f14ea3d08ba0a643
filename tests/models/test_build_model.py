"""build_model's errors, params pass-through and local encoder weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from segcore.config import ModelConfig
from segcore.errors import CheckpointError, ConfigError
from segcore.models import build_model

torch.set_num_threads(1)


def test_output_is_logits_and_params_pass_through() -> None:
    cfg = ModelConfig(arch="Unet", encoder="resnet18", params={"decoder_channels": [32, 16, 16, 8, 8]})
    model = build_model(cfg, num_classes=4)
    assert model.segmentation_head[0].in_channels == 8
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 4, 64, 64)
    assert out.min() < 0 or out.max() > 1  # raw logits, no activation


def test_bad_param_names_arch_and_argument() -> None:
    cfg = ModelConfig(arch="FPN", encoder="resnet18", params={"decoder_chanels": 64})
    with pytest.raises(ConfigError, match=r"FPN.*'decoder_chanels'"):
        build_model(cfg, 2)


def test_bad_param_value_names_arch() -> None:
    cfg = ModelConfig(arch="DeepLabV3", encoder="resnet18", params={"encoder_output_stride": 32})
    with pytest.raises(ConfigError, match="DeepLabV3"):
        build_model(cfg, 2)


def test_bad_timm_kwarg_names_argument() -> None:
    cfg = ModelConfig(arch="Unet", encoder="tu-resnet18", params={"no_such_arg": 1})
    with pytest.raises(ConfigError, match=r"Unet.*no_such_arg"):
        build_model(cfg, 2)


def test_timm_kwargs_reach_the_encoder() -> None:
    cfg = ModelConfig(arch="Unet", encoder="tu-resnet18", params={"drop_path_rate": 0.1})
    model = build_model(cfg, 2)
    assert type(model.encoder.model.layer4[1].drop_path).__name__ == "DropPath"


@pytest.mark.parametrize("key", ["classes", "encoder_name", "in_channels"])
def test_reserved_params_rejected(key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_model(ModelConfig(arch="Unet", encoder="resnet18", params={key: 3}), 2)


def test_activation_rejected() -> None:
    with pytest.raises(ConfigError, match="logits"):
        build_model(ModelConfig(arch="Unet", encoder="resnet18", params={"activation": "softmax"}), 2)


def test_unknown_timm_model_suggests_list_models() -> None:
    cfg = ModelConfig(arch="Unet", encoder="tu-resnet_does_not_exist")
    with pytest.raises(ConfigError, match=r"resnet_does_not_exist.*timm\.list_models\('\*resnet\*'\)"):
        build_model(cfg, 2)


def test_in_channels() -> None:
    model = build_model(ModelConfig(arch="Unet", encoder="resnet18", in_channels=1), 2)
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 2, 64, 64)


def _encoder_state(prefix: str = "") -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    source = build_model(ModelConfig(arch="Unet", encoder="resnet18"), 2)
    return {prefix + k: v.clone() for k, v in source.encoder.state_dict().items()}


@pytest.mark.parametrize(("suffix", "prefix"), [(".safetensors", ""), (".pt", ""), (".pt", "encoder.")])
def test_encoder_weights_path_loads(tmp_path: Path, suffix: str, prefix: str) -> None:
    state = _encoder_state(prefix)
    path = tmp_path / f"enc{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    model = build_model(ModelConfig(arch="FPN", encoder="resnet18", encoder_weights_path=str(path)), 2)
    key = "layer1.0.conv1.weight"
    assert torch.equal(model.encoder.state_dict()[key], state[prefix + key])


def test_encoder_weights_path_missing_file(tmp_path: Path) -> None:
    cfg = ModelConfig(arch="Unet", encoder="resnet18", encoder_weights_path=str(tmp_path / "nope.pt"))
    with pytest.raises(ConfigError, match="does not exist"):
        build_model(cfg, 2)


def test_encoder_weights_path_key_mismatch_lists_keys(tmp_path: Path) -> None:
    state = _encoder_state()
    del state["layer4.1.bn2.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "enc.safetensors"
    save_file(state, str(path))
    cfg = ModelConfig(arch="Unet", encoder="resnet18", encoder_weights_path=str(path))
    with pytest.raises(CheckpointError, match=r"missing 1 keys: layer4\.1\.bn2\.weight.*unexpected 1 keys: extra\.weight"):
        build_model(cfg, 2)


def test_encoder_weights_path_wrong_network(tmp_path: Path) -> None:
    path = tmp_path / "enc.pt"
    torch.save(_encoder_state(), path)
    cfg = ModelConfig(arch="Unet", encoder="mobilenet_v2", encoder_weights_path=str(path))
    with pytest.raises(CheckpointError, match="missing"):
        build_model(cfg, 2)


def test_encoder_weights_path_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "enc.pt"
    path.write_bytes(b"not a torch file")
    cfg = ModelConfig(arch="Unet", encoder="resnet18", encoder_weights_path=str(path))
    with pytest.raises(CheckpointError, match="cannot read"):
        build_model(cfg, 2)


def test_unknown_weights_tag() -> None:
    cfg = ModelConfig(arch="Unet", encoder="resnet18", encoder_weights="no-such-tag")
    with pytest.raises(ConfigError, match="encoder_weights"):
        build_model(cfg, 2)


def test_weights_unreachable_points_to_local_file(monkeypatch: pytest.MonkeyPatch) -> None:
    import segmentation_models_pytorch.encoders as smp_encoders
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args: object, **kwargs: object) -> None:
        raise LocalEntryNotFoundError("offline and not in the local cache")

    monkeypatch.setattr(smp_encoders, "hf_hub_download", offline)
    cfg = ModelConfig(arch="Unet", encoder="resnet18", encoder_weights="imagenet")
    with pytest.raises(ConfigError, match="encoder_weights_path"):
        build_model(cfg, 2)
