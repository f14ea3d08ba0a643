"""The torch-free catalog and the runtime registries never drift apart."""

from __future__ import annotations

import subprocess
import sys

import segmentation_models_pytorch as smp

from segcore import catalog
from segcore._encoder_names import SMP_ENCODERS
from segcore.losses import LOSSES
from segcore.models import ARCHITECTURES
from segcore.training.optim import OPTIMIZERS, SCHEDULERS


def test_architectures_match() -> None:
    assert set(ARCHITECTURES.names()) == set(catalog.ARCHITECTURES)


def test_losses_match() -> None:
    assert set(LOSSES.names()) == set(catalog.LOSSES)


def test_optimizers_match() -> None:
    assert set(OPTIMIZERS.names()) == set(catalog.OPTIMIZERS)


def test_schedulers_match() -> None:
    assert set(SCHEDULERS.names()) == set(catalog.SCHEDULERS)


def test_static_encoder_names_match_smp() -> None:
    assert sorted(SMP_ENCODERS) == sorted(smp.encoders.get_encoder_names())
    assert len(SMP_ENCODERS) == len(set(SMP_ENCODERS))


def test_vit_only_architectures_are_registered() -> None:
    assert catalog.VIT_ONLY_ARCHITECTURES <= set(ARCHITECTURES.names())


def test_config_and_catalog_import_without_torch() -> None:
    code = (
        "import sys, json; import segcore.config, segcore.catalog; "
        "segcore.catalog.catalog(); segcore.catalog.is_known_encoder('resnet18'); "
        "print(json.dumps(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
