"""Publication of queued runs and jobs, and the reaper's settling of expired leases."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.models import Job, LogLevel, Run, RunStatus
from worker.services.lifecycle._base import _QUEUED, _RUNNING, Outgoing, _log, _model, _now, _settle_owner

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


def _settle_lost(
    session: Session, kind: str, object_id: int, where: sa.ColumnElement[bool], why: str, now: dt.datetime,
    max_lost: int = MAX_WORKERS_LOST,
) -> bool:
    """Put a run (or job) whose worker died back in the queue, or end it; True when it was requeued.

    ``where`` conditions the update on the state the caller saw (an expired lease, a dead
    worker's name), so a late heartbeat that renewed the lease wins. A cancel requested ends it
    cancelled; the ``max_lost``-th loss in a row (:data:`MAX_WORKERS_LOST` unless the settings say
    otherwise) fails it; otherwise it is requeued with ``attempt`` and ``lost_count`` + 1.
    """
    model = _model(kind)
    row = session.execute(
        sa.select(model.cancel_requested, model.lost_count, model.worker_name).where(model.id == object_id, where)
    ).one_or_none()
    if row is None:
        return False
    cancel, lost, worker_name = row
    base = sa.update(model).where(model.id == object_id, where).execution_options(synchronize_session=False)
    if cancel:
        if session.execute(base.values(status=RunStatus.CANCELLED, finished_at=now, lease_expires_at=None)).rowcount:
            _log(session, kind, object_id, f"cancelled: its worker {worker_name} {why}", LogLevel.WARNING, now)
            _settle_owner(session, kind, object_id)
        return False
    if lost + 1 >= max_lost:
        error = (
            f"its worker died {max_lost} times while running it (last: {worker_name}, which {why}); a "
            "process killed again and again is usually out of memory: lower training.batch_size or the image "
            "size, then requeue it"
        )
        stmt = base.values(status=RunStatus.FAILED, finished_at=now, lease_expires_at=None, error_message=error,
                           lost_count=model.lost_count + 1)
        if session.execute(stmt).rowcount:
            _log(session, kind, object_id, f"failed: {error}", LogLevel.ERROR, now)
            _settle_owner(session, kind, object_id)
        return False
    stmt = base.values(status=_QUEUED, worker_name=None, device=None, lease_expires_at=None, published_at=None,
                       attempt=model.attempt + 1, lost_count=model.lost_count + 1)
    if not session.execute(stmt).rowcount:
        return False
    _log(session, kind, object_id, f"requeued: worker {worker_name} {why}; it resumes from its last checkpoint",
         LogLevel.WARNING, now)
    _settle_owner(session, kind, object_id)
    return True


def _reap(session: Session, kind: str, now: dt.datetime, republish_after_s: float, max_lost: int) -> list[int]:
    model = _model(kind)
    expired = session.execute(
        sa.select(model.id, model.heartbeat_at).where(model.status == _RUNNING, model.lease_expires_at < now)
    ).all()
    requeued: list[int] = []
    for object_id, heartbeat_at in expired:
        last = heartbeat_at.isoformat(timespec="seconds") if heartbeat_at else "never"
        where = sa.and_(model.status == _RUNNING, model.lease_expires_at < now)
        if _settle_lost(session, kind, object_id, where, f"stopped sending heartbeats (last at {last})", now,
                        max_lost):
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


def requeue_dead_worker(
    session: Session, *, worker_names: Iterable[str], reason: str = "died", now: dt.datetime | None = None,
    max_lost: int = MAX_WORKERS_LOST,
) -> list[Outgoing]:
    """Recover at once the runs and jobs held by worker processes known to be dead.

    What a supervisor calls when it saw its worker exit, instead of waiting for the lease to
    expire: each running run or job claimed by one of ``worker_names`` is settled as the reaper
    settles an expired lease (requeued with ``attempt`` and ``lost_count`` + 1, cancelled, or
    failed the :data:`MAX_WORKERS_LOST`-th time).

    Returns:
        The runs and jobs it requeued; they are unpublished, so the reaper's next pass (or the
        caller, after the commit) publishes them.
    """
    now = _now(now)
    names = list(worker_names)
    out: list[Outgoing] = []
    for kind in ("run", "job"):
        model = _model(kind)
        if not names:
            break
        held = session.scalars(sa.select(model.id).where(model.status == _RUNNING, model.worker_name.in_(names)))
        for object_id in list(held):
            where = sa.and_(model.status == _RUNNING, model.worker_name.in_(names))
            if _settle_lost(session, kind, object_id, where, reason, now, max_lost):
                out += _pending(session, model, kind, [object_id])
    return out


def reap(session: Session, *, now: dt.datetime | None = None, republish_after_s: float = 30.0,
         max_lost: int = MAX_WORKERS_LOST) -> list[int]:
    """Recover runs whose worker died and queued runs whose message may be lost.

    - A running run whose lease expired goes back to ``queued`` (or to ``cancelled`` when a cancel
      was requested: a cancelled run is never requeued), with ``attempt`` and ``lost_count`` + 1.
      The :data:`MAX_WORKERS_LOST`-th time in a row (``lost_count``; a manual requeue resets it)
      it fails instead, saying why.
    - A queued run never published, or published more than ``republish_after_s`` ago and still
      not claimed, may have lost its message (e.g. Redis restarted without persistence).

    Returns:
        The ids of the runs to publish again; the caller filters out those whose message is still
        in the broker, publishes the rest after committing and marks them with
        :func:`publish_queued`.
    """
    return _reap(session, "run", _now(now), republish_after_s, max_lost)


def reap_jobs(session: Session, *, now: dt.datetime | None = None, republish_after_s: float = 30.0,
              max_lost: int = MAX_WORKERS_LOST) -> list[int]:
    """Recover jobs as :func:`reap` recovers runs."""
    return _reap(session, "job", _now(now), republish_after_s, max_lost)
