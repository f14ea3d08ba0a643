"""Read models of administration: API tokens, uploads and the pretrained-weights cache."""

from __future__ import annotations

import datetime as dt

from worker.db.models import UploadStatus
from worker.schemas._base import _Read


class ApiTokenRead(_Read):
    """An API token as lists show it: its prefix, never the token or its hash."""

    id: int
    member_id: int
    name: str
    prefix: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


class UploadRead(_Read):
    """An uploaded archive; while active, ``bytes`` is the most it may unpack."""

    id: int
    member_id: int | None
    filename: str
    status: UploadStatus
    bytes: int
    started_at: dt.datetime
    finished_at: dt.datetime | None
    dataset_id: int | None


class CachedWeightsRead(_Read):
    """One file of this machine's pretrained-weights cache (docs/weights.md)."""

    encoder: str
    weights: str
    path: str
    size_bytes: int
