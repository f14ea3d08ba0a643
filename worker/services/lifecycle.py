"""State transitions of runs and jobs: the queue's source of truth.

Every function takes the session first and the rest keyword-only; none commits (the caller owns
the transaction). What a person does (cancel, requeue, priority) is written to the audit log with
the optional ``actor``; what workers and the reaper do is written to the run's log. A run moves ``queued -> running -> succeeded | failed | cancelled``; ``requeue``
puts a failed or cancelled run back to ``queued``, and the reaper puts a running run whose lease
expired back to ``queued`` (it resumes from its last checkpoint).

Exclusive execution rests on two rules:

1. :func:`claim_run` is one conditional ``UPDATE ... WHERE status='queued' AND NOT
   cancel_requested``: of any number of deliveries of the same message, one claims the run and
   the others are no-ops.
2. A claim is identified by ``(worker_name, claimed_at)``, the *claim token*. The holder renews
   its lease with :func:`heartbeat`; every later write of the holder is conditioned on the token,
   so a process that lost its lease (the reaper gave the run to someone else) can no longer
   change the run, and learns so from the next heartbeat.

Example:
    >>> with session_scope(factory) as s:
    ...     token = claim_run(s, run_id=7, worker_name="box1/cuda:0", device="cuda:0", lease_s=30)
    >>> token is not None   # False for a second delivery of the same run
    True
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.base import utcnow
from worker.db.models import EpochMetric, Job, LogLevel, Run, RunLog, RunStatus
from worker.errors import Conflict, InvalidInput, NotFound
from worker.services._common import check_actor, check_priority
from worker.services.audit import record_event

__all__ = [
    "MAX_WORKERS_LOST",
    "ClaimToken",
    "LeaseState",
    "Outgoing",
    "claim_run",
    "claim_job",
    "heartbeat",
    "heartbeat_job",
    "record_epoch",
    "record_progress",
    "record_log",
    "record_checkpoint",
    "finish_run",
    "finish_job",
    "fail_run",
    "fail_job",
    "mark_cancelled",
    "mark_job_cancelled",
    "release",
    "request_cancel",
    "request_cancel_job",
    "requeue",
    "requeue_job",
    "set_priority",
    "set_job_priority",
    "publish_queued",
    "publish_queued_jobs",
    "pending_publication",
    "reap",
    "reap_jobs",
]

_RUNNING = RunStatus.RUNNING
_QUEUED = RunStatus.QUEUED


@dataclasses.dataclass(frozen=True)
class ClaimToken:
    """Who holds a claim: every write of the holder is conditioned on it."""

    kind: str  # "run" or "job"
    object_id: int
    worker_name: str
    claimed_at: dt.datetime


class LeaseState(str, enum.Enum):
    """What a heartbeat found."""

    HELD = "held"
    CANCEL_REQUESTED = "cancel_requested"
    LOST = "lost"


@dataclasses.dataclass(frozen=True)
class Outgoing:
    """A message to publish: the object's kind, id and priority (higher runs sooner)."""

    kind: str  # "run" or "job"
    object_id: int
    priority: int


def _now(now: dt.datetime | None) -> dt.datetime:
    return now if now is not None else utcnow()


def _model(kind: str) -> type[Run] | type[Job]:
    return Run if kind == "run" else Job


def _owned(model: type[Run] | type[Job], token: ClaimToken) -> sa.ColumnElement[bool]:
    return sa.and_(
        model.id == token.object_id,
        model.status == _RUNNING,
        model.worker_name == token.worker_name,
        model.claimed_at == token.claimed_at,
    )


def _get(session: Session, model: type[Run] | type[Job], object_id: int) -> Any:
    obj = session.get(model, object_id)
    if obj is None:
        kind = "run" if model is Run else "job"
        raise NotFound(kind, object_id, f"check the id with `segboard {kind}s`")
    return obj


def _log(session: Session, kind: str, object_id: int, message: str, level: LogLevel, now: dt.datetime) -> None:
    row = RunLog(level=level, message=message, ts=now)
    if kind == "run":
        row.run_id = object_id
    else:
        row.job_id = object_id
    session.add(row)


# ------------------------------------------------------------------ claim and lease


