"""How a run's device, autocast dtype and memory format are chosen (``precision``/``channels_last``)."""

from __future__ import annotations

import pytest
import torch

from segcore.config import TrainingConfig
from segcore.errors import ConfigError
from segcore.training._device import resolve_runtime


def _cpu_bf16(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    """Pretend the CPU has (or lacks) native bf16 (AVX512-BF16 / AMX)."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)


def test_auto_on_a_cpu_without_native_bf16_is_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu_bf16(monkeypatch, False)
    rt = resolve_runtime(TrainingConfig(device="cpu"))
    assert rt.device.type == "cpu" and rt.autocast_dtype is None and rt.channels_last is True


def test_auto_on_a_cpu_with_native_bf16_is_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu_bf16(monkeypatch, True)
    rt = resolve_runtime(TrainingConfig(device="cpu"))
    assert rt.autocast_dtype is torch.bfloat16 and rt.channels_last is True
    assert resolve_runtime(TrainingConfig(device="cpu", precision="fp32")).autocast_dtype is None


def test_explicit_choices_win(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu_bf16(monkeypatch, False)
    assert resolve_runtime(TrainingConfig(device="cpu", channels_last=False)).channels_last is False
    rt = resolve_runtime(TrainingConfig(device="cpu", precision="bf16", channels_last=False))
    assert rt.autocast_dtype is torch.bfloat16 and rt.channels_last is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the messages given when no CUDA device is visible")
def test_cuda_only_settings_are_refused_on_the_cpu_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device; use bf16 or fp32"):
        resolve_runtime(TrainingConfig(device="cpu", precision="fp16"))
    with pytest.raises(ConfigError, match="no CUDA device is visible; use 'auto' or 'cpu'"):
        resolve_runtime(TrainingConfig(device="cuda"))
    with pytest.raises(ConfigError, match="is not a device"):
        resolve_runtime(TrainingConfig(device="tpu:0"))
