"""Migrations produce exactly the models' schema, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from worker.db import migrate
from worker.db.base import Base, utcnow
from worker.db.session import make_engine


def _check_roundtrip(url: str) -> None:
    assert migrate.current(url) is None
    migrate.upgrade(url)
    assert migrate.current(url) == migrate.head() == "0008"
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
    assert migrate.current(sqlite_url) == "0008"


def _populate_at_0002(url: str) -> None:
    """Members, a dataset, three experiments of one name, a run owned by a member and an audit event, as 0002 stored them."""
    migrate.upgrade(url, "0002")
    engine = make_engine(url)
    now = utcnow()
    try:
        with engine.begin() as c:
            c.execute(sa.text("INSERT INTO members (id, name, email, role, created_at) VALUES "
                              "(1, 'ada', 'ada@example.org', 'admin', :t), (2, 'bob', NULL, 'member', :t)"), {"t": now})
            c.execute(sa.text("INSERT INTO datasets (id, name, source, classes, task, ignore_index, report, "
                              "created_by, created_at) VALUES (1, 'd', '{}', '[]', 'multiclass', 255, '{}', 2, :t)"),
                      {"t": now})
            c.execute(sa.text("INSERT INTO experiments (id, name, config, owner_id, dataset_id, expansion, priority, "
                              "tags, note, created_at) VALUES (1, 'x', '{}', 2, 1, '{}', 0, '[]', '', :t), "
                              "(2, 'x', '{}', 2, 1, '{}', 0, '[]', '', :t), (3, 'x', '{}', 2, 1, '{}', 0, '[]', '', :t)"),
                      {"t": now})
            c.execute(sa.text(
                "INSERT INTO runs (id, experiment_id, dataset_id, name, config, arch, encoder, seed, monitor_metric, "
                "tags, owner_id, status, priority, cancel_requested, attempt, lost_count, created_at) VALUES "
                "(1, 1, 1, 'r', '{}', 'unet', 'resnet18', 0, 'miou', '[]', 2, 'succeeded', 0, false, 0, 0, :t)"),
                {"t": now})
            c.execute(sa.text("INSERT INTO audit_events (actor_id, action, object_kind, object_id, detail, ts) "
                              "VALUES (2, 'experiment.create', 'experiment', 1, '{}', :t)"), {"t": now})
    finally:
        engine.dispose()


def _check_upgrade_from_0002(url: str) -> None:
    _populate_at_0002(url)
    migrate.upgrade(url)
    assert migrate.current(url) == migrate.head() == "0008"
    assert migrate.schema_differences(url) == []
    engine = make_engine(url)
    try:
        with engine.connect() as c:
            members = c.execute(sa.text("SELECT id, name, email, role, password_hash, oidc_subject, "
                                        "credentials_changed_at FROM members ORDER BY id")).all()
            assert [tuple(m) for m in members] == [(1, "ada", "ada@example.org", "admin", None, None, None),
                                                   (2, "bob", None, "member", None, None, None)]
            # the members table was not copied: rows that refer to members kept their owner
            assert c.execute(sa.text("SELECT owner_id FROM runs")).scalar_one() == 2
            assert c.execute(sa.text("SELECT owner_id, dataset_id FROM experiments WHERE id = 1")).one() == (2, 1)
            # 0008: the oldest of the duplicates keeps its name, the others are told apart by id
            names = c.execute(sa.text("SELECT name FROM experiments ORDER BY id")).scalars().all()
            assert names == ["x", "x #2", "x #3"]
            assert c.execute(sa.text("SELECT created_by FROM datasets")).scalar_one() == 2
            assert c.execute(sa.text("SELECT actor_id FROM audit_events")).scalar_one() == 2
            for table in ("login_sessions", "api_tokens", "uploads"):
                assert c.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one() == 0
        migrate.downgrade(engine, "0002")
        assert migrate.current(engine) == "0002"
        with engine.connect() as c:
            assert c.execute(sa.text("SELECT count(*) FROM members")).scalar_one() == 2
            assert c.execute(sa.text("SELECT owner_id FROM runs")).scalar_one() == 2
            columns = {col["name"] for col in sa.inspect(c).get_columns("members")}
            assert not columns & {"password_hash", "oidc_subject", "credentials_changed_at"}
            assert not set(sa.inspect(c).get_table_names()) & {"login_sessions", "api_tokens", "uploads"}
    finally:
        engine.dispose()


def test_upgrade_from_0002_keeps_every_row_on_sqlite(sqlite_url):
    _check_upgrade_from_0002(sqlite_url)


def test_upgrade_from_0002_keeps_every_row_on_postgresql(pg_database):
    _check_upgrade_from_0002(pg_database("up3"))
