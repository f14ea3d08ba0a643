"""The sender: posts pending deliveries after their commit, retries with backoff, gives up in the end.

It owns its transactions (like :func:`worker.services.outbox.commit_then_publish`): each delivery is
claimed in one short transaction, posted with no transaction open, and its outcome recorded in
another, so the database never waits on the network and two senders (two reapers) never post the
same attempt twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Iterable
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from worker.db.base import utcnow
from worker.db.models import DeliveryStatus, NotificationDelivery, NotificationHook, PayloadFormat
from worker.db.session import session_scope
from worker.schemas import NotificationSendReport
from worker.services.notifications._hooks import mask_url, scrub
from worker.settings import Settings

__all__ = ["backoff_s", "payload", "send_pending"]

log = logging.getLogger(__name__)

# Slack shows up to 40,000 characters, Discord 2,000: one message stays well under both
_MAX_TEXT = 1900
# a claimed delivery whose sender died is tried again this long after the request's timeout
_CLAIM_GRACE_S = 60.0


def backoff_s(attempts: int, *, base_s: float) -> float:
    """The wait after the ``attempts``-th failed attempt: ``base_s`` x 4^(attempts - 1) (30 s, 2 min, 8 min, ...)."""
    return float(base_s) * 4.0 ** max(attempts - 1, 0)


def _slack_escape(text: str) -> str:
    # Slack reads <...> as links and mentions; these three are its documented escapes
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(payload_format: PayloadFormat, text: str, link: str | None = None) -> dict[str, Any]:
    """The JSON body for a hook: Slack's ``{"text": ...}`` or Discord's ``{"content": ...}``.

    Discord is told to ping nobody (``allowed_mentions``), so an ``@everyone`` in an error message stays text.

    Example:
        >>> payload(PayloadFormat.DISCORD, "SegBoard: run 3 succeeded", "https://sb.example.org/run?run=3")
        {'content': 'SegBoard: run 3 succeeded\\nhttps://sb.example.org/run?run=3', 'allowed_mentions': {'parse': []}}
    """
    body = text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."
    if payload_format is PayloadFormat.SLACK:
        return {"text": _slack_escape(body) + (f"\n{link}" if link else "")}
    return {"content": body + (f"\n{link}" if link else ""), "allowed_mentions": {"parse": []}}


class _HookUrlFilter(logging.Filter):
    """Masks the URL of a hook being posted in httpx's own log line (``HTTP Request: POST <url> ...``)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.urls and isinstance(record.args, tuple):
            record.args = tuple(mask_url(str(a)) if str(a) in self.urls else a for a in record.args)
        return True


_URL_FILTER = _HookUrlFilter()


def _hide_in_httpx_log(url: str) -> str:
    """Register ``url`` with the filter on the ``httpx`` logger (added once); returns the form httpx logs."""
    logger = logging.getLogger("httpx")
    if _URL_FILTER not in logger.filters:
        logger.addFilter(_URL_FILTER)
    shown = str(httpx.URL(url))
    _URL_FILTER.urls.add(shown)
    return shown


def _link(public_url: str | None, page: str | None) -> str | None:
    if not public_url or not page:
        return None
    return f"{public_url.rstrip('/')}/{page.lstrip('/')}"


@dataclasses.dataclass(frozen=True)
class _Claimed:
    delivery_id: int
    hook_id: int
    url: str
    payload_format: PayloadFormat
    text: str
    page: str | None


@dataclasses.dataclass(frozen=True)
class _Outcome:
    ok: bool
    error: str | None = None
    retry: bool = True


def _claim_next(factory: sessionmaker[Session], now: dt.datetime, hold_s: float, ids: list[int] | None,
                tried: set[int]) -> _Claimed | None:
    """Claim the oldest due delivery of an enabled hook: one conditional UPDATE moves its next attempt on."""
    with session_scope(factory) as s:
        q = (
            sa.select(NotificationDelivery.id, NotificationDelivery.next_attempt_at, NotificationDelivery.text,
                      NotificationDelivery.page, NotificationHook.id, NotificationHook.url,
                      NotificationHook.payload_format)
            .join(NotificationHook, NotificationHook.id == NotificationDelivery.hook_id)
            .where(NotificationDelivery.status == DeliveryStatus.PENDING, NotificationDelivery.next_attempt_at <= now,
                   NotificationHook.enabled.is_(True))
            .order_by(NotificationDelivery.next_attempt_at, NotificationDelivery.id)
        )
        if ids is not None:
            q = q.where(NotificationDelivery.id.in_(ids))
        if tried:
            q = q.where(NotificationDelivery.id.not_in(list(tried)))
        for row in s.execute(q.limit(5)).all():
            d_id, due, text, page, hook_id, url, fmt = row
            won = s.execute(
                sa.update(NotificationDelivery)
                .where(NotificationDelivery.id == d_id, NotificationDelivery.status == DeliveryStatus.PENDING,
                       NotificationDelivery.next_attempt_at == due)
                .values(next_attempt_at=now + dt.timedelta(seconds=hold_s))
                .execution_options(synchronize_session=False)
            ).rowcount
            if won == 1:
                return _Claimed(d_id, hook_id, url, fmt, text, page)
            tried.add(d_id)  # another sender took it
    return None


