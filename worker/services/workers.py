"""Worker nodes as they report themselves: name, devices, current run, last seen."""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.base import utcnow
from worker.db.models import Run, WorkerNode, WorkerStatus
from worker.errors import InvalidInput, NotFound
from worker.schemas import WorkerRead
from worker.services import access
from worker.services._common import check_actor
from worker.services.audit import record_event

__all__ = ["register_worker", "touch_worker", "mark_worker_offline", "get_worker", "list_workers"]


def register_worker(
    session: Session,
    *,
    actor: int | None = None,
    name: str,
    hostname: str | None = None,
    devices: list[Any] | None = None,
) -> WorkerRead:
    """Create or refresh the row of a starting worker (same name: same row, restarted).

    Raises:
        InvalidInput: empty name.
    """
    check_actor(session, actor)
    access.require_admin(session, actor, "register workers")
    if not name or not name.strip():
        raise InvalidInput("a worker needs a name (settings.worker_name)")
    now = utcnow()
    node = session.scalar(sa.select(WorkerNode).where(WorkerNode.name == name))
    if node is None:
        node = WorkerNode(name=name, hostname=hostname or socket.gethostname(), devices=devices or [])
        session.add(node)
    node.hostname = hostname or node.hostname
    node.devices = list(devices or [])
    node.status = WorkerStatus.IDLE
    node.current_run_id = None
    node.started_at = now
    node.last_seen_at = now
    session.flush()
    record_event(session, actor=actor, action="worker.register", object_kind="worker", object_id=node.id,
                 detail={"name": name, "devices": node.devices})
    return WorkerRead.model_validate(node)


def touch_worker(
    session: Session,
    *,
    name: str,
    current_run_id: int | None = None,
    status: WorkerStatus | str | None = None,
) -> WorkerRead:
    """A worker's heartbeat: last seen now, its current run and status.

    Heartbeats are telemetry every few seconds, so they are not written to the audit log.

    Raises:
        NotFound: the worker never registered.
    """
    node = session.scalar(sa.select(WorkerNode).where(WorkerNode.name == name))
    if node is None:
        raise NotFound("worker", name, "call register_worker when the worker starts")
    if current_run_id is not None and session.get(Run, current_run_id) is None:
        current_run_id = None
    node.current_run_id = current_run_id
    node.status = WorkerStatus(status) if status is not None else (
        WorkerStatus.BUSY if current_run_id is not None else WorkerStatus.IDLE
    )
    node.last_seen_at = utcnow()
    session.flush()
    return WorkerRead.model_validate(node)


def mark_worker_offline(session: Session, *, actor: int | None = None, name: str) -> WorkerRead:
    """Mark a worker offline (it stopped cleanly, or the reaper found it silent).

    Raises:
        NotFound: no such worker.
    """
    check_actor(session, actor)
    access.require_admin(session, actor, "mark workers offline")
    node = session.scalar(sa.select(WorkerNode).where(WorkerNode.name == name))
    if node is None:
        raise NotFound("worker", name)
    node.status = WorkerStatus.OFFLINE
    node.current_run_id = None
    session.flush()
    record_event(session, actor=actor, action="worker.offline", object_kind="worker", object_id=node.id)
    return WorkerRead.model_validate(node)


def get_worker(session: Session, *, name: str) -> WorkerRead:
    """One worker by name.

    Raises:
        NotFound: no such worker.
    """
    node = session.scalar(sa.select(WorkerNode).where(WorkerNode.name == name))
    if node is None:
        raise NotFound("worker", name)
    return WorkerRead.model_validate(node)


def list_workers(session: Session, *, stale_after_s: float = 60.0) -> list[WorkerRead]:
    """Every worker by name; one not seen for ``stale_after_s`` is shown offline."""
    cutoff = utcnow() - dt.timedelta(seconds=stale_after_s)
    out = []
    for node in session.scalars(sa.select(WorkerNode).order_by(WorkerNode.name)):
        read = WorkerRead.model_validate(node)
        if node.last_seen_at < cutoff and read.status is not WorkerStatus.OFFLINE:
            read = read.model_copy(update={"status": WorkerStatus.OFFLINE})
        out.append(read)
    return out
