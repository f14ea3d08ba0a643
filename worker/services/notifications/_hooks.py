"""Hooks: adding, listing, enabling and removing webhooks; their URLs checked, masked and kept out of errors."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.base import utcnow
from worker.db.models import (
    DeliveryStatus,
    Experiment,
    Member,
    MemberRole,
    NotificationDelivery,
    NotificationHook,
    PayloadFormat,
)
from worker.errors import Conflict, InvalidInput
from worker.schemas import NotificationDeliveryRead, NotificationHookRead
from worker.services import access
from worker.services._common import check_actor, check_name, get_or_raise
from worker.services.audit import record_event

__all__ = [
    "EVENTS",
    "mask_url",
    "scrub",
    "add_hook",
    "list_hooks",
    "get_hook",
    "set_hook_enabled",
    "remove_hook",
    "queue_test",
    "list_deliveries",
]

#: The events a hook can receive; a test message is sent whatever a hook's events are.
EVENTS: tuple[str, ...] = ("succeeded", "failed")
MAX_URL_CHARS = 2000
_MASK = "•••"  # not Markdown: pages show it as typed


def mask_url(url: str) -> str:
    """The scheme and host of a webhook URL and a masked path: what pages and lists show.

    Example:
        >>> mask_url("https://hooks.slack.com/services/T0/B0/secret")
        'https://hooks.slack.com/•••'
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return _MASK
    return f"{parts.scheme}://{host}{port}/{_MASK}"


def scrub(text: str, url: str) -> str:
    """``text`` (an error message) on one line, with every part of ``url`` that could be secret masked."""
    out = " ".join(str(text).split())
    try:
        parts = urlsplit(url)
        secrets = [url, url.rstrip("/"), parts.netloc + parts.path, parts.path, parts.query, parts.password or ""]
    except ValueError:
        secrets = [url]
    for secret in sorted({s for s in secrets if len(s) > 1}, key=len, reverse=True):
        out = out.replace(secret, f"/{_MASK}" if secret.startswith("/") else _MASK)
    return out[:500]


def _check_url(url: Any) -> str:
    """The URL without surrounding spaces; every message names the problem, never the URL."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput("the webhook URL is empty; paste the URL that Slack or Discord gave for the channel")
    url = url.strip()
    if len(url) > MAX_URL_CHARS or any(c.isspace() or ord(c) < 32 for c in url):
        raise InvalidInput(f"the webhook URL has spaces or control characters, or is longer than {MAX_URL_CHARS} "
                           "characters; paste the URL exactly as the chat service gave it")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise InvalidInput("the webhook URL cannot be parsed; paste it exactly as the chat service gave it") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidInput("the webhook URL must start with https:// (or http://) and name a host, "
                           "e.g. https://hooks.slack.com/services/...")
    return url


def _events(events: Iterable[str] | None) -> list[str]:
    if events is None:
        return list(EVENTS)
    chosen = [str(e).strip().lower() for e in events if str(e).strip()]
    unknown = sorted(set(chosen) - set(EVENTS))
    if unknown or not chosen:
        raise InvalidInput(f"unknown or no events {unknown or chosen}; choose from {', '.join(EVENTS)}")
    return [e for e in EVENTS if e in chosen]


def _format(payload_format: Any) -> PayloadFormat:
    try:
        return PayloadFormat(str(getattr(payload_format, "value", payload_format)).strip().lower())
    except ValueError:
        raise InvalidInput(f"unknown payload format {str(payload_format)[:40]!r}; use "
                           f"{' or '.join(f.value for f in PayloadFormat)}") from None


def _read(hook: NotificationHook) -> NotificationHookRead:
    return NotificationHookRead(
        id=hook.id, name=hook.name, member_id=hook.member_id, experiment_id=hook.experiment_id,
        url_display=mask_url(hook.url), payload_format=hook.payload_format, events=list(hook.events or []),
        enabled=hook.enabled, created_by=hook.created_by, created_at=hook.created_at,
    )


def _scope_owner(session: Session, hook: NotificationHook) -> int | None:
    """Who may change a hook: the member of a member hook, the experiment's owner of an experiment hook."""
    if hook.member_id is not None:
        return hook.member_id
    return session.scalar(sa.select(Experiment.owner_id).where(Experiment.id == hook.experiment_id))


