"""Shared worker fixtures: databases (SQLite in tmp_path, a PostgreSQL database of this test
session), a Redis target (db number + key prefix), and a small valid experiment config.

The machine's PostgreSQL (127.0.0.1:5432, trust auth) and Redis (127.0.0.1:6379) are used as they
are, never reconfigured: this session creates its own uniquely named PostgreSQL databases and
drops them at the end, and removes every Redis key under its own prefix. Where a server is
missing the tests that need it skip with the reason, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from segcore.config import TaskType
from worker.db import migrate
from worker.db.base import utcnow
from worker.db.models import METRIC_KINDS, Dataset, Run, RunStatus
from worker.db.base import Base
from worker.db.session import make_engine, make_session_factory

PG_HOST = os.environ.get("SEGBOARD_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("SEGBOARD_TEST_PG_PORT", "5432"))
PG_USERS = ("postgres", "root")
REDIS_HOST = os.environ.get("SEGBOARD_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("SEGBOARD_TEST_REDIS_PORT", "6379"))
REDIS_DB = int(os.environ.get("SEGBOARD_TEST_REDIS_DB", "13"))


def _unavailable(reason: str) -> None:
    """Fail under CI (a required service is missing), skip elsewhere, saying why."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required service unavailable under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


# ------------------------------------------------------------------ PostgreSQL


@dataclasses.dataclass
class PostgresServer:
    """The machine's PostgreSQL and the databases this test session created on it."""

    user: str
    created: list[str] = dataclasses.field(default_factory=list)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{PG_HOST}:{PG_PORT}/{database}"

    def create_database(self, label: str = "t") -> str:
        """Create an empty, uniquely named database and return its URL."""
        import psycopg

        name = f"segboard_test_{label}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user=self.user, dbname="test", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.url(name)

    def drop_all(self) -> None:
        import psycopg

        with psycopg.connect(host=PG_HOST, port=PG_PORT, user=self.user, dbname="test", autocommit=True) as conn:
            for name in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The machine's PostgreSQL; every database created through it is dropped at session end."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        _unavailable("psycopg is not installed")
    errors = []
    for user in PG_USERS:
        try:
            with psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="test", connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
            errors.append(f"{user}: {exc}".strip())
            continue
        server = PostgresServer(user=user)
        try:
            yield server
        finally:
            server.drop_all()
        return
    _unavailable(f"PostgreSQL at {PG_HOST}:{PG_PORT} (database 'test', trust auth) is not reachable: {errors}")


@pytest.fixture
def pg_database(postgres: PostgresServer) -> Callable[[str], str]:
    """A factory of fresh, empty PostgreSQL databases (dropped at session end)."""
    return postgres.create_database


@pytest.fixture(scope="session")
def pg_migrated_url(postgres: PostgresServer) -> str:
    """One database of this session, migrated to head, shared by the PostgreSQL service tests."""
    url = postgres.create_database("svc")
    migrate.upgrade(url)
    return url


def _truncate_all(engine: sa.Engine) -> None:
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(scope="session")
def _pg_engine(pg_migrated_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(pg_migrated_url, pool_size=10, max_overflow=10)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def pg_engine(_pg_engine: sa.Engine) -> sa.Engine:
    """The session's migrated PostgreSQL database, emptied before each test."""
    _truncate_all(_pg_engine)
    return _pg_engine


# ------------------------------------------------------------------ SQLite


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'segboard.db'}"


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per session; each test gets a copy (migrating costs more)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "segboard.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        engine.dispose()
    return path


@pytest.fixture
def sqlite_engine(tmp_path: Path, _sqlite_template: Path) -> Iterator[sa.Engine]:
    """A migrated SQLite database in tmp_path."""
    target = tmp_path / "migrated.db"
    shutil.copyfile(_sqlite_template, target)
    engine = make_engine(f"sqlite:///{target}")
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def engine(sqlite_engine: sa.Engine) -> sa.Engine:
    """The default engine of service tests: SQLite."""
    return sqlite_engine