def _claim(
    session: Session, kind: str, object_id: int, worker_name: str, device: str, lease_s: float, now: dt.datetime
) -> ClaimToken | None:
    model = _model(kind)
    stmt = (
        sa.update(model)
        .where(model.id == object_id, model.status == _QUEUED, model.cancel_requested.is_(False))
        .values(
            status=_RUNNING,
            worker_name=worker_name,
            device=device,
            claimed_at=now,
            lease_expires_at=now + dt.timedelta(seconds=lease_s),
            heartbeat_at=now,
            started_at=sa.func.coalesce(model.started_at, now),
            finished_at=None,
            error_message=None,
        )
        .execution_options(synchronize_session=False)
    )
    if session.execute(stmt).rowcount != 1:
        return None
    _log(session, kind, object_id, f"claimed by {worker_name} on {device}", LogLevel.INFO, now)
    return ClaimToken(kind=kind, object_id=object_id, worker_name=worker_name, claimed_at=now)


def claim_run(
    session: Session, *, run_id: int, worker_name: str, device: str, lease_s: float, now: dt.datetime | None = None
) -> ClaimToken | None:
    """Claim a queued run with one atomic UPDATE; None when it is not claimable.

    A run that is already claimed, finished or cancelled (or whose cancel was requested) is left
    alone, so a second delivery of its message is a no-op. The claim writes a log line naming the
    worker, so the run's log shows every execution.

    Returns:
        The claim token (truthy), or None.
    """
    return _claim(session, "run", run_id, worker_name, device, lease_s, _now(now))


def claim_job(
    session: Session, *, job_id: int, worker_name: str, device: str, lease_s: float, now: dt.datetime | None = None
) -> ClaimToken | None:
    """Claim a queued job; see :func:`claim_run`."""
    return _claim(session, "job", job_id, worker_name, device, lease_s, _now(now))


