"""What a process that calls the services needs, built from explicit settings: the dashboard's one entry.

The dashboard imports only the service layer (an import-linter contract in ``pyproject.toml``);
the settings, the session factory over one engine, the artifact root and the queue sender it needs
come from here. Nothing is built at import time: each function builds from the settings it is
given, and the caller keeps what it built (the dashboard in ``st.cache_resource``).

Example:
    >>> settings = get_settings()  # doctest: +SKIP
    >>> factory = session_factory(settings)  # doctest: +SKIP
    >>> with transaction(factory) as session:  # doctest: +SKIP
    ...     runs.get_run(session, run_id=3)
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from worker.artifacts import ArtifactError, Artifacts, is_url
from worker.services.outbox import Sender, celery_sender
from worker.settings import Settings, SettingsFileError, get_settings

__all__ = [
    "Settings",
    "SettingsFileError",
    "get_settings",
    "Artifacts",
    "ArtifactError",
    "is_url",
    "session_factory",
    "transaction",
    "artifacts",
    "queue_app",
    "sender",
]


def session_factory(settings: Settings) -> sessionmaker[Session]:
    """A session factory over a new engine for ``settings.database_url`` (connections checked before use)."""
    from worker.db.session import make_engine, make_session_factory

    return make_session_factory(make_engine(settings, pool_pre_ping=True))


def transaction(factory: sessionmaker[Session]) -> AbstractContextManager[Session]:
    """One transaction: commits when the block succeeds, rolls back when it raises."""
    from worker.db.session import session_scope

    return session_scope(factory)


def artifacts(settings: Settings) -> Artifacts:
    """The artifact root of ``settings`` (stored locations are fetched through it when it is remote)."""
    return Artifacts.from_settings(settings)


def queue_app(settings: Settings) -> Any:
    """The Celery app of ``settings``, used only to send messages (connects on first send)."""
    from worker.queue.celery_app import make_celery

    return make_celery(settings)


def sender(app: Any, factory: sessionmaker[Session]) -> Sender:
    """Sends committed queued runs and jobs through ``app`` (see :mod:`worker.services.outbox`)."""
    return celery_sender(app, factory)
