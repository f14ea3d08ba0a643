"""Claims, leases and endings of runs and jobs (the holder's side)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.models import LogLevel, RunStatus
from worker.errors import InvalidInput
from worker.services.lifecycle._base import (
    _QUEUED,
    _RUNNING,
    ClaimToken,
    LeaseState,
    _log,
    _model,
    _now,
    _owned,
    _settle_owner,
)
from worker.services.lifecycle._progress import _clean_json, _finite

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
    _settle_owner(session, kind, object_id)
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


# ------------------------------------------------------------------ endings


def _end(session: Session, token: ClaimToken, status: RunStatus, values: dict[str, Any], now: dt.datetime) -> bool:
    model = _model(token.kind)
    values = {**values, "status": status, "finished_at": now, "lease_expires_at": None}
    stmt = sa.update(model).where(_owned(model, token)).values(**values).execution_options(synchronize_session=False)
    ok = session.execute(stmt).rowcount == 1
    if ok:
        _settle_owner(session, token.kind, token.object_id)
    return ok


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
        _settle_owner(session, kind, object_id)
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
    object_id = token.object_id if token is not None else int(run_id)  # type: ignore[arg-type]  # checked above
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
    object_id = token.object_id if token is not None else int(job_id)  # type: ignore[arg-type]  # checked above
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

    The run keeps its checkpoints and resumes from the last one (``attempt`` + 1); it is published
    again by the caller or the reaper (``published_at`` is cleared).
    """
    now = _now(now)
    model = _model(token.kind)
    stmt = (
        sa.update(model)
        .where(_owned(model, token))
        .values(status=_QUEUED, worker_name=None, device=None, lease_expires_at=None, published_at=None,
                attempt=model.attempt + 1)
        .execution_options(synchronize_session=False)
    )
    ok = session.execute(stmt).rowcount == 1
    if ok:
        _log(session, token.kind, token.object_id, f"released ({reason}); it resumes from its last checkpoint",
             LogLevel.INFO, now)
        _settle_owner(session, token.kind, token.object_id)
    return ok


