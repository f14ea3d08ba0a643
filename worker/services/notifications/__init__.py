"""Notifications: webhooks (Slack or Discord JSON) told when a run, group, sweep, ensemble, pseudo-label
round or submission succeeds or fails (docs/notifications.md).

- **Hooks** (:mod:`._hooks`): a member's (all of their objects) or an experiment's (its runs and
  groups), added by the owner or an admin. The URL is a secret: read models, audit events, logs and
  error messages show only its host and a masked path.
- **Events** (:mod:`._events`): the lifecycle module calls :func:`record_settled` where it changes a
  run's status or copies a job's status onto what the job works for; other code (a sweep's end)
  calls :func:`notify`. Either writes one pending delivery per matching hook in the caller's
  transaction (the outbox), so an event is committed with its status change or not at all, and the
  status change never waits on the network.
- **Sender** (:mod:`._sender`): :func:`send_pending` posts due deliveries with a short timeout,
  retries with exponential backoff and gives up after ``notify_max_attempts``. The reaper runs it
  every pass; ``segboard notify send-pending`` runs it once.

Example:
    >>> hook = add_hook(session, actor=ada, url=url, payload_format="slack")  # doctest: +SKIP
    >>> # ... a run of ada's ends; after the commit:
    >>> send_pending(factory, settings=settings).sent  # doctest: +SKIP
    1
"""

from __future__ import annotations

from worker.services.notifications._events import first_line, notify, record_settled
from worker.services.notifications._hooks import (
    EVENTS,
    add_hook,
    get_hook,
    list_deliveries,
    list_hooks,
    mask_url,
    queue_test,
    remove_hook,
    scrub,
    set_hook_enabled,
)
from worker.services.notifications._sender import backoff_s, payload, send_pending

__all__ = [
    "EVENTS",
    "add_hook",
    "list_hooks",
    "get_hook",
    "set_hook_enabled",
    "remove_hook",
    "queue_test",
    "list_deliveries",
    "mask_url",
    "scrub",
    "notify",
    "record_settled",
    "first_line",
    "send_pending",
    "backoff_s",
    "payload",
]
