"""Contract test over the architecture registry: every name builds, runs forward and backward."""

from __future__ import annotations

import pytest
import torch

from segcore import catalog
from segcore.config import ModelConfig
from segcore.models import ARCHITECTURES, build_model, model_input_multiple

NUM_CLASSES = 3

torch.set_num_threads(1)


def _config(arch: str) -> ModelConfig:
    if arch in catalog.VIT_ONLY_ARCHITECTURES:
        # the smallest ViT; narrow decoder keeps the test fast
        return ModelConfig(
            arch=arch,
            encoder="tu-vit_tiny_patch16_224",
            params={"decoder_intermediate_channels": [32, 64, 64, 64], "decoder_fusion_channels": 32},
        )
    return ModelConfig(arch=arch, encoder="resnet18")


def _size(cfg: ModelConfig) -> int:
    multiple = model_input_multiple(cfg)
    return max(64, multiple) // multiple * multiple


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_forward_backward(arch: str) -> None:
    torch.manual_seed(0)
    cfg = _config(arch)
    model = build_model(cfg, NUM_CLASSES)
    size = _size(cfg)
    x = torch.randn(2, 3, size, size)
    logits = model(x)
    assert logits.shape == (2, NUM_CLASSES, size, size)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_registry_descriptions_come_from_catalog() -> None:
    for entry in ARCHITECTURES:
        assert entry.description == catalog.ARCHITECTURES[entry.name]


@pytest.mark.parametrize(
    ("arch", "params", "expected"),
    [
        ("Unet", {}, 32),
        ("FPN", {}, 32),
        ("Unet", {"encoder_depth": 3, "decoder_channels": [64, 32, 16]}, 32),
        ("PAN", {}, 128),
        ("PAN", {"encoder_output_stride": 32}, 256),
    ],
)
def test_input_multiple(arch: str, params: dict, expected: int) -> None:
    assert model_input_multiple(ModelConfig(arch=arch, encoder="resnet18", params=params)) == expected


def test_dpt_multiple_is_patch_size() -> None:
    assert model_input_multiple(ModelConfig(arch="DPT", encoder="tu-vit_tiny_patch16_224")) == 16
