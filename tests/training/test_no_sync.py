"""A training step never waits for the GPU: host syncs per epoch do not grow with the number of steps."""

from __future__ import annotations

import warnings

import pytest
import torch

from segcore.training import _epoch
from segcore.training._device import resolve_runtime
from segcore.training._epoch import train_one_epoch
from segcore.training.distributed import Dist
from segcore.training.loop import _build_trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (sync debug mode)")


def _syncs(tiny_config, steps: int) -> int:
    cfg = tiny_config(
        loss="0.6*ce + 0.4*jaccard",
        training={"epochs": 1, "batch_size": 4, "device": "cuda", "ema_decay": 0.99, "grad_clip": 1.0},
    )
    rt = resolve_runtime(cfg.training)
    trainer = _build_trainer(cfg, rt, Dist(device=rt.device), optimizer_steps=steps)
    gen = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(4, 3, 64, 64, generator=gen).to(rt.device).contiguous(memory_format=torch.channels_last),
         torch.randint(0, 4, (4, 64, 64), generator=gen).to(rt.device))
        for _ in range(steps)
    ]
    train_one_epoch(trainer, batches[:1], epoch=1, steps=1)  # warm-up: lazy CUDA state, optimizer state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train_one_epoch(trainer, batches, epoch=1, steps=steps)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def test_host_syncs_per_epoch_do_not_grow_with_steps(tiny_config, monkeypatch):
    monkeypatch.setattr(_epoch, "SYNC_INTERVAL_S", 1e9)  # only the end of the epoch reads the device
    few, many = _syncs(tiny_config, 2), _syncs(tiny_config, 10)
    assert many == few, (few, many)
    assert few <= 6
