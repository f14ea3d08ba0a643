"""The reaper: brings back runs and jobs whose worker died, and messages the broker lost.

Each pass (every ``reaper_interval_s``):

1. running runs/jobs whose lease expired go back to ``queued`` (cancelled when a cancel was
   requested); they resume from their last checkpoint;
2. queued runs/jobs never published are published;
3. queued runs/jobs published more than ``republish_after_s`` ago, still not claimed and with no
   message waiting in Redis (e.g. Redis restarted without persistence) are published again.

Then it posts the notifications that are due (:func:`worker.services.notifications.send_pending`).

A duplicate message is harmless: claiming is one conditional UPDATE. Run it as ``segboard reaper``
(one per deployment is enough, more are safe) or in a thread (``segboard up`` does).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from worker.db.session import session_scope
from worker.queue.dispatch import publish, waiting_in_broker
from worker.services import lifecycle, notifications
from worker.settings import Settings

__all__ = ["ReapReport", "Reaper", "republish_after_s"]

log = logging.getLogger(__name__)


def republish_after_s(settings: Settings) -> float:
    """How long a queued, unclaimed run waits before the reaper looks for its message."""
    return max(2.0, 2.0 * settings.reaper_interval_s)


@dataclasses.dataclass(frozen=True)
class ReapReport:
    """What one pass published: ids of runs and jobs."""

    runs: tuple[int, ...] = ()
    jobs: tuple[int, ...] = ()


class Reaper:
    """Runs reaper passes against one database and one broker.

    Args:
        app: The Celery app (from :func:`worker.queue.celery_app.make_celery`) to publish with.
        factory: Session factory of the database.
        settings: Intervals and thresholds.
    """

    def __init__(self, app: Celery, factory: sessionmaker[Session], settings: Settings) -> None:
        self.app = app
        self.factory = factory
        self.settings = settings
        self.stopped = threading.Event()

    def run_once(self, *, now: dt.datetime | None = None) -> ReapReport:
        """One pass; returns what it published.

        Args:
            now: The time leases and publications are compared with (default: now).
        """
        after = republish_after_s(self.settings)
        with session_scope(self.factory) as s:
            most = self.settings.max_workers_lost
            run_ids = lifecycle.reap(s, now=now, republish_after_s=after, max_lost=most)
            job_ids = lifecycle.reap_jobs(s, now=now, republish_after_s=after, max_lost=most)
            never = {(o.kind, o.object_id) for o in lifecycle.pending_publication(s)}
        waiting = waiting_in_broker(self.app) if (run_ids or job_ids) else set()

        def keep(kind: str, i: int) -> bool:
            # never published (or released, or requeued by this pass): publish; otherwise only
            # when no message for it waits in the broker
            return (kind, i) in never or waiting is None or (kind, i) not in waiting

        runs = [i for i in run_ids if keep("run", i)]
        jobs = [i for i in job_ids if keep("job", i)]
        if runs or jobs:
            publish(self.app, self.factory, run_ids=runs, job_ids=jobs)
            log.info("reaper published runs %s and jobs %s", runs, jobs)
        return ReapReport(runs=tuple(runs), jobs=tuple(jobs))

    def loop(self) -> None:
        """Pass every ``reaper_interval_s`` until :meth:`stop`; a failing pass is logged and retried."""
        while not self.stopped.is_set():
            try:
                self.run_once()
                notifications.send_pending(self.factory, settings=self.settings,
                                           budget_s=self.settings.reaper_interval_s)
            except Exception as exc:  # noqa: BLE001 - the database or broker may be briefly away
                log.warning("reaper pass failed (retrying in %ss): %s", self.settings.reaper_interval_s, exc)
            self.stopped.wait(self.settings.reaper_interval_s)

    def start_thread(self) -> threading.Thread:
        """Run :meth:`loop` in a daemon thread."""
        t = threading.Thread(target=self.loop, name="segboard-reaper", daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        """Ask the loop to end after the current pass."""
        self.stopped.set()
