"""Read models of notifications: hooks (their URL masked), deliveries, and what a sending pass did."""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from worker.db.models import DeliveryStatus, PayloadFormat
from worker.schemas._base import _Read


class NotificationHookRead(_Read):
    """A webhook as pages and lists show it: the host and a masked path, never the URL itself."""

    id: int
    name: str
    member_id: int | None = Field(description="Set for a hook on all of this member's objects.")
    experiment_id: int | None = Field(description="Set for a hook on this experiment's runs and groups.")
    url_display: str = Field(description="The URL's scheme and host, and a masked path.")
    payload_format: PayloadFormat
    events: list[str]
    enabled: bool
    created_by: int | None
    created_at: dt.datetime


class NotificationDeliveryRead(_Read):
    """One message to one hook and its attempts; ``last_error`` never contains the URL."""

    id: int
    hook_id: int
    event: str
    object_kind: str
    object_id: int | None
    text: str
    page: str | None = Field(description="The object's page under the dashboard's public_url.")
    status: DeliveryStatus
    attempts: int
    next_attempt_at: dt.datetime
    last_error: str | None
    created_at: dt.datetime
    sent_at: dt.datetime | None


class NotificationSendReport(_Read):
    """What one pass of the sender did: messages accepted, scheduled again, given up."""

    sent: int = 0
    retrying: int = 0
    gave_up: int = 0
    delivery_ids: list[int] = Field(default_factory=list, description="The deliveries attempted, in order.")
