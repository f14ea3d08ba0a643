"""The claim token, lease states and the helpers every lifecycle module uses."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.base import utcnow
from worker.db.models import Job, LogLevel, Run, RunLog, RunStatus
from worker.errors import NotFound


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
