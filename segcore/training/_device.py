"""Device, precision and memory-format choices, decided once per run."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from segcore.config import Precision, TrainingConfig
from segcore.errors import ConfigError

__all__ = ["Runtime", "resolve_runtime"]


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    autocast_dtype: torch.dtype | None  # None = fp32
    channels_last: bool
    use_scaler: bool  # fp16 on CUDA needs loss scaling

    @property
    def precision_name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def _cpu_has_fast_bf16() -> bool:
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # older torch
        return False


def resolve_runtime(cfg: TrainingConfig, device: str | None = None) -> Runtime:
    """Pick the device, autocast dtype and memory format for a run.

    ``precision: auto`` means bf16 autocast on CUDA devices that support it and on CPUs with native
    bf16 (AVX512-BF16 or AMX), fp16 with loss scaling on older CUDA devices, fp32 elsewhere.
    ``channels_last: None`` means on for CPU and CUDA (both run convolutions faster in NHWC).
    """
    name = device or cfg.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"training.device {name!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"training.device is {name!r} but no CUDA device is visible; use 'auto' or 'cpu'")

    prec = cfg.precision
    if prec is Precision.AUTO:
        if dev.type == "cuda":
            prec = Precision.BF16 if torch.cuda.is_bf16_supported() else Precision.FP16
        elif dev.type == "cpu" and _cpu_has_fast_bf16():
            prec = Precision.BF16
        else:
            prec = Precision.FP32
    if prec is Precision.FP16 and dev.type != "cuda":
        raise ConfigError("training.precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    dtype = {Precision.FP32: None, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}[prec]
    channels_last = cfg.channels_last if cfg.channels_last is not None else dev.type in {"cpu", "cuda"}
    return Runtime(dev, dtype, channels_last, use_scaler=prec is Precision.FP16)
