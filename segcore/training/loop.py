"""``fit``: train one run (one config, one fold, one seed) into a run folder.

Example:
    >>> from segcore.config import load_config
    >>> from segcore.training import fit
    >>> result = fit(load_config("recipes/fast.yaml"), "runs/fast-0")  # doctest: +SKIP
    >>> result.best_metrics["miou"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from segcore import catalog
from segcore._allocator import retained_heap
from segcore.checkpoint import TRAIN_STATE_FILE, load_checkpoint, save_checkpoint
from segcore.config import ExperimentConfig, TaskType
from segcore.errors import CheckpointError, ConfigError, DatasetError, TrainingError
from segcore.io import atomic_write_text
from segcore.training._device import Runtime, resolve_runtime
from segcore.training.callbacks import EpochReport, FitResult, StepReport, StopTraining, dispatch

__all__ = ["fit", "evaluate_model"]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((state["python_version"], tuple(state["python"]), None))


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "constant")
    return x, (h, w)


class _Data:
    """The loaders and what the loop needs to know about the dataset."""

    def __init__(self, cfg: ExperimentConfig, dataset_root: Path | None) -> None:
        from segcore.data.dataset import TorchSegmentationDataset, make_eval_dataset, open_pseudo_labels
        from segcore.data.formats import open_dataset
        from segcore.data.mixing import CopyPaste
        from segcore.data.splits import split_ids
        from segcore.data.transforms import build_train_transform

        d = cfg.data
        self.dataset = open_dataset(
            d.source, classes=d.classes, task=d.task, ignore_index=d.ignore_index, dataset_root=dataset_root
        )
        self.fingerprint = self.dataset.fingerprint()
        if d.fingerprint and d.fingerprint != self.fingerprint:
            raise DatasetError(
                f"dataset {d.source.root} changed since the config was made (fingerprint {self.fingerprint} "
                f"!= {d.fingerprint}); register it again or clear data.fingerprint"
            )
        self.train_ids, self.val_ids = split_ids(self.dataset, d.split)
        if not self.train_ids:
            raise DatasetError(f"the split of {d.source.root} leaves no training images; check data.split")
        pseudo = (
            open_pseudo_labels(
                d.pseudo_labels, classes=d.classes, task=d.task, ignore_index=d.ignore_index,
                dataset_root=dataset_root,
            )
            if d.pseudo_labels
            else None
        )
        # seed=None: augmentations follow numpy's global state, which the loop reseeds every epoch,
        # so a resumed run repeats exactly the batches an uninterrupted one would have seen.
        self.train_ds = TorchSegmentationDataset(
            self.dataset,
            self.train_ids,
            build_train_transform(cfg),
            copy_paste=CopyPaste.from_config(self.dataset, self.train_ids, cfg.augmentation.mixing,
                                             seed=cfg.training.seed),
            pseudo=pseudo,
            cfg=cfg,
        )
        self.val_ds = make_eval_dataset(cfg, self.dataset, self.val_ids)
        self.fixed_size = d.crop_size is not None or d.image_size is not None


def _make_loader(ds: torch.utils.data.Dataset, *, batch_size: int, shuffle: bool, seed: int, workers: int,
                 drop_last: bool) -> DataLoader:
    gen = torch.Generator()
    gen.manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        drop_last=drop_last,
        generator=gen,
        persistent_workers=False,
        pin_memory=False,
        worker_init_fn=_worker_init if workers else None,
    )


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _to_device(batch: dict[str, Any], rt: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    images = batch["image"].to(rt.device, non_blocking=True)
    if rt.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, batch["mask"].to(rt.device, non_blocking=True)


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    loader: DataLoader,
    *,
    cfg: ExperimentConfig,
    rt: Runtime,
    loss_fn: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Validation metrics of ``model`` over ``loader`` (every metric kind + per-class + loss)."""
    from segcore.metrics import MetricAccumulator
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
    loss_sum, n = 0.0, 0
    for batch in loader:
        images, masks = _to_device(batch, rt)
        padded, (h, w) = _pad_to_multiple(images, multiple)
        with rt.autocast():
            logits = model(padded)
        logits = logits[..., :h, :w].float()
        if loss_fn is not None:
            loss_sum += float(loss_fn(logits, masks)) * images.shape[0]
            n += images.shape[0]
        acc.update(logits, masks)
    metrics = acc.compute()
    if loss_fn is not None and n:
        metrics["loss"] = loss_sum / n
    return metrics


