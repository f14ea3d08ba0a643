"""The audit log: every service write records who did what to which object."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.models import AuditEvent
from worker.schemas import AuditEventRead

__all__ = ["record_event", "list_events"]


def record_event(
    session: Session,
    *,
    actor: int | None,
    action: str,
    object_kind: str,
    object_id: int | None,
    detail: dict[str, Any] | None = None,
) -> AuditEventRead:
    """Add one audit event (flushed, not committed).

    Args:
        actor: The acting member's id; None for the system (a worker, the reaper).
        action: A verb phrase such as ``"experiment.create"``.
        object_kind: The table-level noun (``"run"``, ``"dataset"``...).
        object_id: The object's id.
        detail: JSON-able facts worth keeping (changed fields, counts).
    """
    event = AuditEvent(
        actor_id=actor, action=action, object_kind=object_kind, object_id=object_id, detail=detail or {}
    )
    session.add(event)
    session.flush()
    return AuditEventRead.model_validate(event)


def list_events(
    session: Session,
    *,
    object_kind: str | None = None,
    object_id: int | None = None,
    actor_id: int | None = None,
    action: str | None = None,
    limit: int = 100,
) -> list[AuditEventRead]:
    """Newest events first, filtered by object, actor or action."""
    q = sa.select(AuditEvent)
    if object_kind is not None:
        q = q.where(AuditEvent.object_kind == object_kind)
    if object_id is not None:
        q = q.where(AuditEvent.object_id == object_id)
    if actor_id is not None:
        q = q.where(AuditEvent.actor_id == actor_id)
    if action is not None:
        q = q.where(AuditEvent.action == action)
    q = q.order_by(AuditEvent.id.desc()).limit(limit)
    return [AuditEventRead.model_validate(e) for e in session.scalars(q)]
