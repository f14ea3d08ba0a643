"""Publishing run and job messages, and looking into the broker for the ones still waiting.

The order is always: change the database, commit, then send (see
:func:`worker.services.lifecycle.publish_queued`). A message carries the object's id only.

Example:
    >>> publish_pending(app, factory)          # every queued run/job never published
    3
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from worker.db.session import session_scope
from worker.queue.celery_app import JOB_TASK, PRIORITY_STEPS, TRAIN_TASK, broker_priority, settings_of
from worker.services import lifecycle
from worker.services.lifecycle import Outgoing

__all__ = ["send", "publish", "publish_pending", "waiting_in_broker", "task_id_for", "parse_task_id"]

log = logging.getLogger(__name__)


def task_id_for(kind: str, object_id: int) -> str:
    """A Celery task id that names the object, so the broker's contents can be read back."""
    return f"{kind}-{object_id}-{uuid.uuid4().hex[:12]}"


def parse_task_id(task_id: str) -> tuple[str, int] | None:
    """``("run", 7)`` from ``"run-7-<hex>"``; None for ids not made by :func:`task_id_for`."""
    parts = str(task_id).split("-")
    if len(parts) != 3 or parts[0] not in {"run", "job"} or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def send(app: Celery, messages: Iterable[Outgoing]) -> int:
    """Send one message per run/job (after the database change is committed).

    Returns:
        How many were sent.
    """
    settings = settings_of(app)
    n = 0
    for m in messages:
        task, queue = (TRAIN_TASK, settings.queue_name) if m.kind == "run" else (JOB_TASK, settings.jobs_queue_name)
        app.send_task(
            task,
            args=[m.object_id],
            queue=queue,
            priority=broker_priority(m.priority),
            task_id=task_id_for(m.kind, m.object_id),
        )
        n += 1
    return n


def publish(
    app: Celery,
    factory: sessionmaker[Session],
    *,
    run_ids: Sequence[int] = (),
    job_ids: Sequence[int] = (),
) -> int:
    """Mark the given queued runs and jobs published, commit, and send their messages."""
    with session_scope(factory) as session:
        out = lifecycle.publish_queued(session, run_ids=run_ids) if run_ids else []
        out += lifecycle.publish_queued_jobs(session, job_ids=job_ids) if job_ids else []
    return send(app, out)


def publish_pending(app: Celery, factory: sessionmaker[Session]) -> int:
    """Publish every queued run and job that was never published (what ``submit`` leaves behind)."""
    with session_scope(factory) as session:
        out = lifecycle.publish_queued(session) + lifecycle.publish_queued_jobs(session)
    return send(app, out)


def _decode(raw: bytes | str) -> tuple[str, int] | None:
    try:
        payload: Any = json.loads(raw)
    except (TypeError, ValueError):
        return None
    if isinstance(payload, list) and payload:  # an unacked entry: [message, exchange, routing key]
        payload = payload[0]
    if not isinstance(payload, dict):
        return None
    headers = payload.get("headers") or {}
    return parse_task_id(headers.get("id", ""))


def waiting_in_broker(app: Celery) -> set[tuple[str, int]] | None:
    """The runs and jobs whose message waits in a Redis queue, as ``{("run", 7), ...}``.

    Messages already delivered to a worker (unacknowledged) are not counted: if that worker died,
    Redis gives them back only after the visibility timeout, so the reaper must not wait for them.

    Returns:
        None when the broker cannot be read (the caller then republishes without this filter).
    """
    settings = settings_of(app)
    try:
        with app.connection_for_read() as conn:
            client = conn.default_channel.client
            found: set[tuple[str, int]] = set()
            for queue in (settings.queue_name, settings.jobs_queue_name):
                for step in PRIORITY_STEPS:
                    key = queue if step == 0 else f"{queue}:{step}"
                    for raw in client.lrange(key, 0, -1):
                        item = _decode(raw)
                        if item is not None:
                            found.add(item)
            return found
    except Exception as exc:  # noqa: BLE001 - any broker trouble means "unknown", never a crash
        log.warning("cannot read the broker's queues (%s); republishing without checking them", exc)
        return None
