"""One small representative of every encoder family the recipes use builds under a Unet."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import timm
import torch

from segcore import catalog
from segcore.config import ModelConfig
from segcore.models import build_model

torch.set_num_threads(1)


@pytest.mark.parametrize(("family", "encoder"), sorted(catalog.ENCODER_FAMILIES.items()))
def test_family_representative_builds(family: str, encoder: str) -> None:
    if encoder.startswith("tu-"):
        assert timm.is_model(encoder[3:]), f"{family}: timm has no model {encoder[3:]!r}"
    else:
        assert encoder in smp.encoders.get_encoder_names(), f"{family}: smp has no encoder {encoder!r}"
    model = build_model(ModelConfig(arch="Unet", encoder=encoder), num_classes=2).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, 2, 64, 64)
    assert torch.isfinite(logits).all()
