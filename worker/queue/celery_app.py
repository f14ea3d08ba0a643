"""The Celery application: built from explicit settings, never at import time.

A message carries only ids; the database is the source of truth of every run's state (see
``worker.services.lifecycle``). The app is configured so that no job is lost and none runs twice
at once:

- JSON only, ``acks_late`` and ``task_reject_on_worker_lost``: a message is acknowledged after its
  task returns, and goes back to the queue when the process running it dies;
- ``worker_prefetch_multiplier=1``: a worker process reserves one message at a time, so a job
  waits in the queue until a device is free rather than behind a busy one;
- the Redis ``visibility_timeout`` comes from the settings; a redelivery after it is harmless
  because claiming a run is one conditional UPDATE (a second delivery is a no-op);
- priorities use Redis priority steps 0..9 (0 is served first); :func:`broker_priority` maps a
  run's priority (higher runs sooner) onto them.

Example:
    >>> from worker.settings import get_settings
    >>> app = make_celery(get_settings(redis_url="redis://127.0.0.1:6379/0"))
    >>> app.conf.task_acks_late
    True
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from worker.settings import Settings

__all__ = [
    "TRAIN_TASK",
    "JOB_TASK",
    "PRIORITY_STEPS",
    "MAX_PRIORITY",
    "make_celery",
    "broker_priority",
    "settings_of",
]

TRAIN_TASK = "segboard.train_run"
JOB_TASK = "segboard.run_job"

# Redis keeps one list per step; 0 is popped first.
PRIORITY_STEPS: list[int] = list(range(10))
MAX_PRIORITY = PRIORITY_STEPS[-1]


def broker_priority(priority: int) -> int:
    """Map a run's priority (0..9, higher runs sooner; values outside are clamped) to a Redis step.

    Example:
        >>> broker_priority(9), broker_priority(0), broker_priority(-3)
        (0, 9, 9)
    """
    return MAX_PRIORITY - max(0, min(MAX_PRIORITY, int(priority)))


def _transport_options(settings: Settings) -> dict[str, Any]:
    visibility = int(settings.visibility_timeout_s)
    # Abandoned messages are swept every `interval * throttle` seconds; keep that well under the
    # visibility timeout so a short timeout (tests, small jobs) behaves as configured.
    interval = max(1, min(10, visibility // 4))
    return {
        "visibility_timeout": visibility,
        "priority_steps": PRIORITY_STEPS,
        "sep": ":",
        # the training and job queues take turns, so a long training queue never starves predictions
        "queue_order_strategy": "round_robin",
        "unacked_restore_interval": interval,
        "unacked_restore_throttle": 1 if visibility < 600 else 10,
        "socket_timeout": 30,
        "socket_connect_timeout": 10,
        "health_check_interval": 10,
    }


def make_celery(settings: Settings, *, broker_url: str | None = None) -> Celery:
    """Build the Celery app for ``settings``.

    Args:
        settings: Where the broker is, the queue names and the visibility timeout.
        broker_url: Overrides ``settings.redis_url`` (embedded mode passes the URL of the Redis it
            started).

    Raises:
        ValueError: No broker URL: ``settings.redis_url`` is unset and none was given.
    """
    url = broker_url or settings.redis_url
    if not url:
        raise ValueError(
            "no Redis URL: set SEGBOARD_REDIS_URL=redis://host:6379/0, or run `segboard up` "
            "which starts an embedded Redis"
        )
    app = Celery("segboard", broker=url, include=["worker.queue.tasks"], set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=None,
        worker_send_task_events=False,
        worker_enable_remote_control=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options=_transport_options(settings),
        task_queues=[Queue(settings.queue_name), Queue(settings.jobs_queue_name)],
        task_default_queue=settings.queue_name,
        task_routes={
            TRAIN_TASK: {"queue": settings.queue_name},
            JOB_TASK: {"queue": settings.jobs_queue_name},
        },
        task_default_priority=broker_priority(0),
        task_queue_max_priority=MAX_PRIORITY,
        timezone="UTC",
        enable_utc=True,
    )
    # The tasks read the settings from their app: nothing global, and tests can build several.
    app.conf.segboard_settings = settings
    return app


def settings_of(app: Celery) -> Settings:
    """The :class:`Settings` an app was built from by :func:`make_celery`.

    Raises:
        RuntimeError: The app was not built by :func:`make_celery`.
    """
    settings = app.conf.get("segboard_settings")
    if not isinstance(settings, Settings):
        raise RuntimeError("this Celery app was not built by worker.queue.celery_app.make_celery(settings)")
    return settings
