"""The claim token, lease states and the helpers every lifecycle module uses."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.base import utcnow
from worker.db.models import Ensemble, Job, JobKind, LogLevel, PseudoRound, Run, RunLog, RunStatus, Submission
from worker.errors import NotFound
from worker.services import notifications, sweeps

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


# What a job works for: its owner takes the job's status (and error), so a failed job fails it.
# (job kind, target key naming the owner, owner model, whether the owner follows every state or
# only a failure, a cancel and a requeue: a predict job queued for an ensemble's members leaves
# the ensemble queued when it succeeds, until the ensemble itself is combined)
_OWNERS: tuple[tuple[JobKind, str, type[Ensemble] | type[PseudoRound] | type[Submission], bool], ...] = (
    (JobKind.ENSEMBLE, "ensemble_id", Ensemble, True),
    (JobKind.PSEUDO, "round_id", PseudoRound, True),
    (JobKind.SUBMISSION, "submission_id", Submission, True),
    (JobKind.PREDICT, "ensemble_id", Ensemble, False),
)


def _settle_owner(session: Session, kind: str, object_id: int) -> None:
    """Copy a job's state onto the ensemble, round or submission it works for; notify of what ended."""
    if kind != "job":
        notifications.record_settled(session, model=Run, object_id=object_id)  # the run, and its group
        sweeps.settle_trial(session, run_id=object_id)  # a sweep's trial: tell its study, queue the next
        return
    row = session.execute(
        sa.select(Job.kind, Job.target, Job.status, Job.error_message).where(Job.id == object_id)
    ).one_or_none()
    if row is None:
        return
    job_kind, target, status, error = row
    for owner_kind, key, model, follows_all in _OWNERS:
        owner_id = (target or {}).get(key)
        if job_kind is not owner_kind or owner_id is None:
            continue
        if not follows_all and status in (RunStatus.RUNNING, RunStatus.SUCCEEDED):
            return
        message = None
        if status is RunStatus.FAILED:
            message = f"job {object_id} ({job_kind.value}) failed: {error or 'no error message'}"
        elif status is RunStatus.CANCELLED:
            message = f"job {object_id} ({job_kind.value}) was cancelled"
        session.execute(
            sa.update(model).where(model.id == int(owner_id)).values(status=status, error_message=message)
            .execution_options(synchronize_session=False)
        )
        notifications.record_settled(session, model=model, object_id=int(owner_id))
        return
