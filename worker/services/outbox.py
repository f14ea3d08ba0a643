"""Commit, then publish: how the dashboard and the CLI queue runs and jobs.

The database is the source of truth. A unit of work creates (or requeues) runs and jobs in one
transaction; only after its commit are their queue messages sent, carrying ids only
(:func:`worker.queue.dispatch.publish`). A broker that cannot be reached is reported, never fatal: the
reaper publishes queued work it finds once Redis and a worker are up.

Example:
    >>> job, sent = commit_then_publish(factory, lambda s: jobs.create_job(s, actor=1, kind="predict",
    ...                                 target={"run_ids": [3]}), queued=lambda j: Queued(job_ids=(j.id,)),
    ...                                 send=celery_sender(app, factory))  # doctest: +SKIP
    >>> sent.problem is None  # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from worker.db.session import session_scope

__all__ = ["Queued", "Published", "Sender", "celery_sender", "publish", "commit_then_publish"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Queued:
    """The runs and jobs a unit of work left queued: their messages go out after the commit."""

    run_ids: tuple[int, ...] = ()
    job_ids: tuple[int, ...] = ()

    @classmethod
    def of(cls, *, run_ids: Iterable[int] = (), job_ids: Iterable[int] = ()) -> Queued:
        """From any iterables of ids."""
        return cls(tuple(int(i) for i in run_ids), tuple(int(i) for i in job_ids))

    def __bool__(self) -> bool:
        return bool(self.run_ids or self.job_ids)


@dataclasses.dataclass(frozen=True)
class Published:
    """What sending did: how many messages went out, or why they did not (the reaper sends them later)."""

    sent: int
    problem: str | None = None


#: Sends the messages of committed queued runs and jobs; returns how many were sent.
Sender = Callable[[Queued], int]


def celery_sender(app: Any, factory: sessionmaker[Session]) -> Sender:
    """A :data:`Sender` over a Celery app (:func:`worker.queue.dispatch.publish`)."""

    def send(queued: Queued) -> int:
        from worker.queue import dispatch

        return dispatch.publish(app, factory, run_ids=queued.run_ids, job_ids=queued.job_ids)

    return send


def _one_line(text: str) -> str:
    return "; ".join(ln.strip() for ln in str(text).splitlines() if ln.strip()) or "unknown error"


def publish(queued: Queued, send: Sender | None) -> Published:
    """Send the messages of committed queued work; a broker problem is returned, not raised.

    Args:
        queued: What the committed unit of work queued.
        send: The sender; None when no broker is configured or running.
    """
    if not queued:
        return Published(0)
    if send is None:
        return Published(0, "no broker is configured or running; the reaper of `segboard up` publishes the queued "
                            "work when it starts")
    try:
        return Published(send(queued))
    except Exception as exc:  # noqa: BLE001 - the broker is a boundary; the reaper covers a lost message
        log.warning("publishing runs %s / jobs %s failed: %s", queued.run_ids, queued.job_ids, exc)
        return Published(0, f"saved as queued, but the queue cannot be reached ({type(exc).__name__}: "
                            f"{_one_line(str(exc))}). Nothing is lost: the reaper publishes queued work again once "
                            "Redis and a worker are up (`segboard up`, or set SEGBOARD_REDIS_URL)")


def commit_then_publish(
    factory: sessionmaker[Session],
    work: Callable[[Session], T],
    *,
    queued: Callable[[T], Queued],
    send: Sender | None,
) -> tuple[T, Published]:
    """Run ``work`` in one transaction, commit, then send the messages of what it queued.

    Args:
        factory: The session factory.
        work: Service calls in one transaction (``session`` in, a read model out).
        queued: What the result queued, e.g. ``lambda job: Queued(job_ids=(job.id,))``.
        send: The sender (:func:`celery_sender`); None when no broker is configured.

    Returns:
        ``work``'s result and what sending did.

    Raises:
        Whatever ``work`` raises (nothing is committed or sent then).
    """
    with session_scope(factory) as session:
        result = work(session)
        what = queued(result)
    return result, publish(what, send)
