"""Events: a delivery row per matching hook, written in the transaction of the status change it reports."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.base import utcnow
from worker.db.models import (
    DeliveryStatus,
    Ensemble,
    NotificationDelivery,
    NotificationHook,
    PseudoRound,
    Run,
    RunGroup,
    RunStatus,
    Submission,
)

__all__ = ["notify", "record_settled"]

log = logging.getLogger(__name__)

# the statuses that notify, and the event each is
_EVENT = {RunStatus.SUCCEEDED: "succeeded", RunStatus.FAILED: "failed"}
_DETAIL_CHARS = 300


def first_line(text: str | None) -> str | None:
    """The first non-empty line of an error message, cut to a few hundred characters."""
    for line in str(text or "").splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= _DETAIL_CHARS else line[: _DETAIL_CHARS - 3] + "..."
    return None


@contextlib.contextmanager
def _kept_apart(session: Session, what: str) -> Iterator[None]:
    """Run the block in a savepoint: if recording a notification fails, the status change still commits."""
    session.flush()  # the caller's own pending writes fail (or not) on their own, outside the savepoint
    conn = session.connection()
    # pysqlite opens its transaction at the first write: a SAVEPOINT before any write would be the
    # outermost transaction and commit on release, so there (with nothing to protect yet) none is used
    fresh = conn.dialect.name == "sqlite" and not getattr(conn.connection.dbapi_connection, "in_transaction", True)
    try:
        with contextlib.nullcontext() if fresh else session.begin_nested():
            yield
    except Exception:  # a notification never fails the status change it reports
        log.warning("could not record the notifications of %s; the status change is kept", what, exc_info=True)


def _notify(
    session: Session, *, event: str, object_kind: str, object_id: int | None, owner_id: int | None,
    experiment_id: int | None, title: str, detail: str | None, page: str | None, now: dt.datetime,
) -> int:
    scopes = []
    if owner_id is not None:
        scopes.append(NotificationHook.member_id == owner_id)
    if experiment_id is not None:
        scopes.append(NotificationHook.experiment_id == experiment_id)
    if not scopes:
        return 0
    hooks = session.execute(
        sa.select(NotificationHook.id, NotificationHook.events)
        .where(sa.or_(*scopes), NotificationHook.enabled.is_(True)).order_by(NotificationHook.id)
    ).all()
    text = f"SegBoard: {title} {event}" + (f": {detail}" if detail else "")
    rows = [
        {"hook_id": hook_id, "event": event, "object_kind": object_kind, "object_id": object_id, "text": text,
         "page": page, "status": DeliveryStatus.PENDING, "attempts": 0, "next_attempt_at": now, "created_at": now}
        for hook_id, events in hooks if event in (events or [])
    ]
    if rows:  # a Core insert: a failure here leaves the caller's ORM session usable
        session.execute(sa.insert(NotificationDelivery), rows)
    return len(rows)


def notify(
    session: Session,
    *,
    event: str,
    object_kind: str,
    object_id: int | None,
    owner_id: int | None,
    experiment_id: int | None = None,
    title: str,
    detail: str | None = None,
    page: str | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Record that an object finished: one pending delivery per enabled hook that wants ``event``.

    The hooks are the owner's member hooks and, with ``experiment_id``, that experiment's hooks.
    Nothing is sent here: the rows are part of the caller's transaction (commit or roll back with
    the status change), and the sender posts them after the commit. A failure to record is logged and
    swallowed (in a savepoint), so the status change itself always goes through.

    Args:
        event: ``"succeeded"`` or ``"failed"`` (hooks choose which of these they receive).
        object_kind: What finished, e.g. ``"run"``, ``"group"``, ``"sweep"``.
        object_id: Its id.
        owner_id: The member whose member hooks hear of it (None: nobody's).
        experiment_id: The experiment whose hooks hear of it (None: none).
        title: The object as the message names it, e.g. ``'sweep 4 "lr x encoder"'``.
        detail: The score, or the error's first line (see :func:`first_line`).
        page: The object's page relative to the dashboard (``run?run=3``); linked when ``public_url`` is set.
        now: When it happened (default: now).

    Returns:
        How many deliveries were recorded.

    Example:
        >>> notify(session, event="succeeded", object_kind="sweep", object_id=4, owner_id=2,
        ...        experiment_id=None, title='sweep 4 "lr x encoder"', detail="best miou 0.8123 (run 17)",
        ...        page="sweeps?sweep=4")  # doctest: +SKIP
        1
    """
    count = 0
    with _kept_apart(session, f"{object_kind} {object_id}"):
        count = _notify(session, event=event, object_kind=object_kind, object_id=object_id, owner_id=owner_id,
                        experiment_id=experiment_id, title=title, detail=detail, page=page, now=now or utcnow())
    return count


def _score(metric: str, value: float | None) -> str | None:
    return f"{metric} {value:.4f}" if value is not None else None


def _run(session: Session, run_id: int, now: dt.datetime) -> int:
    row = session.execute(
        sa.select(Run.name, Run.status, Run.owner_id, Run.experiment_id, Run.group_id, Run.monitor_metric,
                  Run.monitor_value, Run.error_message).where(Run.id == run_id)
    ).one_or_none()
    if row is None:
        return 0
    count = 0
    event = _EVENT.get(row.status)
    if event is not None:
        detail = (_score(row.monitor_metric, row.monitor_value) if event == "succeeded"
                  else first_line(row.error_message))
        count += _notify(session, event=event, object_kind="run", object_id=run_id, owner_id=row.owner_id,
                         experiment_id=row.experiment_id, title=f'run {run_id} "{row.name}"', detail=detail,
                         page=f"run?run={run_id}", now=now)
    if row.group_id is not None and row.status.is_terminal:
        count += _group(session, row.group_id, now)
    return count


