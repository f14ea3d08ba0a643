"""``segboard backup`` / ``restore``: a consistent database copy while writers go on, plus the manifests."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from segcore.inference.store import ProbabilityStore
from worker.backup import BackupError, backup, restore
from worker.cli import main
from worker.db import migrate
from worker.db.models import Run, RunLog
from worker.db.session import make_engine, session_scope
from worker.services import lifecycle
from worker.services.experiments import create_experiment

from .queue_fixtures import make_settings, migrated, tiny_config

SOURCE = {"format": "coco", "root": "for-backup-tests"}  # under the dataset root; never read


def _submit(factory: Any, n: int = 1) -> list[int]:
    with session_scope(factory) as s:
        return list(create_experiment(s, actor=None, config=tiny_config(SOURCE), seeds=list(range(n))).run_ids)


def _count(url: str) -> tuple[int, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as c:
            return (c.scalar(sa.select(sa.func.count()).select_from(Run)),
                    c.scalar(sa.select(sa.func.count()).select_from(RunLog)))
    finally:
        engine.dispose()


def test_sqlite_backup_while_writers_go_on_and_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path / "live", database_url=f"sqlite:///{tmp_path / 'live.db'}", redis_url=None)
    factory = migrated(settings)
    root = Path(str(settings.artifact_root))
    with ProbabilityStore.create(root / "runs" / "1" / "predictions" / "val", classes=["a", "b"],
                                 task="multiclass") as w:
        w.write("img", np.full((2, 4, 4), 0.5, np.float32))
    _submit(factory, 3)
    stop = threading.Event()
    written = [0]

    def writer() -> None:  # the platform keeps running: claims, logs and new runs during the backup
        while not stop.is_set():
            (run_id,) = _submit(factory)
            with session_scope(factory) as s:
                lifecycle.claim_run(s, run_id=run_id, worker_name="w", device="cpu", lease_s=30)
            written[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while written[0] < 3:
            stop.wait(0.01)
        report = backup(settings, tmp_path / "bk")
    finally:
        stop.set()
        thread.join()
    assert report.database == "sqlite" and report.revision == migrate.head() and report.manifests == 1
    copy = sqlite3.connect(tmp_path / "bk" / "segboard.db")
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        runs, claimed = copy.execute("SELECT count(*), sum(status = 'running') FROM runs").fetchone()
        # a snapshot: every run it has was committed together with its claim or before it
        assert 3 + 3 <= runs <= 3 + written[0] and claimed in (runs - 3, runs - 4)
    finally:
        copy.close()

    target = make_settings(tmp_path / "new", database_url=f"sqlite:///{tmp_path / 'new.db'}", redis_url=None)
    (Path(str(target.artifact_root)) / "runs" / "1" / "predictions" / "val").mkdir(parents=True)
    monkeypatch.setenv("SEGBOARD_HOME", str(target.home))
    monkeypatch.setenv("SEGBOARD_ARTIFACT_ROOT", str(target.artifact_root))
    assert main(["restore", str(tmp_path / "bk"), "--database-url", str(target.database_url)]) == 0
    assert "put back 1 missing artifact manifest(s)" in capsys.readouterr().out
    assert migrate.current(str(target.database_url)) == migrate.head()
    assert _count(str(target.database_url))[0] == runs
    assert (Path(str(target.artifact_root)) / "runs" / "1" / "predictions" / "val" / "manifest.json").is_file()
    with pytest.raises(BackupError, match="not empty"):
        backup(settings, tmp_path / "bk")


def test_postgresql_backup_and_restore_with_pg_dump(tmp_path: Path, pg_database: Any) -> None:
    source = make_settings(tmp_path / "a", database_url=pg_database("bka"), redis_url=None)
    factory = migrated(source)
    try:
        _submit(factory, 4)
    finally:
        factory.kw["bind"].dispose()
    report = backup(source, tmp_path / "bk")
    assert report.database == "postgresql" and (tmp_path / "bk" / "segboard.pgdump").stat().st_size > 0
    target = make_settings(tmp_path / "b", database_url=pg_database("bkb"), redis_url=None)
    restore(target, tmp_path / "bk")
    assert _count(str(target.database_url)) == _count(str(source.database_url))
    assert migrate.schema_differences(str(target.database_url)) == []


def test_without_pg_dump_the_message_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("worker.backup.shutil.which", lambda name: None)
    monkeypatch.setenv("SEGBOARD_HOME", str(tmp_path))
    url = "postgresql://nobody@127.0.0.1:5432/none"
    assert main(["backup", str(tmp_path / "bk"), "--database-url", url]) == 2
    assert "pg_dump not found on PATH: install the PostgreSQL client tools" in capsys.readouterr().err
    settings = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'x.db'}", redis_url=None)
    with pytest.raises(BackupError, match="not a segboard backup"):
        restore(settings, tmp_path / "nothing")
