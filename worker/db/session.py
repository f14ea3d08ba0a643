"""Engines, session factories and the transaction scope.

Example:
    >>> engine = make_engine("sqlite:////tmp/segboard.db")
    >>> factory = make_session_factory(engine)
    >>> with session_scope(factory) as session:
    ...     ...  # services flush; the scope commits, or rolls back on an exception
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from worker.settings import Settings

__all__ = ["normalize_url", "make_engine", "make_session_factory", "session_scope"]


def normalize_url(url: str | sa.URL) -> sa.URL:
    """Pick the psycopg 3 driver for PostgreSQL URLs (``postgres://`` and ``postgresql://``).

    Raises:
        ValueError: The URL is neither SQLite nor PostgreSQL.
    """
    u = make_url(str(url)) if not isinstance(url, sa.URL) else url
    backend = u.get_backend_name()
    if backend in {"postgres", "postgresql"}:
        if u.drivername in {"postgres", "postgresql"}:
            u = u.set(drivername="postgresql+psycopg")
    elif backend != "sqlite":
        raise ValueError(
            f"database URL {u.render_as_string(hide_password=True)!r} is not supported; "
            "use sqlite:///path/segboard.db or postgresql://user@host:5432/dbname"
        )
    return u


def _sqlite_pragmas(busy_timeout_ms: int) -> Any:
    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # WAL: readers (the web app) never block the writer (a worker reporting an epoch).
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    return on_connect


def make_engine(settings_or_url: Settings | str | sa.URL, **engine_kwargs: Any) -> sa.Engine:
    """Create an engine for the settings' ``database_url`` (or the URL given).

    SQLite gets WAL mode, foreign keys and a busy timeout on every connection; its parent folder
    is created. PostgreSQL uses psycopg 3 with ``pool_pre_ping``.

    Args:
        settings_or_url: Settings, or a database URL.
        **engine_kwargs: Passed to :func:`sqlalchemy.create_engine` (e.g. ``pool_size``).
    """
    if isinstance(settings_or_url, Settings):
        url = normalize_url(str(settings_or_url.database_url))
        busy_ms = settings_or_url.sqlite_busy_timeout_ms
        engine_kwargs.setdefault("echo", settings_or_url.database_echo)
    else:
        url = normalize_url(settings_or_url)
        busy_ms = 30_000
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            from pathlib import Path

            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args = dict(engine_kwargs.pop("connect_args", {}))
        connect_args.setdefault("check_same_thread", False)
        connect_args.setdefault("timeout", busy_ms / 1000)
        engine = sa.create_engine(url, connect_args=connect_args, **engine_kwargs)
        sa.event.listen(engine, "connect", _sqlite_pragmas(busy_ms))
        return engine
    engine_kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(url, **engine_kwargs)


def make_session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine``; objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)


@contextlib.contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit when the block succeeds, roll back when it raises, always close."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
