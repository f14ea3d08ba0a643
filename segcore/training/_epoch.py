"""The parts of ``fit``: one training epoch, one evaluation, BatchNorm statistics for averaged weights.

The training step never waits for the device: the loss, the image count and the first step whose
loss was not finite accumulate on the device, and the host reads them at sync points only. On the
CPU that is every step (reading costs nothing there); on CUDA at most every
:data:`SYNC_INTERVAL_S` seconds and at the end of the epoch. Each sync point reports a
:class:`~segcore.training.callbacks.StepReport` (rank 0) and checks the loss.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from segcore.config import ExperimentConfig
from segcore.errors import TrainingError
from segcore.training._device import Runtime
from segcore.training.averaging import WeightAverage
from segcore.training.callbacks import StepReport, dispatch
from segcore.training.distributed import Dist

__all__ = ["Trainer", "EpochStats", "train_one_epoch", "evaluate", "update_bn", "SYNC_INTERVAL_S"]

# On CUDA the host reads the loss (progress, NaN check, cancellation) at most this often.
SYNC_INTERVAL_S = 1.0


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``[..., H, W]`` at the bottom/right to multiples of ``multiple``; returns the original size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "constant")
    return x, (h, w)


@dataclass
class Trainer:
    """What a training step touches.

    Attributes:
        model: The plain model (its weights are what checkpoints save).
        forward: What the step calls: ``model``, its DDP wrapper, or a compiled version of either.
        ddp: The DDP wrapper when the run has several ranks (for ``no_sync`` while accumulating).
    """

    cfg: ExperimentConfig
    rt: Runtime
    dist: Dist
    model: torch.nn.Module
    forward: Any
    ddp: torch.nn.parallel.DistributedDataParallel | None
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    mixer: Any
    ema: WeightAverage | None = None
    swa: WeightAverage | None = None


@dataclass(frozen=True)
class EpochStats:
    """One epoch's training figures, over every rank.

    ``seconds`` is the training loop's time up to its last sync, without the first wait for the
    loader's workers to start (``loader_start_s``) and without validation or checkpoints.
    """

    loss: float
    images: int
    seconds: float
    loader_start_s: float
    warmup_s: float | None


def _nonfinite_error(epoch: int, step: int, cfg: ExperimentConfig) -> TrainingError:
    return TrainingError(
        f"the loss became non-finite (NaN or inf) at epoch {epoch}, step {step}; lower optimizer.lr "
        f"(now {cfg.optimizer.lr:g}), set training.grad_clip, check the data for NaN values, or train in fp32"
    )


def train_one_epoch(
    t: Trainer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    epoch: int,
    steps: int,
    callbacks: Sequence[Any] = (),
    first_epoch_of_process: bool = False,
) -> EpochStats:
    """Train ``steps`` steps over ``batches`` (device tensors from a :class:`DeviceFeed`).

    Raises:
        TrainingError: the loss was NaN/inf (with the epoch and the first bad step).
        StopTraining: a callback asked to stop.
    """
    tc = t.cfg.training
    dev = t.rt.device
    t.forward.train()
    t.model.train()
    loss_sum = torch.zeros((), dtype=torch.float32, device=dev)
    window_sum = torch.zeros((), dtype=torch.float32, device=dev)
    first_bad = torch.zeros((), dtype=torch.long, device=dev)
    seen = window_steps = 0
    sync_each_step = dev.type != "cuda"
    warmup_s: float | None = None
    loader_start_s = 0.0
    t0 = last_sync = time.perf_counter()
    t.optimizer.zero_grad(set_to_none=True)
    step = 0
    for step, (images, masks) in enumerate(batches, start=1):
        if step == 1 and first_epoch_of_process:
            loader_start_s = time.perf_counter() - t0
            t0 = last_sync = time.perf_counter()
        mixed = t.mixer(images, masks)
        images = mixed.images
        if t.rt.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        boundary = step % tc.accumulate == 0 or step == steps
        quiet = t.ddp.no_sync() if t.ddp is not None and not boundary else contextlib.nullcontext()
        with quiet:
            with t.rt.autocast():
                logits = t.forward(images)
            logits = logits.float()
            loss = t.loss_fn(logits, mixed.mask_a)
            if mixed.mask_b is not None:
                loss = mixed.lam * loss + (1 - mixed.lam) * t.loss_fn(logits, mixed.mask_b)
            t.scaler.scale(loss / tc.accumulate).backward()
        if boundary:
            if tc.grad_clip:
                t.scaler.unscale_(t.optimizer)
                torch.nn.utils.clip_grad_norm_(t.model.parameters(), tc.grad_clip)
            t.scaler.step(t.optimizer)
            t.scaler.update()
            t.optimizer.zero_grad(set_to_none=True)
            t.scheduler.step_batch()
            if t.ema is not None:
                t.ema.update(t.model)
        value = loss.detach()
        first_bad.masked_fill_(~torch.isfinite(value) & (first_bad == 0), step)
        bs = images.shape[0]
        loss_sum += value * bs
        window_sum += value
        seen += bs
        window_steps += 1
        now = time.perf_counter()
        if step == 1 and tc.compile:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            warmup_s = time.perf_counter() - t0
        if sync_each_step or step >= steps or now - last_sync >= SYNC_INTERVAL_S:
            bad = int(first_bad)  # the sync point: waits for the device
            if bad:
                raise _nonfinite_error(epoch, bad, t.cfg)
            last_sync = time.perf_counter()
            if t.dist.is_main:
                report = StepReport(epoch, step, steps, float(window_sum) / window_steps,
                                    seen * t.dist.world / max(last_sync - t0, 1e-9), t.optimizer.param_groups[0]["lr"])
                dispatch(callbacks, "on_step", report)
            window_sum.zero_()
            window_steps = 0
        if step >= steps:
            break
    bad = int(first_bad)
    if bad:
        raise _nonfinite_error(epoch, bad, t.cfg)
    seconds = time.perf_counter() - t0
    total_loss, total_seen = t.dist.all_reduce_sum([loss_sum, float(seen)])
    return EpochStats(
        loss=total_loss / max(total_seen, 1.0),
        images=int(total_seen),
        seconds=seconds,
        loader_start_s=loader_start_s,
        warmup_s=warmup_s,
    )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    cfg: ExperimentConfig,
    rt: Runtime,
    loss_fn: torch.nn.Module | None = None,
    dist_ctx: Dist | None = None,
) -> dict[str, Any]:
    """Validation metrics of ``model`` (every metric kind, per class, and the loss when given).

    Images are padded to the model's input multiple and the logits cropped back, so any size is
    scored at its own resolution. With several ranks, each scores its own shard and the per-class
    counts are summed over ranks before the metrics are computed.
    """
    from segcore.metrics import MetricAccumulator, plugin_metrics
    from segcore.models import model_input_multiple

    model.eval()
    acc = MetricAccumulator(
        task=cfg.data.task,
        num_classes=cfg.data.num_classes,
        ignore_index=cfg.data.ignore_index,
        threshold=cfg.evaluation.threshold,
        device=rt.device,
    )
    multiple = model_input_multiple(cfg.model)
    loss_sum = torch.zeros((), dtype=torch.float64, device=rt.device)
    n = 0
    for images, masks in batches:
        padded, (h, w) = pad_to_multiple(images, multiple)
        with rt.autocast():
            logits = model(padded)
        logits = logits[..., :h, :w].float()
        if loss_fn is not None:
            loss_sum += loss_fn(logits, masks).double() * images.shape[0]
            n += images.shape[0]
        acc.update(logits, masks)
    dist_ctx = dist_ctx or Dist(device=rt.device)
    if dist_ctx.active:
        acc.all_reduce()
    metrics = acc.compute()
    metrics.update(plugin_metrics(acc))  # installed metric plugins, from the same counts
    if loss_fn is not None:
        total, count = dist_ctx.all_reduce_sum([loss_sum, float(n)])
        if count:
            metrics["loss"] = total / count
    return metrics


@torch.no_grad()
def update_bn(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], rt: Runtime,
              max_steps: int, dist_ctx: Dist) -> None:
    """Recompute BatchNorm statistics of averaged weights (as torch's ``update_bn``, on our batches).

    With several ranks the statistics are averaged over ranks, so every rank evaluates the same model.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for step, (images, _) in enumerate(batches, start=1):
        if step > max_steps:
            break
        with rt.autocast():
            model(images)
    for m, mom in momenta.items():
        m.momentum = mom
    dist_ctx.average_buffers(model)