def _heartbeat(session: Session, token: ClaimToken, lease_s: float, now: dt.datetime) -> LeaseState:
    model = _model(token.kind)
    stmt = (
        sa.update(model)
        .where(_owned(model, token))
        .values(heartbeat_at=now, lease_expires_at=now + dt.timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    if session.execute(stmt).rowcount != 1:
        return LeaseState.LOST
    cancel = session.execute(sa.select(model.cancel_requested).where(model.id == token.object_id)).scalar_one()
    return LeaseState.CANCEL_REQUESTED if cancel else LeaseState.HELD


def heartbeat(session: Session, *, token: ClaimToken, lease_s: float, now: dt.datetime | None = None) -> LeaseState:
    """Renew the lease of a claimed run and report whether to go on.

    Returns:
        ``HELD``: go on. ``CANCEL_REQUESTED``: stop and call :func:`mark_cancelled`. ``LOST``: the
        claim is no longer ours (the reaper requeued the run); stop without writing anything.
    """
    return _heartbeat(session, token, lease_s, _now(now))


def heartbeat_job(
    session: Session, *, token: ClaimToken, lease_s: float, now: dt.datetime | None = None
) -> LeaseState:
    """Renew the lease of a claimed job; see :func:`heartbeat`."""
    return _heartbeat(session, token, lease_s, _now(now))


# ------------------------------------------------------------------ progress


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _clean_json(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become None (PostgreSQL's JSON refuses them)."""
    if isinstance(obj, dict):
        return {str(k): _clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_json(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if hasattr(obj, "item"):  # numpy / torch scalars
        return _clean_json(obj.item())
    return str(obj)


def record_epoch(
    session: Session,
    *,
    token: ClaimToken,
    epoch: int,
    epochs: int,
    train_loss: float | None,
    lr: float | None,
    images_per_s: float | None,
    eta_s: float | None,
    val: dict[str, Any] | None,
    is_best: bool,
    monitor: str | None = None,
    now: dt.datetime | None = None,
) -> bool:
    """Store one epoch's metrics and the run's progress columns.

    An epoch reported again (a resumed run repeats the epoch after its last checkpoint) replaces
    the earlier row. ``is_best`` with ``val`` updates ``best_metrics`` and ``monitor_value``.

    Returns:
        False when the claim is no longer held (nothing written).
    """
    now = _now(now)
    values: dict[str, Any] = {
        "current_epoch": epoch,
        "total_epochs": epochs,
        "images_per_s": _finite(images_per_s),
        "eta_s": _finite(eta_s),
        "heartbeat_at": now,
    }
    val_clean = _clean_json(val) if val is not None else None
    if is_best and val_clean:
        values["best_metrics"] = {**val_clean, "epoch": epoch}
        if monitor is not None:
            values["monitor_value"] = _finite(val_clean.get(monitor))
    stmt = sa.update(Run).where(_owned(Run, token)).values(**values).execution_options(synchronize_session=False)
    if session.execute(stmt).rowcount != 1:
        return False
    session.execute(sa.delete(EpochMetric).where(EpochMetric.run_id == token.object_id, EpochMetric.epoch == epoch))
    session.add(
        EpochMetric(
            run_id=token.object_id,
            epoch=epoch,
            train_loss=_finite(train_loss),
            lr=_finite(lr),
            images_per_s=_finite(images_per_s),
            val=val_clean,
            created_at=now,
        )
    )
    return True


def record_progress(
    session: Session,
    *,
    token: ClaimToken,
    current_epoch: int | None = None,
    total_epochs: int | None = None,
    images_per_s: float | None = None,
    eta_s: float | None = None,
) -> bool:
    """Update the live progress columns between epochs (throttled by the caller)."""
    values: dict[str, Any] = {}
    if current_epoch is not None:
        values["current_epoch"] = current_epoch
    if total_epochs is not None:
        values["total_epochs"] = total_epochs
    if images_per_s is not None:
        values["images_per_s"] = _finite(images_per_s)
    if eta_s is not None:
        values["eta_s"] = _finite(eta_s)
    if not values:
        return True
    stmt = sa.update(Run).where(_owned(Run, token)).values(**values).execution_options(synchronize_session=False)
    return session.execute(stmt).rowcount == 1


def record_log(
    session: Session,
    *,
    message: str,
    run_id: int | None = None,
    job_id: int | None = None,
    level: LogLevel = LogLevel.INFO,
    now: dt.datetime | None = None,
) -> None:
    """Append a log line to a run (or a job).

    Raises:
        InvalidInput: neither or both of ``run_id`` and ``job_id`` given.
    """
    if (run_id is None) == (job_id is None):
        raise InvalidInput("record_log needs exactly one of run_id and job_id")
    _log(session, "run" if run_id is not None else "job", run_id or job_id or 0, message, level, _now(now))


def record_checkpoint(session: Session, *, token: ClaimToken, checkpoint_dir: str) -> bool:
    """Remember the run's newest checkpoint folder (what a resumed run starts from)."""
    stmt = (
        sa.update(Run)
        .where(_owned(Run, token))
        .values(checkpoint_dir=checkpoint_dir)
        .execution_options(synchronize_session=False)
    )
    return session.execute(stmt).rowcount == 1


# ------------------------------------------------------------------ endings


def _end(session: Session, token: ClaimToken, status: RunStatus, values: dict[str, Any], now: dt.datetime) -> bool:
    model = _model(token.kind)
    values = {**values, "status": status, "finished_at": now, "lease_expires_at": None}
    stmt = sa.update(model).where(_owned(model, token)).values(**values).execution_options(synchronize_session=False)
    return session.execute(stmt).rowcount == 1


def finish_run(
    session: Session,
    *,
    token: ClaimToken,
    best_metrics: dict[str, Any] | None,
    monitor: str,
    checkpoint_dir: str | None,
    val_store: str | None,
    dataset_fingerprint: str | None,
    images_per_s: float | None = None,
    epochs_run: int | None = None,
    now: dt.datetime | None = None,
) -> bool:
    """Mark a claimed run succeeded with its results.

    Returns:
        False when the claim is no longer held (nothing written).
    """
    now = _now(now)
    best = _clean_json(best_metrics) if best_metrics else None
    values: dict[str, Any] = {
        "best_metrics": best,
        "monitor_metric": monitor,
        "monitor_value": _finite(best.get(monitor)) if best else None,
        "checkpoint_dir": checkpoint_dir,
        "val_store": val_store,
        "dataset_fingerprint": dataset_fingerprint,
        "eta_s": 0.0,
    }
    if images_per_s is not None:
        values["images_per_s"] = _finite(images_per_s)
    ok = _end(session, token, RunStatus.SUCCEEDED, values, now)
    if ok:
        epochs = f" after {epochs_run} epoch(s)" if epochs_run is not None else ""
        _log(session, "run", token.object_id, f"succeeded{epochs}", LogLevel.INFO, now)
    return ok


def finish_job(
    session: Session, *, token: ClaimToken, result: dict[str, Any] | None, now: dt.datetime | None = None
) -> bool:
    """Mark a claimed job succeeded with its result."""
    now = _now(now)
    ok = _end(session, token, RunStatus.SUCCEEDED, {"result": _clean_json(result)}, now)
    if ok:
        _log(session, "job", token.object_id, "succeeded", LogLevel.INFO, now)
    return ok


def _fail(session: Session, kind: str, object_id: int, token: ClaimToken | None, error: str, now: dt.datetime) -> bool:
    model = _model(kind)
    values = {"status": RunStatus.FAILED, "finished_at": now, "lease_expires_at": None, "error_message": error}
    where = (
        _owned(model, token)
        if token is not None
        else sa.and_(model.id == object_id, model.status.in_([_QUEUED, _RUNNING]))
    )
    stmt = sa.update(model).where(where).values(**values).execution_options(synchronize_session=False)
    ok = session.execute(stmt).rowcount == 1
    if ok:
        _log(session, kind, object_id, f"failed: {error}", LogLevel.ERROR, now)
    return ok


def fail_run(
    session: Session,
    *,
    error_message: str,
    token: ClaimToken | None = None,
    run_id: int | None = None,
    now: dt.datetime | None = None,
) -> bool:
    """Mark a run failed with a message that says what went wrong and how to fix it.

    Pass the claim ``token`` from the process running it; pass ``run_id`` alone to fail a run that
    is queued or running without holding its claim (e.g. its message cannot be decoded).
    """
    if token is None and run_id is None:
        raise InvalidInput("fail_run needs the claim token or the run id")
    object_id = token.object_id if token is not None else int(run_id)  # type: ignore[arg-type]
    return _fail(session, "run", object_id, token, error_message, _now(now))


def fail_job(
    session: Session,
    *,
    error_message: str,
    token: ClaimToken | None = None,
    job_id: int | None = None,
    now: dt.datetime | None = None,
) -> bool:
    """Mark a job failed; see :func:`fail_run`."""
    if token is None and job_id is None:
        raise InvalidInput("fail_job needs the claim token or the job id")
    object_id = token.object_id if token is not None else int(job_id)  # type: ignore[arg-type]
    return _fail(session, "job", object_id, token, error_message, _now(now))


def mark_cancelled(session: Session, *, token: ClaimToken, reason: str = "", now: dt.datetime | None = None) -> bool:
    """Mark a claimed run (or job) cancelled after its process stopped on a cancel request."""
    now = _now(now)
    ok = _end(session, token, RunStatus.CANCELLED, {}, now)
    if ok:
        _log(session, token.kind, token.object_id, f"cancelled{': ' + reason if reason else ''}", LogLevel.INFO, now)
    return ok


mark_job_cancelled = mark_cancelled


def release(session: Session, *, token: ClaimToken, reason: str, now: dt.datetime | None = None) -> bool:
    """Give a claimed run (or job) back to the queue, e.g. when its worker shuts down cleanly.

    The run keeps its checkpoints and resumes from the last one; it is published again by the
    caller or the reaper (``published_at`` is cleared).
    """
    now = _now(now)
    model = _model(token.kind)
    stmt = (
        sa.update(model)
        .where(_owned(model, token))
        .values(status=_QUEUED, worker_name=None, device=None, lease_expires_at=None, published_at=None)
        .execution_options(synchronize_session=False)
    )
    ok = session.execute(stmt).rowcount == 1
    if ok:
        _log(session, token.kind, token.object_id, f"released ({reason}); it resumes from its last checkpoint",
             LogLevel.INFO, now)
    return ok


def _request_cancel(session: Session, kind: str, object_id: int, now: dt.datetime, actor: int | None) -> RunStatus:
    model = _model(kind)
    obj = _get(session, model, object_id)
    check_actor(session, actor)
    # the queued case is one conditional update, so a worker claiming it at the same moment
    # either sees the flag or loses the race
    stmt = (
        sa.update(model)
        .where(model.id == object_id, model.status == _QUEUED)
        .values(status=RunStatus.CANCELLED, cancel_requested=True, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    if session.execute(stmt).rowcount == 1:
        _log(session, kind, object_id, "cancelled before it started", LogLevel.INFO, now)
        record_event(session, actor=actor, action=f"{kind}.cancel", object_kind=kind, object_id=object_id,
                     detail={"was": "queued"})
        session.refresh(obj)
        return RunStatus.CANCELLED
    stmt = (
        sa.update(model)
        .where(model.id == object_id, model.status == _RUNNING)
        .values(cancel_requested=True)
        .execution_options(synchronize_session=False)
    )
    if session.execute(stmt).rowcount == 1:
        _log(session, kind, object_id, "cancel requested; the worker stops it within seconds", LogLevel.INFO, now)
        record_event(session, actor=actor, action=f"{kind}.cancel", object_kind=kind, object_id=object_id,
                     detail={"was": "running"})
        session.refresh(obj)
        return RunStatus.RUNNING
    session.refresh(obj)
    if obj.status is RunStatus.CANCELLED:
        return RunStatus.CANCELLED
    raise Conflict(f"{kind} {object_id} has already {obj.status.value}; there is nothing to cancel")


def request_cancel(
    session: Session, *, run_id: int, actor: int | None = None, now: dt.datetime | None = None
) -> RunStatus:
    """Cancel a run: a queued run is cancelled at once, a running one is flagged and stopped by its worker.

    Returns:
        The run's status after the call (``cancelled``, or ``running`` until the worker stops it).

    Raises:
        NotFound: no such run.
        Conflict: the run already succeeded or failed.
    """
    return _request_cancel(session, "run", run_id, _now(now), actor)


def request_cancel_job(
    session: Session, *, job_id: int, actor: int | None = None, now: dt.datetime | None = None
) -> RunStatus:
    """Cancel a job; see :func:`request_cancel`."""
    return _request_cancel(session, "job", job_id, _now(now), actor)


def _requeue(session: Session, kind: str, object_id: int, now: dt.datetime, actor: int | None) -> None:
    model = _model(kind)
    obj = _get(session, model, object_id)
    check_actor(session, actor)
    stmt = (
        sa.update(model)
        .where(model.id == object_id, model.status.in_([RunStatus.FAILED, RunStatus.CANCELLED]))
        .values(
            status=_QUEUED,
            attempt=model.attempt + 1,
            cancel_requested=False,
            error_message=None,
            worker_name=None,
            device=None,
            claimed_at=None,
            lease_expires_at=None,
            heartbeat_at=None,
            published_at=None,
            queued_at=now,
            finished_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if session.execute(stmt).rowcount != 1:
        session.refresh(obj)
        raise Conflict(
            f"{kind} {object_id} is {obj.status.value}; only failed or cancelled {kind}s can be requeued"
        )
    _log(session, kind, object_id, "requeued; it resumes from its last checkpoint if it has one", LogLevel.INFO, now)
    session.refresh(obj)
    record_event(session, actor=actor, action=f"{kind}.requeue", object_kind=kind, object_id=object_id,
                 detail={"attempt": obj.attempt})


def requeue(session: Session, *, run_id: int, actor: int | None = None, now: dt.datetime | None = None) -> None:
    """Put a failed or cancelled run back in the queue (attempt + 1); it resumes from its last checkpoint.

    The caller publishes it after committing (see :func:`publish_queued`); the reaper does so
    otherwise.

    Raises:
        NotFound: no such run.
        Conflict: the run is queued, running or succeeded.
    """
    _requeue(session, "run", run_id, _now(now), actor)


def requeue_job(session: Session, *, job_id: int, actor: int | None = None, now: dt.datetime | None = None) -> None:
    """Put a failed or cancelled job back in the queue; see :func:`requeue`."""
    _requeue(session, "job", job_id, _now(now), actor)


def _set_priority(session: Session, model: type[Run] | type[Job], kind: str, object_id: int, priority: int,
                  actor: int | None) -> bool:
    check_priority(priority)
    obj = _get(session, model, object_id)
    check_actor(session, actor)
    before, obj.priority = obj.priority, int(priority)
    again = obj.status is _QUEUED
    if again:
        obj.published_at = None
    session.flush()
    record_event(session, actor=actor, action=f"{kind}.set_priority", object_kind=kind, object_id=object_id,
                 detail={"from": before, "to": obj.priority})
    return again


def set_priority(session: Session, *, run_id: int, priority: int, actor: int | None = None) -> bool:
    """Change a run's priority (higher runs sooner; the broker distinguishes 0..9).

    A queued run is marked for publication again so the new priority takes effect; the message
    already in the broker becomes a no-op for whichever delivery comes second.

    Returns:
        True when the run is queued and must be published again.

    Raises:
        InvalidInput: the priority is not an integer from 0 to 9.
        NotFound: no such run.
    """
    return _set_priority(session, Run, "run", run_id, priority, actor)


def set_job_priority(session: Session, *, job_id: int, priority: int, actor: int | None = None) -> bool:
    """Change a job's priority; see :func:`set_priority`.

    Returns:
        True when the job is queued and must be published again.
    """
    return _set_priority(session, Job, "job", job_id, priority, actor)


# ------------------------------------------------------------------ publication


def _pending(session: Session, model: type[Run] | type[Job], kind: str, ids: Sequence[int] | None) -> list[Outgoing]:
    stmt = sa.select(model.id, model.priority).where(model.status == _QUEUED, model.cancel_requested.is_(False))
    if ids is None:
        stmt = stmt.where(model.published_at.is_(None))
    else:
        stmt = stmt.where(model.id.in_(list(ids)))
    stmt = stmt.order_by(model.priority.desc(), model.id)
    return [Outgoing(kind=kind, object_id=i, priority=p) for i, p in session.execute(stmt).all()]


def pending_publication(session: Session) -> list[Outgoing]:
    """Queued runs and jobs that were never published (or must be again), highest priority first."""
    return _pending(session, Run, "run", None) + _pending(session, Job, "job", None)


def _publish(
    session: Session, model: type[Run] | type[Job], kind: str, ids: Iterable[int] | None, now: dt.datetime
) -> list[Outgoing]:
    out = _pending(session, model, kind, None if ids is None else list(ids))
    if out:
        stmt = (
            sa.update(model)
            .where(model.id.in_([o.object_id for o in out]), model.status == _QUEUED)
            .values(published_at=now, queued_at=sa.func.coalesce(model.queued_at, now))
            .execution_options(synchronize_session=False)
        )
        session.execute(stmt)
    return out


def publish_queued(
    session: Session, *, run_ids: Iterable[int] | None = None, now: dt.datetime | None = None
) -> list[Outgoing]:
    """Mark queued runs as published and return the messages to send after the commit.

    Commit first, then send: a worker that receives the message then finds the row. A crash
    between the two leaves a queued run whose message was never sent; the reaper publishes it.

    Args:
        run_ids: The runs to publish; None: every queued run never published.
    """
    return _publish(session, Run, "run", run_ids, _now(now))


def publish_queued_jobs(
    session: Session, *, job_ids: Iterable[int] | None = None, now: dt.datetime | None = None
) -> list[Outgoing]:
    """Mark queued jobs as published; see :func:`publish_queued`."""
    return _publish(session, Job, "job", job_ids, _now(now))


# ------------------------------------------------------------------ reaper


# A run whose worker dies this many times in a row (no manual requeue between) fails instead of
# being requeued again: a run that kills its worker (out of memory) must not take every worker down.
MAX_WORKERS_LOST = 3
_LOST_PREFIX = "requeued: worker "
_MANUAL_PREFIX = "requeued; "


def _workers_lost(session: Session, kind: str, object_id: int) -> int:
    """How often the reaper requeued this run/job since it was last requeued by a person."""
    owner = RunLog.run_id if kind == "run" else RunLog.job_id
    since = session.scalar(
        sa.select(sa.func.max(RunLog.id)).where(owner == object_id, RunLog.message.like(_MANUAL_PREFIX + "%"))
    )
    stmt = sa.select(sa.func.count()).select_from(RunLog).where(owner == object_id,
                                                                 RunLog.message.like(_LOST_PREFIX + "%"))
    if since is not None:
        stmt = stmt.where(RunLog.id > since)
    return int(session.scalar(stmt) or 0)


def _reap(session: Session, kind: str, now: dt.datetime, republish_after_s: float) -> list[int]:
    model = _model(kind)
    expired = session.execute(
        sa.select(model.id, model.cancel_requested, model.worker_name, model.heartbeat_at).where(
            model.status == _RUNNING, model.lease_expires_at < now
        )
    ).all()
    requeued: list[int] = []
    for object_id, cancel, worker_name, heartbeat_at in expired:
        last = heartbeat_at.isoformat(timespec="seconds") if heartbeat_at else "never"
        # conditional on the lease still being expired: a late heartbeat that renewed it wins
        base = sa.update(model).where(
            model.id == object_id, model.status == _RUNNING, model.lease_expires_at < now
        )
        if cancel:
            stmt = base.values(status=RunStatus.CANCELLED, finished_at=now, lease_expires_at=None)
            if session.execute(stmt.execution_options(synchronize_session=False)).rowcount == 1:
                _log(session, kind, object_id, f"cancelled: its worker {worker_name} stopped answering", LogLevel.WARNING, now)
            continue
        if _workers_lost(session, kind, object_id) + 1 >= MAX_WORKERS_LOST:
            error = (
                f"its worker died {MAX_WORKERS_LOST} times while running it (last: {worker_name}, last heartbeat "
                f"at {last}); a process killed again and again is usually out of memory: lower "
                "training.batch_size or the image size, then requeue it"
            )
            stmt = base.values(status=RunStatus.FAILED, finished_at=now, lease_expires_at=None, error_message=error)
            if session.execute(stmt.execution_options(synchronize_session=False)).rowcount == 1:
                _log(session, kind, object_id, f"failed: {error}", LogLevel.ERROR, now)
            continue
        stmt = base.values(
            status=_QUEUED,
            worker_name=None,
            device=None,
            lease_expires_at=None,
            published_at=None,
        )
        if session.execute(stmt.execution_options(synchronize_session=False)).rowcount == 1:
            _log(
                session,
                kind,
                object_id,
                f"requeued: worker {worker_name} stopped sending heartbeats (last at {last}); "
                "it resumes from its last checkpoint",
                LogLevel.WARNING,
                now,
            )
            requeued.append(object_id)
    cutoff = now - dt.timedelta(seconds=republish_after_s)
    stale = session.execute(
        sa.select(model.id)
        .where(
            model.status == _QUEUED,
            model.cancel_requested.is_(False),
            sa.or_(model.published_at.is_(None), model.published_at < cutoff),
        )
        .order_by(model.priority.desc(), model.id)
    ).scalars()
    return requeued + [i for i in stale if i not in requeued]


def reap(session: Session, *, now: dt.datetime | None = None, republish_after_s: float = 30.0) -> list[int]:
    """Recover runs whose worker died and queued runs whose message may be lost.

    - A running run whose lease expired goes back to ``queued`` (or to ``cancelled`` when a cancel
      was requested: a cancelled run is never requeued). The :data:`MAX_WORKERS_LOST`-th time in a
      row it fails instead, saying why.
    - A queued run never published, or published more than ``republish_after_s`` ago and still
      not claimed, may have lost its message (e.g. Redis restarted without persistence).

    Returns:
        The ids of the runs to publish again; the caller filters out those whose message is still
        in the broker, publishes the rest after committing and marks them with
        :func:`publish_queued`.
    """
    return _reap(session, "run", _now(now), republish_after_s)


def reap_jobs(session: Session, *, now: dt.datetime | None = None, republish_after_s: float = 30.0) -> list[int]:
    """Recover jobs as :func:`reap` recovers runs."""
    return _reap(session, "job", _now(now), republish_after_s)
