"""The tables of logins, API tokens and uploads (re-exported by :mod:`worker.db.models`).

Secrets are never stored: a login's cookie value and an API token are kept as the SHA-256 hex of
the token, so a leaked database does not let anyone in.
"""

from __future__ import annotations

import datetime as dt
import enum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from worker.db.base import Base, enum_column_type, utcnow

__all__ = ["LoginMethod", "UploadStatus", "LoginSession", "ApiToken", "Upload"]


class LoginMethod(str, enum.Enum):
    """How a web login was made."""

    PASSWORD = "password"
    OIDC = "oidc"


class UploadStatus(str, enum.Enum):
    """An uploaded archive: being unpacked (active), registered as a dataset (done), or refused (failed)."""

    ACTIVE = "active"
    DONE = "done"
    FAILED = "failed"


class LoginSession(Base):
    """One web login: the hash of its cookie token, and when it was made and last used."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"), index=True)
    method: Mapped[LoginMethod] = mapped_column(enum_column_type(LoginMethod))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A named API token of a member, for the CLI and the Python client; ``prefix`` is shown in lists."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    prefix: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None]
    expires_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class Upload(Base):
    """An uploaded dataset archive: who sent it, how many bytes it unpacked to, the dataset it became.

    While active, ``bytes`` is the share of the member's quota the upload may unpack; once done, what
    it did unpack.
    """

    __tablename__ = "uploads"
    __table_args__ = (sa.Index("ix_uploads_member_status", "member_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int | None] = mapped_column(sa.ForeignKey("members.id", ondelete="SET NULL"))
    filename: Mapped[str] = mapped_column(sa.String(255))
    status: Mapped[UploadStatus] = mapped_column(enum_column_type(UploadStatus), default=UploadStatus.ACTIVE)
    bytes: Mapped[int] = mapped_column(sa.BigInteger(), default=0)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]
    dataset_id: Mapped[int | None] = mapped_column(sa.ForeignKey("datasets.id", ondelete="SET NULL"), index=True)
