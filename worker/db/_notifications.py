"""The tables of notification hooks and their deliveries (re-exported by :mod:`worker.db.models`).

A hook is a webhook URL that a member configured, for all of their own objects (``member_id``) or for
one experiment's runs and groups (``experiment_id``). A delivery is one message to one hook: the
outbox row written in the same transaction as the status change it reports, then posted by the
sender (see ``docs/notifications.md``). The URL is a secret: read models show only its host and a
masked path.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from worker.db.base import Base, enum_column_type, utcnow

__all__ = ["PayloadFormat", "DeliveryStatus", "NotificationHook", "NotificationDelivery"]


class PayloadFormat(str, enum.Enum):
    """The JSON a hook receives: Slack's ``{"text": ...}`` or Discord's ``{"content": ...}``."""

    SLACK = "slack"
    DISCORD = "discord"


class DeliveryStatus(str, enum.Enum):
    """A delivery waits (pending, perhaps retried later), was accepted (sent), or was given up (failed)."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class NotificationHook(Base):
    """A webhook of a member (all of their objects) or of an experiment (its runs and groups)."""

    __tablename__ = "notification_hooks"
    __table_args__ = (
        sa.CheckConstraint(
            "(CASE WHEN member_id IS NULL THEN 0 ELSE 1 END)"
            " + (CASE WHEN experiment_id IS NULL THEN 0 ELSE 1 END) = 1",
            name="one_scope",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100), default="")
    member_id: Mapped[int | None] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"), index=True)
    experiment_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("experiments.id", ondelete="CASCADE"), index=True
    )
    # a secret: never returned by a read model, never written to a log or an error message
    url: Mapped[str] = mapped_column(sa.Text)
    payload_format: Mapped[PayloadFormat] = mapped_column(enum_column_type(PayloadFormat))
    # the events it receives: ["succeeded", "failed"] or a part of it
    events: Mapped[list[Any]] = mapped_column(default=list)
    enabled: Mapped[bool] = mapped_column(default=True)
    created_by: Mapped[int | None] = mapped_column(sa.ForeignKey("members.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class NotificationDelivery(Base):
    """One message to one hook, with its attempts: the outbox the sender works through."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (sa.Index("ix_notification_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    hook_id: Mapped[int] = mapped_column(sa.ForeignKey("notification_hooks.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(sa.String(32))
    object_kind: Mapped[str] = mapped_column(sa.String(32))
    object_id: Mapped[int | None]
    # the message, written when the event happened; the sender adds the link and builds the hook's JSON
    text: Mapped[str] = mapped_column(sa.Text)
    # the object's page relative to the dashboard's address (``run?run=3``), linked when public_url is set
    page: Mapped[str | None] = mapped_column(sa.String(300))
    status: Mapped[DeliveryStatus] = mapped_column(enum_column_type(DeliveryStatus), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None]
