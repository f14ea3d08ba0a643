"""Executes one run on this process's device: claim, train with progress callbacks, record the end.

The run's folder is ``<artifact_root>/runs/<run_id>/`` (the layout :func:`segcore.training.fit`
writes). A run that has ``checkpoints/last`` there resumes from it, whoever started it before.
With a remote artifact root (``s3://...``) the run trains in the local mirror of that folder:
a resumed run first downloads it, and every checkpoint uploads what changed, so another machine
can resume it; the locations stored on the run are URLs.

While training, a heartbeat thread renews the claim's lease every ``heartbeat_s``; the step
callback looks at the database at most once a second for a cancel request, and stops training
(:class:`~segcore.training.StopTraining`) on a cancel, on a lost lease, or when the worker process
is asked to shut down (the run then goes back to the queue and resumes later).

Example:
    >>> ctx = WorkerContext.create(settings, worker_name="box1/cpu", device="cpu")
    >>> execute_run(ctx, run_id=7)
    <RunOutcome.SUCCEEDED: 'succeeded'>
"""

from __future__ import annotations

import enum
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any

from worker.artifacts import Artifacts
from worker.db.models import LogLevel, Run
from worker.db.session import session_scope
from worker.execution.context import LeaseKeeper, WorkerContext
from worker.execution.handlers import cache_inspection
from worker.execution.usage import ResourceUsage
from worker.services import lifecycle, workers
from worker.services.lifecycle import ClaimToken, LeaseState
from worker.settings import Settings

__all__ = ["RunOutcome", "execute_run", "run_dir", "describe_error"]

log = logging.getLogger(__name__)

# How often the step callback may query the database for a cancel request.
CANCEL_POLL_S = 1.0
# How often the step callback may write live progress (images/s, ETA) between epochs.
PROGRESS_WRITE_S = 5.0


class RunOutcome(str, enum.Enum):
    """What :func:`execute_run` did."""

    SKIPPED = "skipped"  # not claimable: already claimed, finished or cancelled (a second delivery)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RELEASED = "released"  # the worker shut down; the run is queued again
    LOST = "lost"  # the lease expired and the run was given to another worker


def run_dir(settings: Settings, run_id: int) -> Path:
    """``<artifact_root>/runs/<run_id>`` on this machine: the run folder that ``fit`` writes.

    For a remote artifact root this is the folder's local mirror.
    """
    return Artifacts.from_settings(settings).local_dir("runs", str(run_id))


class _Stop(enum.Enum):
    CANCEL = "cancelled by request"
    LOST = "lease lost: another worker took the run over"
    SHUTDOWN = "worker shutting down"


class _Progress:
    """The callbacks ``fit`` calls: progress into the database, and the reasons to stop."""

    def __init__(
        self, ctx: WorkerContext, token: ClaimToken, keeper: LeaseKeeper, monitor: str, workdir: Path
    ) -> None:
        from segcore.training import StopTraining

        self.StopTraining = StopTraining
        self.ctx = ctx
        self.workdir = workdir
        self.token = token
        self.keeper = keeper
        self.monitor = monitor
        self.stop_reason: _Stop | None = None
        self._last_poll = 0.0
        self._last_progress = 0.0
        self.epochs: int | None = None
        self.usage = ResourceUsage()

    # -- helpers
    def _write(self, fn: Any, **kwargs: Any) -> Any:
        with session_scope(self.ctx.factory) as s:
            return fn(s, token=self.token, **kwargs)

    def _stop(self, reason: _Stop) -> None:
        self.stop_reason = reason
        raise self.StopTraining(reason.value)

    def _check(self, *, poll: bool) -> None:
        if self.ctx.shutdown.is_set():
            self._stop(_Stop.SHUTDOWN)
        state = self.keeper.state
        if poll and state is LeaseState.HELD:
            state = self.keeper.beat()
        if state is LeaseState.LOST:
            self._stop(_Stop.LOST)
        if state is LeaseState.CANCEL_REQUESTED:
            self._stop(_Stop.CANCEL)

    # -- segcore callback methods
    def on_train_start(self, info: dict[str, Any]) -> None:
        self.epochs = int(info.get("epochs") or 0) or None
        start = int(info.get("start_epoch") or 1)
        if not self._write(lifecycle.start_training, start_epoch=start, total_epochs=self.epochs):
            self._stop(_Stop.LOST)
        with session_scope(self.ctx.factory) as s:
            lifecycle.record_log(
                s,
                run_id=self.token.object_id,
                message=(
                    f"training on {info.get('device')} from epoch {start} of {info.get('epochs')} "
                    f"({info.get('num_train')} train / {info.get('num_val')} val images, "
                    f"{info.get('steps_per_epoch')} steps per epoch)"
                ),
            )
        self._check(poll=True)

    def on_step(self, report: Any) -> None:
        now = time.monotonic()
        poll = now - self._last_poll >= CANCEL_POLL_S
        if poll:
            self._last_poll = now
        self._check(poll=poll)
        if now - self._last_progress >= PROGRESS_WRITE_S:
            self._last_progress = now
            steps = int(getattr(report, "steps_per_epoch", 0) or 0)
            ok = self._write(
                lifecycle.record_progress,
                current_epoch=max(0, int(report.epoch) - 1),
                images_per_s=getattr(report, "images_per_s", None),
                epoch_progress=int(report.step) / steps if steps else None,
            )
            if not ok:
                self._stop(_Stop.LOST)

    def on_epoch_end(self, report: Any) -> None:
        ok = self._write(
            lifecycle.record_epoch,
            epoch=int(report.epoch),
            epochs=int(report.epochs),
            train_loss=report.train_loss,
            lr=report.lr,
            images_per_s=report.images_per_s,
            eta_s=report.eta_s,
            val=report.val,
            is_best=bool(report.is_best),
            monitor=self.monitor,
            resources=self.usage.sample(),
        )
        if not ok:
            self._stop(_Stop.LOST)
        self._check(poll=False)

    def on_checkpoint(self, path: Path, best: bool) -> None:
        if not best:
            arts = self.ctx.artifacts
            if not arts.is_local:  # upload before recording, so the recorded checkpoint is there to resume from
                arts.push(self.workdir)
            self._write(lifecycle.record_checkpoint, checkpoint_dir=arts.location(path))

    def on_log(self, line: str) -> None:
        with session_scope(self.ctx.factory) as s:
            lifecycle.record_log(s, run_id=self.token.object_id, message=str(line))