def _hook(session: Session, actor: int | None, hook_id: int, action: str) -> NotificationHook:
    hook = get_or_raise(session, NotificationHook, hook_id, "notification hook",
                        "list the hooks with `segboard notify list`")
    check_actor(session, actor)
    access.require_owner(session, actor, _scope_owner(session, hook), f"{action} notification hook {hook_id}")
    return hook


def add_hook(
    session: Session,
    *,
    actor: int | None,
    url: str,
    payload_format: PayloadFormat | str,
    member_id: int | None = None,
    experiment_id: int | None = None,
    name: str = "",
    events: Iterable[str] | None = None,
) -> NotificationHookRead:
    """Add a webhook for all of a member's objects, or for one experiment's runs and groups.

    A member adds hooks for themselves and for the experiments they own; an admin for anyone's; a
    viewer owns nothing to be notified about and adds none. Without ``member_id`` and
    ``experiment_id`` the hook is the actor's own.

    Args:
        url: The webhook URL (a secret: only its host and a masked path are ever shown again).
        payload_format: ``slack`` (``{"text": ...}``) or ``discord`` (``{"content": ...}``).
        events: A part of :data:`EVENTS`; default all.

    Raises:
        InvalidInput: a bad URL, format or event list, both scopes given, or neither with no actor.
        NotFound: no such member or experiment.
        PermissionDenied: a viewer, or a member adding a hook to someone else's objects.
    """
    check_actor(session, actor)
    if member_id is not None and experiment_id is not None:
        raise InvalidInput("a hook is for a member's objects or for one experiment, not both; pass one of them")
    if experiment_id is not None:
        experiment = get_or_raise(session, Experiment, experiment_id, "experiment")
        access.require_owner(session, actor, experiment.owner_id,
                             f"add a notification hook to experiment {experiment_id}")
    else:
        member_id = actor if member_id is None else member_id
        if member_id is None:
            raise InvalidInput("name the member (or the experiment) the hook notifies about, e.g. --member ada")
        member = get_or_raise(session, Member, member_id, "member")
        access.require_owner(session, actor, member.id, f"add a notification hook for {member.name}")
    hook = NotificationHook(
        name=check_name(name, what="hook name", max_chars=100) if name else "",
        member_id=member_id if experiment_id is None else None, experiment_id=experiment_id,
        url=_check_url(url), payload_format=_format(payload_format), events=_events(events), enabled=True,
        created_by=actor,
    )
    session.add(hook)
    session.flush()
    record_event(session, actor=actor, action="notification_hook.add", object_kind="notification_hook",
                 object_id=hook.id, detail={"member_id": hook.member_id, "experiment_id": hook.experiment_id,
                                            "format": hook.payload_format.value, "url": mask_url(hook.url)})
    return _read(hook)


def _visible(session: Session, actor: int | None) -> sa.ColumnElement[bool] | None:
    """The hooks ``actor`` may see and change (None: every hook, for admins and the system)."""
    role = access.role_of(session, actor)
    if role is None or role is MemberRole.ADMIN:
        return None
    own_experiments = sa.select(Experiment.id).where(Experiment.owner_id == actor)
    return sa.or_(NotificationHook.member_id == actor, NotificationHook.experiment_id.in_(own_experiments))


def list_hooks(
    session: Session, *, actor: int | None, member_id: int | None = None, experiment_id: int | None = None
) -> list[NotificationHookRead]:
    """The hooks ``actor`` manages (admins: all), optionally of one member or one experiment, oldest first."""
    q = sa.select(NotificationHook).order_by(NotificationHook.id)
    where = _visible(session, actor)
    if where is not None:
        q = q.where(where)
    if member_id is not None:
        q = q.where(NotificationHook.member_id == member_id)
    if experiment_id is not None:
        q = q.where(NotificationHook.experiment_id == experiment_id)
    return [_read(h) for h in session.scalars(q)]