def _post(client: httpx.Client, claimed: _Claimed, public_url: str | None, timeout_s: float) -> _Outcome:
    """One attempt; every error message is scrubbed of the URL."""
    body = payload(claimed.payload_format, claimed.text, _link(public_url, claimed.page))
    try:
        shown = _hide_in_httpx_log(claimed.url)
    except (httpx.InvalidURL, ValueError):
        return _Outcome(False, "the URL is not valid; remove the hook and add it again", retry=False)
    try:
        response = client.post(claimed.url, json=body, headers={"User-Agent": "SegBoard notifications"})
    except httpx.TimeoutException:
        return _Outcome(False, f"no answer within {timeout_s:g} s")
    except Exception as exc:  # noqa: BLE001 - the endpoint is a boundary: any failure is this attempt's error
        return _Outcome(False, scrub(f"{type(exc).__name__}: {exc}", claimed.url))
    finally:
        _URL_FILTER.urls.discard(shown)
    code = response.status_code
    if 200 <= code < 300:
        return _Outcome(True)
    answer = scrub(response.text[:200], claimed.url)
    error = f"HTTP {code} {response.reason_phrase}" + (f": {answer}" if answer else "")
    if code in (408, 425, 429) or code >= 500:
        return _Outcome(False, error)
    return _Outcome(False, f"{error} (not retried: the endpoint refused the message; check the hook's URL and "
                           "format, then send a test with `segboard notify test`)", retry=False)


def _record(factory: sessionmaker[Session], claimed: _Claimed, outcome: _Outcome, now: dt.datetime,
            max_attempts: int, base_s: float) -> str:
    """Store an attempt's outcome; returns ``sent``, ``retrying`` or ``gave_up``."""
    with session_scope(factory) as s:
        d = s.get(NotificationDelivery, claimed.delivery_id)
        if d is None:  # its hook was removed meanwhile
            return "gave_up"
        d.attempts += 1
        if outcome.ok:
            d.status, d.sent_at, d.last_error = DeliveryStatus.SENT, now, None
            return "sent"
        if not outcome.retry or d.attempts >= max_attempts:
            d.status = DeliveryStatus.FAILED
            d.last_error = f"{outcome.error} (gave up after {d.attempts} attempt(s))"
            return "gave_up"
        d.next_attempt_at = now + dt.timedelta(seconds=backoff_s(d.attempts, base_s=base_s))
        d.last_error = outcome.error
        return "retrying"


def send_pending(
    factory: sessionmaker[Session],
    *,
    settings: Settings,
    now: dt.datetime | None = None,
    delivery_ids: Iterable[int] | None = None,
    limit: int = 100,
    budget_s: float | None = None,
    transport: httpx.BaseTransport | None = None,
) -> NotificationSendReport:
    """Post the deliveries that are due, once each; commits its own short transactions.

    An accepted message (2xx) is ``sent``. A timeout, a connection error, 408, 425, 429 or 5xx is
    tried again after :func:`backoff_s` (``notify_backoff_s`` x 4^(n-1)), until
    ``notify_max_attempts`` attempts; any other answer is given up at once. The last error is kept
    on the delivery, without the URL.

    Args:
        factory: Session factory of the database.
        settings: ``public_url``, ``notify_max_attempts``, ``notify_backoff_s``, ``notify_timeout_s``.
        now: The clock (default: the time of each attempt); tests drive it.
        delivery_ids: Only these deliveries (e.g. the test message just queued).
        limit: At most this many attempts in this call.
        budget_s: Start no attempt after this many seconds (the reaper's pass keeps its pace).
        transport: httpx transport (default: the network).

    Returns:
        How many were sent, are to be retried, or were given up.
    """
    ids = None if delivery_ids is None else [int(i) for i in delivery_ids]
    hold_s = float(settings.notify_timeout_s) + _CLAIM_GRACE_S
    deadline = None if budget_s is None else time.monotonic() + budget_s
    counts = {"sent": 0, "retrying": 0, "gave_up": 0}
    tried: set[int] = set()
    order: list[int] = []
    with contextlib.ExitStack() as stack:
        client: httpx.Client | None = None  # made for the first due delivery: most passes have none
        while len(order) < limit and (deadline is None or time.monotonic() < deadline):
            at = now or utcnow()
            claimed = _claim_next(factory, at, hold_s, ids, tried)
            if claimed is None:
                break
            if client is None:
                client = stack.enter_context(httpx.Client(timeout=settings.notify_timeout_s, follow_redirects=False,
                                                          transport=transport))
            tried.add(claimed.delivery_id)
            order.append(claimed.delivery_id)
            outcome = _post(client, claimed, settings.public_url, float(settings.notify_timeout_s))
            result = _record(factory, claimed, outcome, now or utcnow(), int(settings.notify_max_attempts),
                             float(settings.notify_backoff_s))
            counts[result] += 1
            if not outcome.ok:
                log.warning("notification %s to hook %s (%s): %s; %s", claimed.delivery_id, claimed.hook_id,
                            mask_url(claimed.url), outcome.error,
                            "will retry" if result == "retrying" else "gave up")
    return NotificationSendReport(delivery_ids=order, **counts)
