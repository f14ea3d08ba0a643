"""``fit``: train one run (one config, one fold, one seed) into a run folder.

``fit`` is a short loop over its parts: :func:`~segcore.training._epoch.train_one_epoch`,
:func:`~segcore.training._epoch.evaluate` and the checkpoint helpers of
:mod:`segcore.training._state`. Data reaches the device as uint8 through a
:class:`~segcore.training._feed.DeviceFeed` and is normalised there. With ``training.devices`` the
run trains on several devices (:mod:`segcore.training.distributed`); this process is rank 0.

Example:
    >>> from segcore.config import load_config
    >>> from segcore.training import fit
    >>> result = fit(load_config("recipes/fast.yaml"), "runs/fast-0")  # doctest: +SKIP
    >>> result.best_metrics["miou"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from segcore import catalog
from segcore._allocator import retained_heap
from segcore.checkpoint import TRAIN_STATE_FILE
from segcore.config import ExperimentConfig
from segcore.errors import ConfigError, DatasetError
from segcore.io import append_jsonl, atomic_write_text, recover_dir
from segcore.training._device import Runtime, resolve_runtime
from segcore.training._epoch import Trainer, evaluate, train_one_epoch, update_bn
from segcore.training._feed import DeviceFeed, SeededSampler, ShardSampler, make_loader
from segcore.training._state import Progress, repair_metrics_log, restore, save_best, save_last, seed_everything
from segcore.training.averaging import make_ema, make_swa
from segcore.training.callbacks import EpochReport, FitResult, StopTraining, dispatch
from segcore.training.distributed import Dist, launch, resolve_devices
from segcore.weights import WeightsCache

__all__ = ["fit", "fit_rank"]


class _Data:
    """The datasets and what the loop needs to know about them. Images stay uint8 until the device."""

    def __init__(self, cfg: ExperimentConfig, dataset_root: Path | None) -> None:
        from segcore.data.dataset import TorchSegmentationDataset, open_pseudo_labels
        from segcore.data.formats import open_dataset
        from segcore.data.mixing import CopyPaste
        from segcore.data.policy import resolve_data_policy
        from segcore.data.splits import split_ids
        from segcore.data.transforms import build_eval_transform, build_train_transform, normalization

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
        # every `auto` (crop size, class weights) fixed once from the training split; the run trains with,
        # stores and shows this resolved config
        cfg, self.policy = resolve_data_policy(cfg, self.dataset, self.train_ids)
        self.cfg = cfg
        d = cfg.data
        pseudo = (
            open_pseudo_labels(
                d.pseudo_labels, classes=d.classes, task=d.task, ignore_index=d.ignore_index,
                dataset_root=dataset_root,
            )
            if d.pseudo_labels
            else None
        )
        self.train_ds = TorchSegmentationDataset(
            self.dataset,
            self.train_ids,
            build_train_transform(cfg, normalize=False),
            copy_paste=CopyPaste.from_config(self.dataset, self.train_ids, cfg.augmentation.mixing,
                                             seed=cfg.training.seed),
            pseudo=pseudo,
            cfg=cfg,
            keep_uint8=True,
        )
        self.val_ds = TorchSegmentationDataset(self.dataset, self.val_ids, build_eval_transform(cfg, normalize=False),
                                               keep_uint8=True)
        self.fixed_size = d.crop_size is not None or d.image_size is not None  # training batches share a size
        self.val_batchable = d.image_size is not None  # validation runs on whole images at their own size
        self.mean, self.std = normalization(cfg)

    def check_batchable(self, batch_size: int) -> None:
        if self.fixed_size or batch_size == 1:
            return
        sizes = {self.dataset.image_size(i) for i in self.train_ids[:64]}
        if len(sizes) > 1:
            raise ConfigError(
                f"training images have different sizes ({sorted(sizes)[:4]}...): set data.image_size or "
                "data.crop_size so they can be batched, or training.batch_size: 1"
            )


def _loader_workers(cfg: ExperimentConfig, rt: Runtime, world: int) -> int:
    if cfg.training.num_workers is not None:
        return cfg.training.num_workers
    if rt.device.type != "cuda":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) // world - 1))


def _build_trainer(
    cfg: ExperimentConfig, rt: Runtime, d: Dist, *, optimizer_steps: int, weights_cache: WeightsCache | None = None
) -> Trainer:
    from segcore.data.mixing import BatchMixer
    from segcore.losses import build_loss
    from segcore.models import build_model
    from segcore.training.optim import build_optimizer, build_scheduler

    tc = cfg.training
    model = build_model(cfg.model, num_classes=cfg.data.num_classes, weights_cache=weights_cache)
    if d.active and rt.device.type == "cuda" and tc.sync_batchnorm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ddp = None
    forward: Any = model
    if d.active:
        ids = [rt.device.index] if rt.device.type == "cuda" else None
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)
        forward = ddp
    if tc.compile:
        forward = torch.compile(forward)
    optimizer = build_optimizer(model, cfg.optimizer)
    scheduler = build_scheduler(
        optimizer, cfg.scheduler, epochs=tc.epochs, steps_per_epoch=optimizer_steps,
        mode="min" if cfg.evaluation.monitor in catalog.MINIMIZED_METRICS else "max",
    )
    return Trainer(
        cfg=cfg, rt=rt, dist=d, model=model, forward=forward, ddp=ddp, loss_fn=build_loss(cfg),
        optimizer=optimizer, scheduler=scheduler,
        scaler=torch.amp.GradScaler(rt.device.type, enabled=rt.use_scaler),
        mixer=BatchMixer(cfg.augmentation.mixing, task=cfg.data.task, ignore_index=cfg.data.ignore_index),
        ema=make_ema(model, tc.ema_decay) if tc.ema_decay else None,
        swa=make_swa(model) if tc.swa_start_epoch else None,
    )


def _monitor_value(metrics: dict[str, Any] | None, name: str) -> float:
    v = (metrics or {}).get(name)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return -math.inf if name not in catalog.MINIMIZED_METRICS else math.inf
    return float(v)


def _better(a: float, b: float | None, name: str) -> bool:
    if b is None:
        return True
    return a < b if name in catalog.MINIMIZED_METRICS else a > b


def _eval_model(t: Trainer, epoch: int) -> torch.nn.Module:
    if t.swa is not None and epoch >= (t.cfg.training.swa_start_epoch or 0) and t.swa.n_averaged > 0:
        return t.swa.module
    if t.ema is not None:
        return t.ema.module
    return t.model


@retained_heap()
def fit(
    config: ExperimentConfig,
    workdir: str | Path,
    *,
    dataset_root: str | Path | None = None,
    callbacks: Sequence[Any] = (),
    resume: bool = False,
    device: str | None = None,
    devices: int | list[int] | None = None,
    write_val_store: bool = True,
    weights_cache: WeightsCache | None = None,
) -> FitResult:
    """Train one run and write its run folder.

    Args:
        config: The validated experiment config.
        workdir: The run folder (created). See ``docs/architecture.md`` for its layout.
        dataset_root: Base for relative dataset paths.
        callbacks: Progress/cancellation hooks (:mod:`segcore.training.callbacks`), called in this process.
        resume: Continue from ``workdir/checkpoints/last`` when it exists.
        device: Overrides ``config.training.device``.
        devices: Overrides ``config.training.devices`` (several devices: DDP, this process is rank 0).
        write_val_store: After training, store the best model's validation probabilities.
        weights_cache: Where pretrained encoder weights are read first and whether downloading is
            allowed (:mod:`segcore.weights`); None: download as usual.

    Returns:
        A :class:`FitResult`.

    Raises:
        TrainingError: the loss became NaN/inf (with the epoch and step), or another rank failed.
        DatasetError: the dataset is missing or invalid.
        ConfigError: the config cannot run on this machine (e.g. fp16 on a CPU).
    """
    if devices is not None:
        config = config.model_copy(update={"training": config.training.model_copy(update={"devices": devices})})
    rt = resolve_runtime(config.training, device)
    indices = resolve_devices(config.training.devices, rt.device.type)
    root = str(dataset_root) if dataset_root is not None else None
    if indices is None:
        return fit_rank(config, workdir, dataset_root=root, callbacks=callbacks, resume=resume, device=device,
                        write_val_store=write_val_store, weights_cache=weights_cache)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    return launch(
        config, str(workdir), indices=indices, device_type=rt.device.type, dataset_root=root, resume=resume,
        device=device, weights_cache=weights_cache,
        run_rank0=lambda ctx: fit_rank(config, workdir, dataset_root=root, callbacks=callbacks, resume=resume,
                                       device=device, write_val_store=write_val_store, dist_ctx=ctx,
                                       weights_cache=weights_cache),
    )


def fit_rank(
    config: ExperimentConfig,
    workdir: str | Path,
    *,
    dataset_root: str | None = None,
    callbacks: Sequence[Any] = (),
    resume: bool = False,
    device: str | None = None,
    write_val_store: bool = True,
    dist_ctx: Dist | None = None,
    weights_cache: WeightsCache | None = None,
) -> FitResult:
    """The training of one process: the whole run, or one rank of a DDP run (only rank 0 writes)."""
    cfg, tc = config, config.training
    workdir = Path(workdir)
    last_dir, best_dir = workdir / "checkpoints" / "last", workdir / "checkpoints" / "best"
    rt = resolve_runtime(tc, str(dist_ctx.device) if dist_ctx is not None else device)
    d = dist_ctx or Dist(device=rt.device)
    cbs: Sequence[Any] = callbacks if d.is_main else ()
    seed_everything(tc.seed)

    data = _Data(cfg, Path(dataset_root) if dataset_root else None)
    cfg = data.cfg
    data.check_batchable(tc.batch_size)
    per_rank = math.ceil(len(data.train_ds) / d.world)
    full = per_rank >= tc.batch_size
    loader_len = per_rank // tc.batch_size if full else 1
    steps = max(1, min(loader_len, tc.steps_per_epoch or loader_len))
    t = _build_trainer(cfg, rt, d, optimizer_steps=max(1, steps // tc.accumulate), weights_cache=weights_cache)

    if d.active:
        sync_bn = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in t.model.modules())
        dispatch(cbs, "on_log", f"DDP: {d.world} rank(s) over {d.backend}, batch {tc.batch_size} per rank, "
                                f"{sync_bn} SyncBatchNorm layer(s)")
    progress = Progress()
    if resume and recover_dir(last_dir) and (last_dir / TRAIN_STATE_FILE).is_file():
        progress = restore(last_dir, t)
        dispatch(cbs, "on_log", f"resumed from {last_dir} at epoch {progress.epoch + 1}")
    metrics_log = workdir / "metrics.jsonl"
    if d.is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(workdir / "config.json", cfg.to_json())
        atomic_write_text(workdir / "data_policy.json", data.policy.model_dump_json(indent=2))
        if progress.epoch == 0:
            metrics_log.unlink(missing_ok=True)
        else:
            repair_metrics_log(metrics_log, progress)

    workers = _loader_workers(cfg, rt, d.world)
    sampler = SeededSampler(len(data.train_ds), seed=tc.seed, rank=d.rank, world=d.world,
                            limit=steps * tc.batch_size)
    train_feed = DeviceFeed(make_loader(data.train_ds, sampler=sampler, batch_size=tc.batch_size, workers=workers,
                                        device=rt.device, drop_last=full), rt, data.mean, data.std)
    val_feed = DeviceFeed(
        make_loader(data.val_ds, sampler=ShardSampler(len(data.val_ds), rank=d.rank, world=d.world),
                    batch_size=tc.batch_size if data.val_batchable else 1, workers=workers, device=rt.device),
        rt, data.mean, data.std,
    )
    dispatch(cbs, "on_train_start", {
        "epochs": tc.epochs, "steps_per_epoch": steps, "num_train": len(data.train_ds), "num_val": len(data.val_ds),
        "device": str(rt.device), "precision": rt.precision_name, "channels_last": rt.channels_last,
        "start_epoch": progress.epoch + 1, "world_size": d.world, "global_batch": tc.batch_size * d.world,
        "num_workers": workers, "compile": tc.compile,
        "crop_size": list(data.policy.crop_size) if data.policy.crop_size else None, "crop_rule": data.policy.crop_rule,
    })
    if progress.report is not None:
        # the checkpoint's epoch again: a crash may have come before its line or its database record
        dispatch(cbs, "on_epoch_end", EpochReport.from_dict(progress.report))

    status, stop_reason = "completed", None
    history: list[EpochReport] = []
    last_metrics: dict[str, Any] = {}
    train_time = train_images = 0.0
    t_start = time.perf_counter()
    epoch = progress.epoch
    monitor = cfg.evaluation.monitor
    try:
        for epoch in range(progress.epoch + 1, tc.epochs + 1):
            # each epoch reseeds from (seed, epoch), so a resumed run repeats an uninterrupted one
            seed_everything(tc.seed * 1000 + epoch + 7919 * d.rank)
            sampler.set_epoch(epoch)
            stats = train_one_epoch(t, train_feed, epoch=epoch, steps=steps, callbacks=cbs,
                                    first_epoch_of_process=not history)
            train_time += stats.seconds
            train_images += stats.images
            if t.swa is not None and epoch >= (tc.swa_start_epoch or 0):
                t.swa.update(t.model)

            t_val = time.perf_counter()
            eval_model = _eval_model(t, epoch)
            val_metrics, is_best = None, False
            if epoch % cfg.evaluation.every == 0 or epoch == tc.epochs:
                if t.swa is not None and eval_model is t.swa.module:
                    update_bn(eval_model, train_feed, rt, steps, d)
                val_metrics = last_metrics = evaluate(eval_model, val_feed, cfg=cfg, rt=rt, loss_fn=t.loss_fn,
                                                      dist_ctx=d)
                value = _monitor_value(val_metrics, monitor)
                if _better(value, progress.best_value, monitor):
                    progress.best_value, progress.best_epoch, progress.best_metrics = value, epoch, val_metrics
                    progress.bad_epochs, is_best = 0, True
                else:
                    progress.bad_epochs += 1
            t.scheduler.step_epoch(_monitor_value(val_metrics, monitor) if val_metrics else None)
            progress.epoch = epoch

            timings = {"train_s": stats.seconds, "val_s": time.perf_counter() - t_val}
            if stats.loader_start_s:
                timings["loader_start_s"] = stats.loader_start_s
            if stats.warmup_s is not None:
                timings["compile_warmup_s"] = stats.warmup_s
            done = epoch - history[0].epoch + 1 if history else 1
            report = EpochReport(
                epoch=epoch, epochs=tc.epochs, train_loss=stats.loss, lr=t.optimizer.param_groups[0]["lr"],
                images_per_s=stats.images / max(stats.seconds, 1e-9),
                eta_s=(time.perf_counter() - t_start) / done * (tc.epochs - epoch),
                elapsed_s=time.perf_counter() - t_start, val=val_metrics, is_best=is_best, timings=timings,
            )
            history.append(report)

            # The checkpoint marks the epoch done and carries its report; the line and the callbacks
            # follow. A crash in between is mended on resume (repair_metrics_log, on_epoch_end again).
            t_ckpt = time.perf_counter()
            if d.is_main and is_best:
                save_best(best_dir, t, eval_model, metrics=val_metrics or {}, epoch=epoch, fingerprint=data.fingerprint)
                dispatch(cbs, "on_checkpoint", best_dir, True)
            if d.is_main and (epoch % tc.checkpoint_every == 0 or epoch == tc.epochs):
                save_last(last_dir, t, progress, metrics=val_metrics, fingerprint=data.fingerprint,
                          report=report.to_dict())
                dispatch(cbs, "on_checkpoint", last_dir, False)
            timings["checkpoint_s"] = time.perf_counter() - t_ckpt
            if d.is_main:
                append_jsonl(metrics_log, report.to_dict())
                dispatch(cbs, "on_epoch_end", report)
            if tc.early_stopping_patience and progress.bad_epochs >= tc.early_stopping_patience:
                status = "early_stopped"
                dispatch(cbs, "on_log", f"early stopping at epoch {epoch}: no improvement for "
                                        f"{progress.bad_epochs} validations")
                break
    except StopTraining as stop:
        status, stop_reason = "stopped", stop.reason
        dispatch(cbs, "on_log", f"training stopped at epoch {epoch}: {stop.reason}")

    val_store = None
    if d.is_main and status != "stopped" and write_val_store and best_dir.is_dir() and data.val_ids:
        val_store = _write_val_store(best_dir, data, workdir / "predictions" / "val", rt)
        dispatch(cbs, "on_log", f"stored validation probabilities in {val_store}")
    best_metrics = progress.best_metrics
    if val_store is not None:
        best_metrics = _at_full_resolution(val_store, data, cfg, best_metrics)
        monitor = cfg.evaluation.monitor
        if isinstance(best_metrics.get(monitor), float):
            dispatch(cbs, "on_log", f"validation {monitor} at full resolution: {best_metrics[monitor]:.4f}")
    return FitResult(
        status=status,
        epochs_run=len(history),
        best_epoch=progress.best_epoch,
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


def _at_full_resolution(store: Path, data: _Data, cfg: ExperimentConfig, best: dict[str, Any]) -> dict[str, Any]:
    """The best model's validation metrics from its stored probabilities, against full-resolution masks.

    Competitions score at each image's own size, and so do Inspect, group out-of-fold scores and
    ensembles: every one of them calls :func:`segcore.oof.score_store` on the stored predictions.
    The metrics ``evaluate`` computed at the training size (``data.image_size``) stay in
    ``metrics.jsonl`` as the training curve and here under ``at_training_size``; the loss is the
    training-size one (it needs the model's logits).
    """
    from segcore.oof import score_store

    full = score_store(store, data.dataset.load_mask, ignore_index=cfg.data.ignore_index,
                       threshold=cfg.evaluation.threshold)
    curve = {k: v for k, v in best.items() if k != "per_class"}
    return {**full, "loss": best.get("loss"), "at_training_size": curve}
