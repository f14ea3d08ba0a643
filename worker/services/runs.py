"""Runs, read side: lists, detail, per-epoch metrics, logs, the queue overview and config diffs.

State transitions (claim, heartbeat, progress, finish, cancel, requeue, reap) live in
:mod:`worker.services.lifecycle`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.orm import Session, load_only

from worker.artifacts import ArtifactError, Artifacts, local_path
from worker.db.base import utcnow
from worker.db.models import EpochMetric, Job, Run, RunLog, RunStatus, WorkerNode, WorkerStatus
from worker.errors import InvalidInput, ServiceError
from worker.schemas import ConfigChange, EpochMetricRead, LogLine, QueueSummary, RunRead, RunSummary
from worker.services import access
from worker.services._common import check_actor, clean_tags, get_or_raise, json_array_contains
from worker.services.audit import record_event

if TYPE_CHECKING:
    from segcore.data.policy import DataPolicy

__all__ = [
    "get_run",
    "list_runs",
    "count_runs",
    "epoch_metrics",
    "run_logs",
    "queue_summary",
    "config_diff",
    "data_policy",
    "set_run_tags",
    "run_tags",
]

_SUMMARY_COLUMNS = [name for name in RunSummary.model_fields]


def _statuses(status: RunStatus | str | Iterable[RunStatus | str] | None) -> list[RunStatus] | None:
    if status is None:
        return None
    items = [status] if isinstance(status, (str, RunStatus)) else list(status)
    try:
        return [RunStatus(s) for s in items]
    except ValueError:
        raise InvalidInput(
            f"unknown run status in {items!r}; use {', '.join(s.value for s in RunStatus)}"
        ) from None


def get_run(session: Session, *, run_id: int) -> RunRead:
    """One run with its config, best metrics and artifact locations.

    Raises:
        NotFound: no such run (it may have been deleted while its page was open).
    """
    return RunRead.model_validate(get_or_raise(session, Run, run_id, "run"))


def _filtered(
    session: Session,
    q: sa.Select[Any],
    *,
    status: Any,
    experiment_id: int | None,
    group_id: int | None,
    dataset_id: int | None,
    owner_id: int | None,
    arch: str | None,
    tag: str | None,
    search: str | None,
) -> sa.Select[Any]:
    statuses = _statuses(status)
    if statuses is not None:
        q = q.where(Run.status.in_(statuses))
    if experiment_id is not None:
        q = q.where(Run.experiment_id == experiment_id)
    if group_id is not None:
        q = q.where(Run.group_id == group_id)
    if dataset_id is not None:
        q = q.where(Run.dataset_id == dataset_id)
    if owner_id is not None:
        q = q.where(Run.owner_id == owner_id)
    if arch is not None:
        q = q.where(Run.arch == arch)
    if tag is not None:
        q = q.where(json_array_contains(session, Run.tags, tag))
    if search:
        q = q.where(Run.name.ilike(f"%{search}%"))
    return q


def list_runs(
    session: Session,
    *,
    status: RunStatus | str | Iterable[RunStatus | str] | None = None,
    experiment_id: int | None = None,
    group_id: int | None = None,
    dataset_id: int | None = None,
    owner_id: int | None = None,
    arch: str | None = None,
    tag: str | None = None,
    search: str | None = None,
    order: str = "newest",
    limit: int = 100,
    offset: int = 0,
) -> list[RunSummary]:
    """Runs as list rows.

    Args:
        status: One status or several.
        order: ``newest``, ``oldest``, ``queue`` (the order workers take them) or ``best``
            (monitor value, highest first).

    Raises:
        InvalidInput: unknown status or order.
    """
    orders = {
        "newest": [Run.id.desc()],
        "oldest": [Run.id.asc()],
        "queue": [Run.priority.desc(), Run.queued_at.asc(), Run.id.asc()],
        "best": [sa.nulls_last(Run.monitor_value.desc()), Run.id.asc()],
    }
    if order not in orders:
        raise InvalidInput(f"unknown order {order!r}; use {', '.join(orders)}")
    q = sa.select(Run).options(load_only(*[getattr(Run, c) for c in _SUMMARY_COLUMNS]))
    q = _filtered(session, q, status=status, experiment_id=experiment_id, group_id=group_id, dataset_id=dataset_id,
                  owner_id=owner_id, arch=arch, tag=tag, search=search)
    q = q.order_by(*orders[order]).limit(limit).offset(offset)
    return [RunSummary.model_validate(r) for r in session.scalars(q)]


def count_runs(
    session: Session,
    *,
    status: RunStatus | str | Iterable[RunStatus | str] | None = None,
    experiment_id: int | None = None,
    group_id: int | None = None,
    dataset_id: int | None = None,
    owner_id: int | None = None,
    arch: str | None = None,
    tag: str | None = None,
    search: str | None = None,
) -> int:
    """How many runs :func:`list_runs` would page through with the same filters."""
    q = sa.select(sa.func.count(Run.id))
    q = _filtered(session, q, status=status, experiment_id=experiment_id, group_id=group_id, dataset_id=dataset_id,
                  owner_id=owner_id, arch=arch, tag=tag, search=search)
    return int(session.scalar(q) or 0)


def epoch_metrics(session: Session, *, run_id: int, since_epoch: int | None = None) -> list[EpochMetricRead]:
    """The run's per-epoch rows in epoch order (only epochs after ``since_epoch`` when given).

    Raises:
        NotFound: no such run.
    """
    get_or_raise(session, Run, run_id, "run")
    q = sa.select(EpochMetric).where(EpochMetric.run_id == run_id)
    if since_epoch is not None:
        q = q.where(EpochMetric.epoch > since_epoch)
    return [EpochMetricRead.model_validate(m) for m in session.scalars(q.order_by(EpochMetric.epoch))]


def run_logs(session: Session, *, run_id: int, after_id: int = 0, limit: int = 500) -> list[LogLine]:
    """Log lines of a run with ids above ``after_id`` (pass the last id seen to tail the log).

    Raises:
        NotFound: no such run.
    """
    get_or_raise(session, Run, run_id, "run")
    q = (
        sa.select(RunLog)
        .where(RunLog.run_id == run_id, RunLog.id > after_id)
        .order_by(RunLog.id)
        .limit(limit)
    )
    return [LogLine.model_validate(line) for line in session.scalars(q)]


def queue_summary(session: Session, *, limit: int = 50, stale_after_s: float = 60.0) -> QueueSummary:
    """Counts by status, the running and the next queued runs, and how many workers are online."""
    runs_by_status = {s.value: 0 for s in RunStatus}
    for status, n in session.execute(sa.select(Run.status, sa.func.count()).group_by(Run.status)):
        runs_by_status[status.value] = n
    jobs_by_status = {s.value: 0 for s in RunStatus}
    for status, n in session.execute(sa.select(Job.status, sa.func.count()).group_by(Job.status)):
        jobs_by_status[status.value] = n
    running = list_runs(session, status=RunStatus.RUNNING, order="oldest", limit=limit)
    queued = list_runs(session, status=RunStatus.QUEUED, order="queue", limit=limit)
    cutoff = utcnow() - dt.timedelta(seconds=stale_after_s)
    online = session.scalar(
        sa.select(sa.func.count(WorkerNode.id)).where(
            WorkerNode.status != WorkerStatus.OFFLINE, WorkerNode.last_seen_at >= cutoff
        )
    )
    return QueueSummary(
        runs_by_status=runs_by_status, jobs_by_status=jobs_by_status, running=running, queued=queued,
        workers_online=int(online or 0),
    )


def data_policy(session: Session, *, run_id: int, artifacts: Artifacts | None) -> DataPolicy | None:
    """The data policy a run chose when it started (``data_policy.json`` in its run folder).

    Args:
        run_id: The run.
        artifacts: The artifact root, to fetch the file when the run folder is remote; None: it must be local.

    Returns:
        The crop, its rule in one line and the class shares and weights; None when the run has not
        started yet, or was trained before runs recorded their policy.

    Raises:
        NotFound: no such run.
        ServiceError: the file exists but is not a data policy.
    """
    from segcore.data.policy import DataPolicy

    folder = get_or_raise(session, Run, run_id, "run").artifact_dir
    if not folder:
        return None
    location = f"{str(folder).rstrip('/')}/data_policy.json"
    try:
        text = local_path(artifacts, location).read_text()
    except (ArtifactError, FileNotFoundError):
        return None
    try:
        return DataPolicy.model_validate_json(text)
    except ValidationError as exc:
        raise ServiceError(
            f"{location} is not a data policy record ({exc.error_count()} problem(s), first: "
            f"{exc.errors()[0]['msg']}); it is truncated or from another version, and the run's config.json "
            "still says which crop it trained with"
        ) from exc


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def config_diff(session: Session, *, run_id: int, other_run_id: int | None = None) -> list[ConfigChange]:
    """What changed from ``other_run_id``'s config (default: the run's parent) to the run's.

    Returns an empty list when there is nothing to compare with.

    Raises:
        NotFound: either run does not exist.
    """
    run = get_or_raise(session, Run, run_id, "run")
    other_id = other_run_id if other_run_id is not None else run.parent_run_id
    if other_id is None:
        return []
    other = get_or_raise(session, Run, other_id, "run")
    old, new = _flatten(other.config), _flatten(run.config)
    missing = object()
    changes = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path, missing), new.get(path, missing)
        if a != b:
            changes.append(ConfigChange(path=path, old=None if a is missing else a, new=None if b is missing else b))
    return changes


def run_tags(session: Session, *, dataset_id: int | None = None) -> list[str]:
    """Every tag some run carries (of one dataset, when given), sorted; for tag pickers."""
    stmt = sa.select(sa.cast(Run.tags, sa.Text)).distinct()
    if dataset_id is not None:
        stmt = stmt.where(Run.dataset_id == dataset_id)
    found: set[str] = set()
    for (text,) in session.execute(stmt):
        try:
            values = json.loads(text) if text else []
        except ValueError:
            continue
        found.update(str(v) for v in values if isinstance(v, str) and v)
    return sorted(found, key=str.lower)


def set_run_tags(session: Session, *, actor: int | None, run_id: int, tags: Iterable[str]) -> RunRead:
    """Replace a run's tags.

    Raises:
        InvalidInput: a tag is not text.
        NotFound: no such run.
    """
    check_actor(session, actor)
    run = get_or_raise(session, Run, run_id, "run")
    access.require_owner(session, actor, run.owner_id, f"change the tags of run {run_id}")
    old = list(run.tags)
    run.tags = clean_tags(tags)
    session.flush()
    record_event(session, actor=actor, action="run.set_tags", object_kind="run", object_id=run.id,
                 detail={"old": old, "new": run.tags})
    return RunRead.model_validate(run)
