"""What a person does to a run or job: cancel, requeue, change its priority."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.models import Job, LogLevel, Run, RunStatus
from worker.errors import Conflict
from worker.services import access
from worker.services._common import check_actor, check_priority
from worker.services.audit import record_event
from worker.services.lifecycle._base import _QUEUED, _RUNNING, _get, _log, _model, _now, _settle_owner


def _owner(obj: Run | Job) -> int | None:
    return obj.owner_id if isinstance(obj, Run) else obj.created_by


def _request_cancel(session: Session, kind: str, object_id: int, now: dt.datetime, actor: int | None) -> RunStatus:
    model = _model(kind)
    obj = _get(session, model, object_id)
    check_actor(session, actor)
    access.require_owner(session, actor, _owner(obj), f"cancel {kind} {object_id}")
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
        _settle_owner(session, kind, object_id)
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


def _check_config_still_runs(session: Session, run: Run | Job, actor: int | None) -> None:
    """Refuse to requeue a run whose config the submit-time check refuses now: it would fail again at once."""
    from worker.errors import ConfigError, InvalidInput
    from worker.services.admission import validate_submission

    assert isinstance(run, Run)
    try:
        validate_submission(session, actor=actor, config=run.config, dataset_id=run.dataset_id)
    except (InvalidInput, ConfigError) as exc:
        raise InvalidInput(f"run {run.id} would fail again: {exc}; clone it, fix the config and queue the clone "
                           "instead") from exc


def _requeue(session: Session, kind: str, object_id: int, now: dt.datetime, actor: int | None) -> None:
    model = _model(kind)
    obj = _get(session, model, object_id)
    check_actor(session, actor)
    access.require_owner(session, actor, _owner(obj), f"requeue {kind} {object_id}")
    if kind == "run":
        access.check_active_run_limit(session, actor, 1)
        _check_config_still_runs(session, obj, actor)
    stmt = (
        sa.update(model)
        .where(model.id == object_id, model.status.in_([RunStatus.FAILED, RunStatus.CANCELLED]))
        .values(
            status=_QUEUED,
            attempt=model.attempt + 1,
            lost_count=0,
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
    _settle_owner(session, kind, object_id)
    session.refresh(obj)
    record_event(session, actor=actor, action=f"{kind}.requeue", object_kind=kind, object_id=object_id,
                 detail={"attempt": obj.attempt})


def requeue(session: Session, *, run_id: int, actor: int | None = None, now: dt.datetime | None = None) -> None:
    """Put a failed or cancelled run back in the queue (attempt + 1, lost_count 0); it resumes from its last checkpoint.

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
    access.require_owner(session, actor, _owner(obj), f"change the priority of {kind} {object_id}")
    if priority > obj.priority:
        access.check_priority_allowed(session, actor, priority)
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
