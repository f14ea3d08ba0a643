"""Publication of queued runs and jobs, and the reaper's settling of expired leases."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.models import Job, LogLevel, Run, RunLog, RunStatus
from worker.services.lifecycle._base import _QUEUED, _RUNNING, Outgoing, _log, _model, _now


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