def _group(session: Session, group_id: int, now: dt.datetime) -> int:
    """A group of several runs settles when its last run ends: it failed if any run failed."""
    # the lock on the group's row orders the runs of one group that end at the same moment
    # (PostgreSQL), so exactly one of them sees the group settled
    group = session.execute(
        sa.select(RunGroup.label, RunGroup.owner_id, RunGroup.experiment_id, RunGroup.monitor_metric)
        .where(RunGroup.id == group_id).with_for_update()
    ).one_or_none()
    runs = session.execute(sa.select(Run.status, Run.monitor_value).where(Run.group_id == group_id)).all()
    if group is None or len(runs) < 2 or not all(r.status.is_terminal for r in runs):
        return 0  # a group of one run is that run, already reported
    failed = sum(r.status is RunStatus.FAILED for r in runs)
    values = [r.monitor_value for r in runs if r.status is RunStatus.SUCCEEDED and r.monitor_value is not None]
    if failed:
        event, detail = "failed", f"{failed} of {len(runs)} runs failed"
    elif any(r.status is RunStatus.SUCCEEDED for r in runs):
        mean = sum(values) / len(values) if values else None
        event, detail = "succeeded", _score(f"mean {group.monitor_metric}", mean)
    else:
        return 0  # every run was cancelled: nothing finished
    return _notify(session, event=event, object_kind="group", object_id=group_id, owner_id=group.owner_id,
                   experiment_id=group.experiment_id, title=f'group {group_id} "{group.label}" ({len(runs)} runs)',
                   detail=detail, page=f"run?group={group_id}", now=now)


def _row(session: Session, model: Any, object_id: int, *columns: Any) -> Any:
    # columns, not the ORM object: the lifecycle updates statuses without refreshing loaded objects
    return session.execute(
        sa.select(model.id, model.status, model.error_message, *columns).where(model.id == object_id)
    ).one_or_none()


def _ensemble(session: Session, ensemble_id: int, now: dt.datetime) -> int:
    e = _row(session, Ensemble, ensemble_id, Ensemble.name, Ensemble.owner_id, Ensemble.monitor_metric,
             Ensemble.val_score)
    if e is None or (event := _EVENT.get(e.status)) is None:
        return 0
    detail = _score(e.monitor_metric, e.val_score) if event == "succeeded" else first_line(e.error_message)
    return _notify(session, event=event, object_kind="ensemble", object_id=e.id, owner_id=e.owner_id,
                   experiment_id=None, title=f'ensemble {e.id} "{e.name}"', detail=detail,
                   page=f"ensemble-builder?ensemble={e.id}", now=now)


def _pseudo_round(session: Session, round_id: int, now: dt.datetime) -> int:
    r = _row(session, PseudoRound, round_id, PseudoRound.name, PseudoRound.created_by)
    if r is None or (event := _EVENT.get(r.status)) is None:
        return 0
    detail = None if event == "succeeded" else first_line(r.error_message)
    return _notify(session, event=event, object_kind="pseudo_round", object_id=r.id, owner_id=r.created_by,
                   experiment_id=None, title=f'pseudo-label round {r.id} "{r.name}"', detail=detail,
                   page="pseudo-labels", now=now)


def _submission(session: Session, submission_id: int, now: dt.datetime) -> int:
    s = _row(session, Submission, submission_id, Submission.created_by, Submission.run_id, Submission.group_id,
             Submission.ensemble_id, Submission.format)
    if s is None or (event := _EVENT.get(s.status)) is None:
        return 0
    if s.run_id is not None:
        source, page = f"run {s.run_id}", f"run?run={s.run_id}"
    elif s.group_id is not None:
        source, page = f"group {s.group_id}", f"run?group={s.group_id}"
    else:
        source, page = f"ensemble {s.ensemble_id}", f"ensemble-builder?ensemble={s.ensemble_id}"
    detail = f"{s.format} file written" if event == "succeeded" else first_line(s.error_message)
    return _notify(session, event=event, object_kind="submission", object_id=s.id, owner_id=s.created_by,
                   experiment_id=None, title=f"submission {s.id} of {source}", detail=detail, page=page, now=now)


_SETTLED: dict[Any, Any] = {
    Run: _run,
    Ensemble: _ensemble,
    PseudoRound: _pseudo_round,
    Submission: _submission,
}


def record_settled(
    session: Session,
    *,
    model: type[Run] | type[Ensemble] | type[PseudoRound] | type[Submission],
    object_id: int,
    now: dt.datetime | None = None,
) -> int:
    """Notify about a run, ensemble, pseudo-label round or submission whose status just changed.

    Called by the lifecycle module wherever it changes a run's status or copies a job's status onto
    what the job works for. Only a success or a failure notifies; a run's end also settles its group
    (a group of several runs notifies when its last run ends). Failures to record are logged and
    swallowed, as in :func:`notify`.

    Returns:
        How many deliveries were recorded.
    """
    count = 0
    with _kept_apart(session, f"{model.__tablename__} {object_id}"):
        count = _SETTLED[model](session, int(object_id), now or utcnow())
    return count