def describe_error(exc: BaseException) -> str:
    """One line that says what went wrong (and, for expected errors, how to fix it)."""
    from segcore.errors import CheckpointError, ConfigError, DatasetError, SegcoreError, TrainingError
    from worker.errors import ServiceError

    if isinstance(exc, ServiceError):
        return str(exc)
    if isinstance(exc, SegcoreError):
        kinds = ((TrainingError, "training failed"), (DatasetError, "dataset problem"),
                 (ConfigError, "config problem"), (CheckpointError, "checkpoint problem"))
        kind = next((label for cls, label in kinds if isinstance(exc, cls)), "error")
        return f"{kind}: {exc}"
    if isinstance(exc, MemoryError):
        return "out of memory: lower training.batch_size or data.image_size/crop_size"
    text = str(exc)
    if "out of memory" in text.lower():
        return f"out of GPU memory ({text.splitlines()[0]}): lower training.batch_size or the image size"
    return f"unexpected {type(exc).__name__}: {text} (the run log has the traceback; please report it)"


def execute_run(ctx: WorkerContext, *, run_id: int) -> RunOutcome:
    """Claim run ``run_id`` and train it to its end; safe to call for any delivery of its message.

    Returns:
        What happened; a run that is not claimable is ``SKIPPED`` without any change.
    """
    settings = ctx.settings
    workdir = ctx.artifacts.local_dir("runs", str(run_id))
    with session_scope(ctx.factory) as s:
        token = lifecycle.claim_run(
            s, run_id=run_id, worker_name=ctx.worker_name, device=ctx.device, lease_s=settings.lease_s
        )
        if token is None:
            return RunOutcome.SKIPPED
        run = s.get(Run, run_id)
        assert run is not None
        config_data = dict(run.config)
        attempt = run.attempt
        run.artifact_dir = ctx.artifacts.location(workdir)

    ctx.current_id, ctx.current_kind = run_id, "run"
    try:
        with session_scope(ctx.factory) as s:
            workers.touch_worker(s, name=ctx.worker_name, current_run_id=run_id)
    except Exception as exc:  # noqa: BLE001 - the workers table is informative only
        log.warning("cannot update worker %s: %s", ctx.worker_name, exc)
    keeper = LeaseKeeper(ctx, token)
    keeper.start()
    try:
        return _train(ctx, token, config_data, workdir, keeper, attempt)
    finally:
        keeper.stop()
        ctx.current_id = None
        try:
            with session_scope(ctx.factory) as s:
                workers.touch_worker(s, name=ctx.worker_name, current_run_id=None)
        except Exception as exc:  # noqa: BLE001 - the workers table is informative only
            log.warning("cannot update worker %s: %s", ctx.worker_name, exc)