@pytest.fixture(params=["sqlite", "postgresql"])
def any_engine(request: pytest.FixtureRequest) -> sa.Engine:
    """Parametrized over SQLite and PostgreSQL, for the services that must behave the same on both."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_engine")
    return request.getfixturevalue("pg_engine")


@pytest.fixture
def session_factory(engine: sa.Engine):
    return make_session_factory(engine)


@pytest.fixture
def session(engine: sa.Engine) -> Iterator[Any]:
    """A session on SQLite; the test commits when it needs to."""
    with make_session_factory(engine)() as s:
        yield s


@pytest.fixture
def any_session(any_engine: sa.Engine) -> Iterator[Any]:
    """A session on SQLite, then on PostgreSQL."""
    with make_session_factory(any_engine)() as s:
        yield s


# ------------------------------------------------------------------ Redis


@dataclasses.dataclass(frozen=True)
class RedisTarget:
    """Where this test session may write in the machine's Redis: one db number, one key prefix."""

    host: str
    port: int
    db: int
    prefix: str

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"


@pytest.fixture(scope="session")
def redis_target() -> Iterator[RedisTarget]:
    """A Redis db number and a unique key prefix; every key under the prefix is deleted at the end.

    Celery users pass ``broker_transport_options={"global_keyprefix": target.prefix}``.
    """
    try:
        import redis
    except ImportError:  # pragma: no cover
        _unavailable("the redis package is not installed")
    target = RedisTarget(REDIS_HOST, REDIS_PORT, REDIS_DB, f"segboard-test-{os.getpid()}-{uuid.uuid4().hex[:8]}:")
    client = redis.Redis(host=target.host, port=target.port, db=target.db, socket_connect_timeout=3)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        _unavailable(f"Redis at {REDIS_HOST}:{REDIS_PORT} is not reachable: {exc}")
    try:
        yield target
    finally:
        keys = list(client.scan_iter(match=f"{target.prefix}*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


# ------------------------------------------------------------------ where data may live


@pytest.fixture(autouse=True, scope="session")
def _data_roots_allow_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Datasets made in ``tmp_path`` folders may be registered and trained on: this session's temporary
    folder is an extra dataset root (settings built from the environment, and worker subprocesses, see it)."""
    import json

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEGBOARD_EXTRA_DATASET_ROOTS", json.dumps([str(tmp_path_factory.getbasetemp())]))
        yield


# ------------------------------------------------------------------ configs


@pytest.fixture
def config_dict() -> dict[str, Any]:
    """A small valid experiment config (nothing is trained in these tests)."""
    return {
        "name": "unet-r18",
        "data": {
            "source": {"format": "mask_folder", "root": "camvid"},
            "classes": ["background", "road", "car"],
        },
        "model": {"arch": "Unet", "encoder": "resnet18"},
        "loss": "0.6*ce + 0.4*jaccard",
        "training": {"epochs": 3, "batch_size": 2},
    }


# ------------------------------------------------------------------ seeding


class Seed:
    """Rows put into a test database the way a worker would leave them."""

    @staticmethod
    def add_dataset(session, *, name: str = "camvid", classes: list[str] | None = None, fingerprint: str = "fp1") -> int:
        ds = Dataset(
            name=name,
            source={"format": "mask_folder", "root": "camvid"},
            classes=classes or ["background", "road", "car"],
            task=TaskType.MULTICLASS,
            ignore_index=255,
            fingerprint=fingerprint,
            report={"ok": True, "problems": []},
        )
        session.add(ds)
        session.flush()
        return ds.id

    @staticmethod
    def metrics(miou: float, **other: float) -> dict[str, Any]:
        """Every metric kind; the ones not given are derived from miou so they differ per kind."""
        out: dict[str, Any] = {k: None for k in METRIC_KINDS}
        out.update(
            miou=miou,
            miou_per_image=round(miou - 0.05, 6),
            dice=round(min(miou + 0.1, 1.0), 6),
            dice_per_image=round(min(miou + 0.05, 1.0), 6),
            pixel_accuracy=round(min(miou + 0.2, 1.0), 6),
        )
        out.update(other)
        out["per_class"] = {"miou": [miou] * 3}
        return out

    @staticmethod
    def finish(session, run_id: int, best: dict[str, Any], *, status: RunStatus = RunStatus.SUCCEEDED) -> None:
        """Mark a run finished with its best metrics (what the lifecycle does at the end of training)."""
        run = session.get(Run, run_id)
        run.status = status
        run.best_metrics = best
        run.monitor_value = best.get(run.monitor_metric)
        run.started_at = run.started_at or utcnow()
        run.finished_at = utcnow()
        session.flush()


@pytest.fixture
def seed() -> type[Seed]:
    """Seeding helpers: ``seed.add_dataset``, ``seed.metrics``, ``seed.finish``."""
    return Seed
