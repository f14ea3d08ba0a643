"""Models and sessions: SQLite pragmas, time zones, enums as values, constraints, the transaction scope."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from worker.db.models import (
    EpochMetric,
    Experiment,
    Member,
    MemberRole,
    Run,
    RunStatus,
    Submission,
)
from worker.db.session import make_engine, make_session_factory, normalize_url, session_scope


def _experiment_and_run(session) -> Run:
    exp = Experiment(name="e", config={}, expansion={"kind": "single"})
    session.add(exp)
    session.flush()
    run = Run(experiment_id=exp.id, name="r", config={}, arch="Unet", encoder="resnet18")
    session.add(run)
    session.flush()
    return run


def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(engine):
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


def test_sqlite_enforces_foreign_keys(session):
    session.add(Run(experiment_id=999, name="orphan", config={}, arch="Unet", encoder="resnet18"))
    with pytest.raises(IntegrityError):
        session.flush()


def test_postgres_urls_get_the_psycopg_driver():
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    with pytest.raises(ValueError, match="not supported"):
        normalize_url("mysql://u@h/db")


def test_make_engine_accepts_settings_and_creates_the_sqlite_folder(tmp_path):
    from worker.settings import get_settings

    settings = get_settings(home=tmp_path / "home")
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        assert (tmp_path / "home").is_dir()
    finally:
        engine.dispose()


def test_times_come_back_timezone_aware_in_utc(any_engine):
    factory = make_session_factory(any_engine)
    local = dt.datetime(2026, 1, 2, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with session_scope(factory) as s:
        run = _experiment_and_run(s)
        run.queued_at = local
        run.started_at = dt.datetime(2026, 1, 2, 10, 30)  # naive: taken as UTC
        run_id = run.id
    with factory() as s:
        run = s.get(Run, run_id)
        assert run.queued_at == local and run.queued_at.utcoffset() == dt.timedelta(0)
        assert run.started_at == dt.datetime(2026, 1, 2, 10, 30, tzinfo=dt.timezone.utc)
        assert run.created_at.tzinfo is not None


def test_enums_are_stored_as_their_values(any_engine):
    factory = make_session_factory(any_engine)
    with session_scope(factory) as s:
        s.add(Member(name="ann", role=MemberRole.ADMIN))
        run = _experiment_and_run(s)
        run.status = RunStatus.RUNNING
    with any_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT role FROM members")).scalar() == "admin"
        assert conn.execute(sa.text("SELECT status FROM runs")).scalar() == "running"
    with factory() as s:
        assert s.scalar(sa.select(Run.status)) is RunStatus.RUNNING


def test_one_epoch_row_per_run_and_epoch(any_engine):
    factory = make_session_factory(any_engine)
    with pytest.raises(IntegrityError), session_scope(factory) as s:
        run = _experiment_and_run(s)
        s.add_all([EpochMetric(run_id=run.id, epoch=1), EpochMetric(run_id=run.id, epoch=1)])
        s.flush()


def test_a_submission_has_exactly_one_source(any_engine):
    factory = make_session_factory(any_engine)
    with pytest.raises(IntegrityError), session_scope(factory) as s:
        s.add(Submission())
        s.flush()
    with session_scope(factory) as s:
        run = _experiment_and_run(s)
        s.add(Submission(run_id=run.id))
    with factory() as s:
        assert s.scalar(sa.select(sa.func.count(Submission.id))) == 1


def test_session_scope_commits_or_rolls_back(session_factory):
    with session_scope(session_factory) as s:
        s.add(Member(name="kept"))
    with pytest.raises(RuntimeError), session_scope(session_factory) as s:
        s.add(Member(name="dropped"))
        s.flush()
        raise RuntimeError("boom")
    with session_factory() as s:
        assert s.scalars(sa.select(Member.name)).all() == ["kept"]


def test_run_status_terminal_states():
    assert {s for s in RunStatus if s.is_terminal} == {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
