"""Migrations produce exactly the models' schema, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from worker.db import migrate
from worker.db.base import Base
from worker.db.session import make_engine


def _check_roundtrip(url: str) -> None:
    assert migrate.current(url) is None
    migrate.upgrade(url)
    assert migrate.current(url) == migrate.head() == "0002"
    assert migrate.schema_differences(url) == []
    migrate.check_schema_matches(url)
    engine = make_engine(url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        migrate.downgrade(engine, "base")
        assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(engine)
        assert migrate.schema_differences(engine) == []
    finally:
        engine.dispose()


def test_migrations_match_models_on_sqlite(sqlite_url):
    _check_roundtrip(sqlite_url)


def test_migrations_match_models_on_postgresql(pg_database):
    _check_roundtrip(pg_database("mig"))


def test_a_drifted_schema_is_reported_with_how_to_fix(sqlite_url):
    migrate.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP INDEX ix_runs_leaderboard")
        assert migrate.schema_differences(engine)
        with pytest.raises(migrate.SchemaMismatch, match="(?s)ix_runs_leaderboard.*write a migration"):
            migrate.check_schema_matches(engine)
    finally:
        engine.dispose()


def test_an_unmigrated_database_is_reported(sqlite_url):
    with pytest.raises(migrate.SchemaMismatch, match="segboard db upgrade"):
        migrate.check_schema_matches(sqlite_url)


def test_upgrade_is_idempotent(sqlite_url):
    migrate.upgrade(sqlite_url)
    migrate.upgrade(sqlite_url)
    assert migrate.current(sqlite_url) == "0002"
