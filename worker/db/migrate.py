"""Apply and inspect the Alembic migrations from the installed package (no ``alembic.ini``).

Example:
    >>> upgrade("sqlite:////tmp/segboard.db")   # what ``segboard db upgrade`` runs
    >>> current("sqlite:////tmp/segboard.db")
    '0001'
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from worker.db import models as _models  # noqa: F401  (registers every table)
from worker.db._sweeps import include_object  # Optuna's tables are not compared with the models
from worker.db.base import Base
from worker.db.session import make_engine
from worker.settings import Settings

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "upgrade",
    "downgrade",
    "current",
    "head",
    "schema_differences",
    "check_schema_matches",
    "SchemaMismatch",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

Target = sa.Engine | Settings | str | sa.URL


class SchemaMismatch(RuntimeError):
    """The database schema differs from the models: a migration is missing or was not applied."""


def alembic_config(**attributes: Any) -> Config:
    """An Alembic :class:`Config` pointing at the packaged migrations; ``attributes`` reach env.py."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes.update(attributes)
    return cfg


@contextlib.contextmanager
def _connection(target: Target) -> Iterator[sa.Connection]:
    own = not isinstance(target, sa.Engine)
    engine = make_engine(target) if own else target  # type: ignore[arg-type]  # own: target is not an Engine
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        if own:
            engine.dispose()


def upgrade(target: Target, revision: str = "head") -> None:
    """Migrate the database of ``target`` (engine, settings or URL) up to ``revision``."""
    with _connection(target) as conn:
        command.upgrade(alembic_config(connection=conn), revision)


def downgrade(target: Target, revision: str) -> None:
    """Migrate the database down to ``revision`` (``"base"`` drops every table)."""
    with _connection(target) as conn:
        command.downgrade(alembic_config(connection=conn), revision)


def current(target: Target) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    with _connection(target) as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head() -> str:
    """The newest revision shipped with this package."""
    script = ScriptDirectory.from_config(alembic_config())
    rev = script.get_current_head()
    if rev is None:  # pragma: no cover - the package always ships 0001
        raise SchemaMismatch(f"no migrations found in {MIGRATIONS_DIR}; reinstall segboard")
    return rev


def schema_differences(target: Target) -> list[Any]:
    """Differences between the database and the models, as Alembic's autogenerate sees them."""
    with _connection(target) as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": include_object})
        return list(compare_metadata(ctx, Base.metadata))


def check_schema_matches(target: Target) -> None:
    """Raise :class:`SchemaMismatch` unless the database is at head and equals the models' schema.

    Raises:
        SchemaMismatch: listing each difference and how to fix it.
    """
    rev = current(target)
    if rev != head():
        raise SchemaMismatch(
            f"the database is at revision {rev!r}, the code expects {head()!r}; run `segboard db upgrade`"
        )
    diffs = schema_differences(target)
    if diffs:
        lines = "\n".join(f"  {d!r}" for d in diffs)
        raise SchemaMismatch(
            f"the database schema differs from the models in {len(diffs)} place(s):\n{lines}\n"
            "write a migration for the model change (see docs/data-model.md)"
        )