def _monitor_value(metrics: dict[str, Any], name: str) -> float:
    v = metrics.get(name)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return -math.inf if name not in catalog.MINIMIZED_METRICS else math.inf
    return float(v)


def _better(a: float, b: float | None, name: str) -> bool:
    if b is None:
        return True
    return a < b if name in catalog.MINIMIZED_METRICS else a > b


@retained_heap()
def fit(
    config: ExperimentConfig,
    workdir: str | Path,
    *,
    dataset_root: str | Path | None = None,
    callbacks: Sequence[Any] = (),
    resume: bool = False,
    device: str | None = None,
    write_val_store: bool = True,
) -> FitResult:
    """Train one run and write its run folder.

    Args:
        config: The validated experiment config.
        workdir: The run folder (created). See ``docs/architecture.md`` for its layout.
        dataset_root: Base for relative dataset paths.
        callbacks: Progress/cancellation hooks (:mod:`segcore.training.callbacks`).
        resume: Continue from ``workdir/checkpoints/last`` when it exists.
        device: Overrides ``config.training.device``.
        write_val_store: After training, store the best model's validation probabilities.

    Returns:
        A :class:`FitResult`.

    Raises:
        TrainingError: the loss became NaN/inf (with the epoch and step).
        DatasetError: the dataset is missing or invalid.
        ConfigError: the config cannot run on this machine (e.g. fp16 on a CPU).
    """
    from segcore.losses import build_loss
    from segcore.models import build_model
    from segcore.training.optim import build_optimizer, build_scheduler

    cfg = config
    tc = cfg.training
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    last_dir = workdir / "checkpoints" / "last"
    best_dir = workdir / "checkpoints" / "best"
    rt = resolve_runtime(tc, device)
    _seed_everything(tc.seed)

    data = _Data(cfg, Path(dataset_root) if dataset_root else None)
    if not data.fixed_size and tc.batch_size > 1:
        sizes = {data.dataset.image_size(i) for i in data.train_ids[:64]}
        if len(sizes) > 1:
            raise ConfigError(
                f"training images have different sizes ({sorted(sizes)[:4]}...): set data.image_size or "
                "data.crop_size so they can be batched, or training.batch_size: 1"
            )
    model = build_model(cfg.model, num_classes=cfg.data.num_classes).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg)
    optimizer = build_optimizer(model, cfg.optimizer)

    train_loader_len = math.ceil(len(data.train_ds) / tc.batch_size)
    if len(data.train_ds) >= tc.batch_size:
        train_loader_len = len(data.train_ds) // tc.batch_size
    steps_per_epoch = max(1, min(train_loader_len, tc.steps_per_epoch or train_loader_len))
    optimizer_steps = max(1, steps_per_epoch // tc.accumulate)
    scheduler = build_scheduler(
        optimizer,
        cfg.scheduler,
        epochs=tc.epochs,
        steps_per_epoch=optimizer_steps,
        mode="min" if cfg.evaluation.monitor in catalog.MINIMIZED_METRICS else "max",
    )
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.use_scaler)
    ema = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay), use_buffers=True)
        if tc.ema_decay
        else None
    )
    swa = AveragedModel(model, use_buffers=True) if tc.swa_start_epoch else None

    start_epoch = 1
    best_value: float | None = None
    best_epoch: int | None = None
    best_metrics: dict[str, Any] = {}
    bad_epochs = 0
    history: list[EpochReport] = []
    if resume and (last_dir / TRAIN_STATE_FILE).is_file():
        ckpt = load_checkpoint(last_dir, device=rt.device, with_train_state=True)
        model.load_state_dict(ckpt.model.state_dict())
        st = ckpt.train_state or {}
        try:
            optimizer.load_state_dict(st["optimizer"])
            scheduler.load_state_dict(st["scheduler"])
            scaler.load_state_dict(st["scaler"])
            if ema is not None and "ema" in st:
                ema.load_state_dict(st["ema"])
            if swa is not None and "swa" in st:
                swa.load_state_dict(st["swa"])
        except (KeyError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"cannot resume from {last_dir}: its training state does not match this config ({exc}); "
                "start a fresh run instead"
            ) from exc
        start_epoch = int(st["epoch"]) + 1
        best_value = st.get("best_value")
        best_epoch = st.get("best_epoch")
        bad_epochs = int(st.get("bad_epochs", 0))
        best_metrics = json.loads(st.get("best_metrics_json", "{}"))
        _set_rng_state(st["rng"])
        dispatch(callbacks, "on_log", f"resumed from {last_dir} at epoch {start_epoch}")

    atomic_write_text(workdir / "config.json", cfg.to_json())
    metrics_log = workdir / "metrics.jsonl"
    if start_epoch == 1 and metrics_log.exists():
        metrics_log.unlink()

    dispatch(
        callbacks,
        "on_train_start",
        {
            "epochs": tc.epochs,
            "steps_per_epoch": steps_per_epoch,
            "num_train": len(data.train_ds),
            "num_val": len(data.val_ds),
            "device": str(rt.device),
            "precision": rt.precision_name,
            "channels_last": rt.channels_last,
            "start_epoch": start_epoch,
        },
    )
    val_loader = _make_loader(
        data.val_ds,
        batch_size=tc.batch_size if data.fixed_size else 1,
        shuffle=False,
        seed=tc.seed,
        workers=tc.num_workers,
        drop_last=False,
    )
    from segcore.data.mixing import BatchMixer

    mixer = BatchMixer(cfg.augmentation.mixing, task=cfg.data.task, ignore_index=cfg.data.ignore_index)

    status, stop_reason = "completed", None
    train_time, train_images = 0.0, 0
    last_metrics: dict[str, Any] = {}
    t_start = time.perf_counter()
    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, tc.epochs + 1):
            # Every epoch reseeds from (seed, epoch) so a resumed run sees the same batches and augmentations.
            _seed_everything(tc.seed * 1000 + epoch)
            loader = _make_loader(
                data.train_ds,
                batch_size=tc.batch_size,
                shuffle=True,
                seed=tc.seed * 1000 + epoch,
                workers=tc.num_workers,
                drop_last=len(data.train_ds) >= tc.batch_size,
            )
            model.train()
            t0 = time.perf_counter()
            loss_sum, seen = 0.0, 0
            optimizer.zero_grad(set_to_none=True)
            for step, batch in enumerate(loader, start=1):
                if step > steps_per_epoch:
                    break
                images, masks = _to_device(batch, rt)
                images, mask_a, mask_b, lam = mixer(images, masks)
                if rt.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with rt.autocast():
                    logits = model(images)
                logits = logits.float()
                loss = loss_fn(logits, mask_a)
                if mask_b is not None:
                    loss = lam * loss + (1 - lam) * loss_fn(logits, mask_b)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"the loss became {float(loss.detach())} at epoch {epoch}, step {step}; lower optimizer.lr "
                        f"(now {cfg.optimizer.lr:g}), set training.grad_clip, check the data for NaN values, "
                        "or train in fp32"
                    )
                scaler.scale(loss / tc.accumulate).backward()
                if step % tc.accumulate == 0 or step == steps_per_epoch:
                    if tc.grad_clip:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step_batch()
                    if ema is not None:
                        ema.update_parameters(model)
                bs = images.shape[0]
                loss_value = float(loss.detach())
                loss_sum += loss_value * bs
                seen += bs
                elapsed = time.perf_counter() - t0
                dispatch(
                    callbacks,
                    "on_step",
                    StepReport(epoch, step, steps_per_epoch, loss_value, seen / max(elapsed, 1e-9),
                               optimizer.param_groups[0]["lr"]),
                )
            epoch_time = time.perf_counter() - t0
            train_time += epoch_time
            train_images += seen
            if swa is not None and epoch >= (tc.swa_start_epoch or 0):
                swa.update_parameters(model)

            eval_model = _eval_model(model, ema, swa, epoch, tc)
            val_metrics = None
            is_best = False
            if epoch % cfg.evaluation.every == 0 or epoch == tc.epochs:
                if swa is not None and eval_model is swa.module:
                    _update_bn(swa, loader, rt, steps_per_epoch)
                val_metrics = evaluate_model(eval_model, val_loader, cfg=cfg, rt=rt, loss_fn=loss_fn)
                last_metrics = val_metrics
                value = _monitor_value(val_metrics, cfg.evaluation.monitor)
                if _better(value, best_value, cfg.evaluation.monitor):
                    best_value, best_epoch, best_metrics, is_best, bad_epochs = value, epoch, val_metrics, True, 0
                else:
                    bad_epochs += 1
            scheduler.step_epoch(_monitor_value(val_metrics, cfg.evaluation.monitor) if val_metrics else None)

            prov = {"dataset_fingerprint": data.fingerprint, "seed": tc.seed, "epoch": epoch}
            if is_best:
                save_checkpoint(best_dir, model=eval_model, config=cfg, metrics=val_metrics, provenance=prov)
                dispatch(callbacks, "on_checkpoint", best_dir, True)
            if epoch % tc.checkpoint_every == 0 or epoch == tc.epochs:
                state = {
                    "epoch": epoch,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": _rng_state(),
                    "best_value": best_value,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "best_metrics_json": json.dumps(best_metrics),
                }
                if ema is not None:
                    state["ema"] = ema.state_dict()
                if swa is not None:
                    state["swa"] = swa.state_dict()
                save_checkpoint(last_dir, model=model, config=cfg, metrics=val_metrics or {},
                                provenance=prov, train_state=state)
                dispatch(callbacks, "on_checkpoint", last_dir, False)

            done = epoch - start_epoch + 1
            eta = (time.perf_counter() - t_start) / done * (tc.epochs - epoch)
            lr = optimizer.param_groups[0]["lr"]
            report = EpochReport(
                epoch=epoch,
                epochs=tc.epochs,
                train_loss=loss_sum / max(seen, 1),
                lr=lr,
                images_per_s=seen / max(epoch_time, 1e-9),
                eta_s=eta,
                elapsed_s=time.perf_counter() - t_start,
                val=val_metrics,
                is_best=is_best,
            )
            history.append(report)
            with metrics_log.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(report.to_dict()) + "\n")
            dispatch(callbacks, "on_epoch_end", report)
            if tc.early_stopping_patience and bad_epochs >= tc.early_stopping_patience:
                status = "early_stopped"
                dispatch(callbacks, "on_log", f"early stopping at epoch {epoch}: no improvement for {bad_epochs} validations")
                break
    except StopTraining as stop:
        status, stop_reason = "stopped", stop.reason
        dispatch(callbacks, "on_log", f"training stopped at epoch {epoch}: {stop.reason}")

    val_store = None
    if status != "stopped" and write_val_store and best_dir.is_dir() and data.val_ids:
        val_store = _write_val_store(best_dir, data, workdir / "predictions" / "val", rt)
        dispatch(callbacks, "on_log", f"stored validation probabilities in {val_store}")
    return FitResult(
        status=status,
        epochs_run=len(history),
        best_epoch=best_epoch,
        best_metrics=best_metrics,
        last_metrics=last_metrics,
        best_checkpoint=best_dir if best_dir.is_dir() else None,
        last_checkpoint=last_dir if last_dir.is_dir() else None,
        val_store=val_store,
        dataset_fingerprint=data.fingerprint,
        images_per_s=train_images / train_time if train_time else 0.0,
        history=history,
        stop_reason=stop_reason,
    )


def _eval_model(model, ema, swa, epoch, tc):
    if swa is not None and epoch >= (tc.swa_start_epoch or 0) and swa.n_averaged.item() > 0:
        return swa.module
    if ema is not None:
        return ema.module
    return model


@torch.no_grad()
def _update_bn(swa: AveragedModel, loader: DataLoader, rt: Runtime, max_steps: int) -> None:
    """Recompute BatchNorm statistics for averaged weights (as torch's update_bn, on our batches)."""
    bns = [m for m in swa.module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    swa.module.train()
    for step, batch in enumerate(loader, start=1):
        if step > max_steps:
            break
        images, _ = _to_device(batch, rt)
        with rt.autocast():
            swa.module(images)
    for m, mom in momenta.items():
        m.momentum = mom


def _write_val_store(best_dir: Path, data: _Data, out: Path, rt: Runtime) -> Path:
    """Store the best model's probabilities on this run's validation images (no TTA)."""
    from segcore.inference import predict_to_store

    predict_to_store(
        best_dir,
        data.dataset.load_image,
        data.val_ids,
        out,
        device=str(rt.device),
        meta={"split": "val", "tta": None},
    )
    return out