def get_hook(session: Session, *, actor: int | None, hook_id: int) -> NotificationHookRead:
    """One hook, if ``actor`` manages it.

    Raises:
        NotFound: no such hook.
        PermissionDenied: someone else's hook.
    """
    return _read(_hook(session, actor, hook_id, "read"))


def set_hook_enabled(session: Session, *, actor: int | None, hook_id: int, enabled: bool) -> NotificationHookRead:
    """Pause or resume a hook; a paused hook gets no new messages, and what it has waiting waits."""
    hook = _hook(session, actor, hook_id, "change")
    hook.enabled = bool(enabled)
    session.flush()
    record_event(session, actor=actor, action="notification_hook.enable" if enabled else "notification_hook.disable",
                 object_kind="notification_hook", object_id=hook.id)
    return _read(hook)


def remove_hook(session: Session, *, actor: int | None, hook_id: int) -> None:
    """Delete a hook and its deliveries (sent or not)."""
    hook = _hook(session, actor, hook_id, "remove")
    detail = {"member_id": hook.member_id, "experiment_id": hook.experiment_id, "url": mask_url(hook.url)}
    session.execute(sa.delete(NotificationDelivery).where(NotificationDelivery.hook_id == hook.id))
    session.delete(hook)
    session.flush()
    record_event(session, actor=actor, action="notification_hook.remove", object_kind="notification_hook",
                 object_id=hook_id, detail=detail)


def queue_test(
    session: Session, *, actor: int | None, hook_id: int, now: dt.datetime | None = None
) -> NotificationDeliveryRead:
    """Queue a test message to a hook; the sender (or ``segboard notify test``, at once) delivers it.

    Raises:
        Conflict: the hook is paused.
    """
    hook = _hook(session, actor, hook_id, "test")
    if not hook.enabled:
        raise Conflict(f"notification hook {hook_id} is paused; enable it first (`segboard notify enable {hook_id}`)")
    who = session.get(Member, actor).name if actor is not None else "an admin"  # type: ignore[union-attr]
    row = NotificationDelivery(
        hook_id=hook.id, event="test", object_kind="notification_hook", object_id=hook.id,
        text=f"SegBoard: test message for notification hook {hook.id}, sent by {who}", page=None,
        status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=now or utcnow(), created_at=now or utcnow(),
    )
    session.add(row)
    session.flush()
    record_event(session, actor=actor, action="notification_hook.test", object_kind="notification_hook",
                 object_id=hook.id, detail={"delivery_id": row.id})
    return NotificationDeliveryRead.model_validate(row)


def list_deliveries(
    session: Session,
    *,
    actor: int | None,
    hook_id: int | None = None,
    status: DeliveryStatus | str | None = None,
    limit: int = 50,
) -> list[NotificationDeliveryRead]:
    """Deliveries of the hooks ``actor`` manages, newest first."""
    q = sa.select(NotificationDelivery).join(NotificationHook, NotificationHook.id == NotificationDelivery.hook_id)
    where = _visible(session, actor)
    if where is not None:
        q = q.where(where)
    if hook_id is not None:
        q = q.where(NotificationDelivery.hook_id == hook_id)
    if status is not None:
        try:
            q = q.where(NotificationDelivery.status == DeliveryStatus(status))
        except ValueError:
            raise InvalidInput(f"unknown delivery status {str(status)[:40]!r}; use "
                               f"{', '.join(s.value for s in DeliveryStatus)}") from None
    q = q.order_by(NotificationDelivery.id.desc()).limit(max(1, min(int(limit), 1000)))
    return [NotificationDeliveryRead.model_validate(d) for d in session.scalars(q)]
