"""Non-training jobs (predict, evaluate, ensemble, pseudo, dataset import, submission): create and read.

Claiming and finishing jobs is in :mod:`worker.services.lifecycle`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.base import utcnow
from worker.db.models import Job, JobKind, RunStatus
from worker.errors import InvalidInput
from worker.schemas import JobRead
from worker.services import access
from worker.services._common import check_actor, check_priority, get_or_raise
from worker.services.audit import record_event

__all__ = ["create_job", "get_job", "list_jobs"]


def create_job(
    session: Session,
    *,
    actor: int | None,
    kind: JobKind | str,
    target: dict[str, Any],
    params: dict[str, Any] | None = None,
    priority: int = 0,
) -> JobRead:
    """Queue a job (status ``queued``); the caller commits, then publishes ``job.id``.

    Args:
        kind: What to run.
        target: The ids it works on, e.g. ``{"run_ids": [3, 4]}`` or ``{"ensemble_id": 2}``.
        params: Task options (TTA policy, submission format...).

    Raises:
        InvalidInput: unknown kind, or target/params that are not mappings.
    """
    check_actor(session, actor)
    access.require_member(session, actor, "queue jobs")
    try:
        kind = JobKind(kind)
    except ValueError:
        raise InvalidInput(f"unknown job kind {kind!r}; use {', '.join(k.value for k in JobKind)}") from None
    if not isinstance(target, dict) or not target:
        raise InvalidInput("a job's target must be a non-empty mapping of ids, e.g. {'run_ids': [3]}")
    if params is not None and not isinstance(params, dict):
        raise InvalidInput("a job's params must be a mapping")
    check_priority(priority)
    if kind is JobKind.PREDICT and (params or {}).get("split", "test") == "test":
        _check_test_images(session, target)
    job = Job(kind=kind, target=target, params=params or {}, priority=priority, status=RunStatus.QUEUED,
              queued_at=utcnow(), created_by=actor)
    session.add(job)
    session.flush()
    record_event(session, actor=actor, action="job.create", object_kind="job", object_id=job.id,
                 detail={"kind": kind.value, "target": target})
    return JobRead.model_validate(job)


def _check_test_images(session: Session, target: dict[str, Any]) -> None:
    """Refuse a test prediction whose runs' (or groups') dataset has no test images, before it is queued."""
    from worker.db.models import Dataset, Run, RunGroup

    run_ids = [int(i) for i in target.get("run_ids") or []]
    group_ids = [int(i) for i in target.get("group_ids") or []]
    q = sa.select(Dataset).join(Run, Run.dataset_id == Dataset.id).where(Run.id.in_(run_ids))
    q2 = sa.select(Dataset).join(RunGroup, RunGroup.dataset_id == Dataset.id).where(RunGroup.id.in_(group_ids))
    for ds in {*session.scalars(q), *session.scalars(q2)}:
        if not ds.source.get("test_images"):
            raise InvalidInput(
                f"dataset {ds.name!r} has no test images, so there is nothing to predict; add its test folder "
                "(Datasets page, Edit) and queue the prediction again"
            )


def get_job(session: Session, *, job_id: int) -> JobRead:
    """One job.

    Raises:
        NotFound: no such job.
    """
    return JobRead.model_validate(get_or_raise(session, Job, job_id, "job"))


def list_jobs(
    session: Session,
    *,
    status: RunStatus | str | Iterable[RunStatus | str] | None = None,
    kind: JobKind | str | None = None,
    limit: int = 100,
) -> list[JobRead]:
    """Jobs, newest first.

    Raises:
        InvalidInput: unknown status or kind.
    """
    q = sa.select(Job)
    if status is not None:
        items = [status] if isinstance(status, (str, RunStatus)) else list(status)
        try:
            q = q.where(Job.status.in_([RunStatus(s) for s in items]))
        except ValueError:
            raise InvalidInput(f"unknown status in {items!r}") from None
    if kind is not None:
        try:
            q = q.where(Job.kind == JobKind(kind))
        except ValueError:
            raise InvalidInput(f"unknown job kind {kind!r}") from None
    return [JobRead.model_validate(j) for j in session.scalars(q.order_by(Job.id.desc()).limit(limit))]
