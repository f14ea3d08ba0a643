"""Executes one non-training job (predict, evaluate, ensemble, pseudo, dataset import, submission).

A job is claimed and leased like a run (:mod:`worker.services.lifecycle`); its work is a handler
per :class:`~worker.db.models.JobKind` that calls segcore and the service layer. A handler
receives the job's snapshot and a ``check()`` to call between units of work: it raises when the
job was cancelled, its lease was lost, or the worker is shutting down.

Example:
    >>> execute_job(ctx, job_id=3)
    <JobOutcome.SUCCEEDED: 'succeeded'>
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import traceback
from collections.abc import Callable
from typing import Any

from worker.db.models import Job, JobKind, LogLevel
from worker.db.session import session_scope
from worker.execution.context import LeaseKeeper, WorkerContext
from worker.execution.handlers import (
    ensemble_job,
    evaluate_job,
    predict_job,
    pseudo_job,
    store_statistics,
    submission_job,
)
from worker.execution.runner import describe_error
from worker.services import lifecycle
from worker.services.lifecycle import ClaimToken, LeaseState

__all__ = ["JobOutcome", "JobSnapshot", "JobStopped", "HANDLERS", "execute_job"]

log = logging.getLogger(__name__)


class JobOutcome(str, enum.Enum):
    """What :func:`execute_job` did."""

    SKIPPED = "skipped"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RELEASED = "released"
    LOST = "lost"


class JobStopped(Exception):
    """Raised by ``check()`` inside a handler: stop the job now."""

    def __init__(self, outcome: JobOutcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class JobSnapshot:
    """The job as claimed: what to do and with which ids and options."""

    id: int
    kind: JobKind
    target: dict[str, Any]
    params: dict[str, Any]
    attempt: int


Handler = Callable[[WorkerContext, JobSnapshot, Callable[[], None]], dict[str, Any]]


def _dataset_import(ctx: WorkerContext, job: JobSnapshot, check: Callable[[], None]) -> dict[str, Any]:
    """Open a registered dataset, compute its statistics (EDA) and store them."""
    return store_statistics(ctx, int(job.target["dataset_id"]), check)


HANDLERS: dict[JobKind, Handler] = {
    JobKind.DATASET_IMPORT: _dataset_import,
    JobKind.PREDICT: predict_job,
    JobKind.EVALUATE: evaluate_job,
    JobKind.ENSEMBLE: ensemble_job,
    JobKind.PSEUDO: pseudo_job,
    JobKind.SUBMISSION: submission_job,
}


def execute_job(ctx: WorkerContext, *, job_id: int) -> JobOutcome:
    """Claim job ``job_id`` and run its handler; safe to call for any delivery of its message."""
    settings = ctx.settings
    with session_scope(ctx.factory) as s:
        token = lifecycle.claim_job(
            s, job_id=job_id, worker_name=ctx.worker_name, device=ctx.device, lease_s=settings.lease_s
        )
        if token is None:
            return JobOutcome.SKIPPED
        job = s.get(Job, job_id)
        assert job is not None
        snap = JobSnapshot(id=job.id, kind=JobKind(job.kind), target=dict(job.target or {}),
                           params=dict(job.params or {}), attempt=job.attempt)
    ctx.current_id, ctx.current_kind = job_id, "job"
    keeper = LeaseKeeper(ctx, token)
    keeper.start()
    try:
        return _execute(ctx, token, snap, keeper)
    finally:
        keeper.stop()
        ctx.current_id, ctx.current_kind = None, "run"


def _execute(ctx: WorkerContext, token: ClaimToken, job: JobSnapshot, keeper: LeaseKeeper) -> JobOutcome:
    def check() -> None:
        if ctx.shutdown.is_set():
            raise JobStopped(JobOutcome.RELEASED, "worker shutting down")
        state = keeper.beat()
        if state is LeaseState.LOST:
            raise JobStopped(JobOutcome.LOST, "lease lost")
        if state is LeaseState.CANCEL_REQUESTED:
            raise JobStopped(JobOutcome.CANCELLED, "cancelled by request")

    handler = HANDLERS.get(job.kind)
    try:
        if handler is None:
            raise NotImplementedError(
                f"this worker cannot run {job.kind.value} jobs yet; update the workers to a version that can"
            )
        check()
        result = handler(ctx, job, check)
    except JobStopped as stop:
        if stop.outcome is JobOutcome.LOST:
            return JobOutcome.LOST
        with session_scope(ctx.factory) as s:
            if stop.outcome is JobOutcome.RELEASED:
                ok = lifecycle.release(s, token=token, reason=stop.reason)
            else:
                ok = lifecycle.mark_cancelled(s, token=token, reason=stop.reason)
        return stop.outcome if ok else JobOutcome.LOST
    except Exception as exc:  # noqa: BLE001 - every failure is recorded with a message that says what to do
        if isinstance(exc, NotImplementedError):
            message = str(exc)
        elif isinstance(exc, KeyError):
            message = f"the job's target or params lack {exc}; recreate the job with it"
        else:
            message = describe_error(exc)
        with session_scope(ctx.factory) as s:
            if not lifecycle.fail_job(s, token=token, error_message=message):
                return JobOutcome.LOST
            if not _expected(exc):
                lifecycle.record_log(s, job_id=job.id, level=LogLevel.ERROR,
                                     message="".join(traceback.format_exception(exc)))
        return JobOutcome.FAILED
    with session_scope(ctx.factory) as s:
        ok = lifecycle.finish_job(s, token=token, result=result)
    return JobOutcome.SUCCEEDED if ok else JobOutcome.LOST


def _expected(exc: BaseException) -> bool:
    from segcore.errors import SegcoreError
    from worker.errors import ServiceError

    return isinstance(exc, (SegcoreError, ServiceError, NotImplementedError, KeyError))