def _train(
    ctx: WorkerContext, token: ClaimToken, config_data: dict[str, Any], workdir: Path, keeper: LeaseKeeper, attempt: int
) -> RunOutcome:
    settings = ctx.settings
    progress: _Progress | None = None
    try:
        from segcore.config import parse_config
        from segcore.training import fit
        from segcore.weights import WeightsCache
        from worker.services.confinement import DataRoots, check_config

        config = parse_config(config_data)
        progress = _Progress(ctx, token, keeper, config.evaluation.monitor, workdir)
        check_config(config, roots=DataRoots.from_settings(settings))  # the paths, again, where they are read
        arts = ctx.artifacts
        source, dataset_root = arts.local_source(config.data.source, settings.dataset_root)
        config = config.model_copy(update={"data": config.data.model_copy(update={"source": source})})
        if not arts.is_local and arts.exists(arts.location(workdir / "checkpoints" / "last")):
            arts.fetch(arts.location(workdir))  # an earlier attempt, maybe on another machine
        resume = (workdir / "checkpoints" / "last").is_dir()
        with session_scope(ctx.factory) as s:
            lifecycle.record_log(
                s,
                run_id=token.object_id,
                message=f"attempt {attempt}: "
                f"{'resuming from ' + str(workdir / 'checkpoints' / 'last') if resume else 'starting'} "
                f"in {workdir} (pid {os.getpid()})",
            )
        result = fit(
            config,
            workdir,
            dataset_root=dataset_root,
            callbacks=[progress],
            resume=resume,
            device=ctx.fit_device,
            devices=ctx.fit_devices,
            weights_cache=WeightsCache(settings.weights_path, offline=settings.weights_offline),
        )
    except BaseException as exc:  # every failure is recorded, then re-raised if fatal
        if progress is not None and progress.stop_reason is not None and isinstance(exc, progress.StopTraining):
            return _stopped(ctx, token, progress.stop_reason)
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            # the process is being stopped: not the run's fault, give it back to the queue
            with session_scope(ctx.factory) as s:
                lifecycle.release(s, token=token, reason=f"worker process stopped ({type(exc).__name__})")
            raise
        message = describe_error(exc)
        with session_scope(ctx.factory) as s:
            if not lifecycle.fail_run(s, token=token, error_message=message):
                return RunOutcome.LOST
            from segcore.errors import SegcoreError
            from worker.errors import ServiceError

            if not isinstance(exc, (SegcoreError, ServiceError)):
                lifecycle.record_log(
                    s, run_id=token.object_id, level=LogLevel.ERROR, message="".join(traceback.format_exception(exc))
                )
        if not isinstance(exc, Exception):
            raise
        return RunOutcome.FAILED

    if result.status == "stopped":
        reason = progress.stop_reason if progress is not None else None
        return _stopped(ctx, token, reason or _Stop.CANCEL)
    arts = ctx.artifacts
    try:
        arts.push(workdir)
    except Exception as exc:  # noqa: BLE001 - the storage is unreachable: the run cannot be used elsewhere
        with session_scope(ctx.factory) as s:
            if not lifecycle.fail_run(s, token=token, error_message=f"trained, but {describe_error(exc)}"):
                return RunOutcome.LOST
        return RunOutcome.FAILED
    with session_scope(ctx.factory) as s:
        ok = lifecycle.finish_run(
            s,
            token=token,
            best_metrics=result.best_metrics,
            monitor=config.evaluation.monitor,
            checkpoint_dir=arts.location(result.best_checkpoint) if result.best_checkpoint else None,
            val_store=arts.location(result.val_store) if result.val_store else None,
            dataset_fingerprint=result.dataset_fingerprint,
            images_per_s=result.images_per_s,
            epochs_run=result.epochs_run,
        )
    if ok:
        group_id = _update_group_oof(ctx, token.object_id)
        cache_inspection(ctx, [("run", token.object_id)] + ([("group", group_id)] if group_id else []))
    return RunOutcome.SUCCEEDED if ok else RunOutcome.LOST


def _update_group_oof(ctx: WorkerContext, run_id: int) -> int | None:
    """When this run was its group's last one to end, assemble and score the group's OOF store; its id then."""
    from worker.services import groups

    try:
        with session_scope(ctx.factory) as s:
            run = s.get(Run, run_id)
            if run is None or run.group_id is None:
                return None
            group = groups.build_group_oof(
                s, actor=None, group_id=run.group_id, artifacts=ctx.artifacts, dataset_root=ctx.settings.dataset_root,
            )
            if group is None:
                return None
            lifecycle.record_log(
                s, run_id=run_id,
                message=f"group {group.id}: out-of-fold store of {len(group.oof_metrics.get('members', []))} "
                f"runs scored {group.monitor_metric}={group.oof_score}",
            )
            return int(group.id)
    except Exception as exc:  # noqa: BLE001 - the run itself succeeded; record why the OOF store is missing
        log.warning("group OOF for run %s failed: %s", run_id, exc)
        with session_scope(ctx.factory) as s:
            lifecycle.record_log(s, run_id=run_id, level=LogLevel.WARNING,
                                 message=f"could not build the group's out-of-fold store: {exc}")
        return None


def _stopped(ctx: WorkerContext, token: ClaimToken, reason: _Stop) -> RunOutcome:
    if reason is _Stop.LOST:
        log.warning("run %s: %s", token.object_id, reason.value)
        return RunOutcome.LOST
    with session_scope(ctx.factory) as s:
        if reason is _Stop.SHUTDOWN:
            ok = lifecycle.release(s, token=token, reason=reason.value)
            return RunOutcome.RELEASED if ok else RunOutcome.LOST
        ok = lifecycle.mark_cancelled(s, token=token, reason="stopped at the next training step")
        return RunOutcome.CANCELLED if ok else RunOutcome.LOST
