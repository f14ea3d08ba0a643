"""``segboard backup DEST`` / ``segboard restore SRC``: the database, consistent while the platform runs,
plus the artifact manifests.

A backup folder holds:

- ``segboard.db`` (SQLite, copied page by page with SQLite's online backup API, so writers may go on)
  or ``segboard.pgdump`` (PostgreSQL, ``pg_dump --format=custom``: one snapshot transaction);
- ``artifacts/``: every ``manifest.json`` under a local artifact root (the probability stores'
  checksummed entry lists), at its relative path;
- ``inventory.json``: every artifact location the database lists (:mod:`worker.services.inventory`);
- ``backup.json``: when, which database kind, its migration revision, the artifact root.

The artifact files themselves (weights, probabilities) are not copied: back the artifact root up
with the storage's own tools; the manifests and the inventory say what a restored database expects.

A restore replaces the database's content with the backup's (SQLite: the online backup API in the
other direction; PostgreSQL: ``pg_restore --clean --if-exists``), migrates it to the current
revision, and puts back manifests that are missing under the artifact root. Stop ``segboard up``
and the workers first.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from worker.errors import ServiceError
from worker.settings import Settings

__all__ = ["BackupError", "BackupReport", "backup", "restore"]

_SQLITE = "segboard.db"
_PGDUMP = "segboard.pgdump"
_MANIFESTS = "artifacts"


class BackupError(ServiceError):
    """A backup or restore cannot be made; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class BackupReport:
    """What a backup or restore wrote."""

    folder: Path
    database: str  # "sqlite" or "postgresql"
    revision: str | None
    manifests: int


def _url(settings: Settings) -> sa.URL:
    from worker.db.session import normalize_url

    return normalize_url(str(settings.database_url))


def _sqlite_path(url: sa.URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up; set SEGBOARD_DATABASE_URL to a file")
    return Path(url.database)


def _libpq(url: sa.URL) -> str:
    """The URL for pg_dump/pg_restore (libpq does not know SQLAlchemy's ``+psycopg``)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(
            f"{name} not found on PATH: install the PostgreSQL client tools of the server's version "
            f"(apt install postgresql-client) to back up or restore a PostgreSQL database"
        )
    return found


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")


def _sqlite_copy(src: Path, dest: Path) -> None:
    source = sqlite3.connect(src, timeout=30)
    target = sqlite3.connect(dest)
    try:
        with target:
            source.backup(target)  # page by page; restarts itself if a writer changes a copied page
    finally:
        target.close()
        source.close()


def _local_root(settings: Settings) -> Path | None:
    return Path(str(settings.artifact_root).removeprefix("file://")) if settings.artifact_root_is_local else None


def backup(settings: Settings, dest: str | Path) -> BackupReport:
    """Write a backup of the database and the artifact manifests into the new folder ``dest``.

    Raises:
        BackupError: ``dest`` exists and is not empty, ``pg_dump`` is missing or failed.
    """
    from worker.db import migrate
    from worker.db.session import make_engine, make_session_factory, session_scope
    from worker.services.inventory import inventory

    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty; give a new folder for the backup")
    dest.mkdir(parents=True, exist_ok=True)
    url = _url(settings)
    kind = url.get_backend_name()
    if kind == "sqlite":
        _sqlite_copy(_sqlite_path(url), dest / _SQLITE)
    else:
        _run([_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--file", str(dest / _PGDUMP), _libpq(url)],
             "pg_dump")
    engine = make_engine(settings)
    try:
        revision = migrate.current(engine)
        with session_scope(make_session_factory(engine)) as s:
            inv = inventory(s)
    finally:
        engine.dispose()
    (dest / "inventory.json").write_text(json.dumps(
        [dataclasses.asdict(a) | {"kind": a.kind.value} for a in inv.artifacts], indent=1))
    count = 0
    root = _local_root(settings)
    if root is not None and root.is_dir():
        for manifest in sorted(root.rglob("manifest.json")):
            rel = manifest.relative_to(root)
            if any(part.startswith(".") for part in rel.parts):
                continue  # temp folders of writers
            target = dest / _MANIFESTS / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(manifest, target)
            count += 1
    meta: dict[str, Any] = {"created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                            "database": kind, "revision": revision, "artifact_root": str(settings.artifact_root),
                            "manifests": count}
    (dest / "backup.json").write_text(json.dumps(meta, indent=1))
    return BackupReport(folder=dest, database=kind, revision=revision, manifests=count)


def restore(settings: Settings, src: str | Path) -> BackupReport:
    """Replace the database's content with the backup in ``src``; put back missing manifests.

    Raises:
        BackupError: ``src`` is not a backup, or of the other database kind; the restore tool failed.
    """
    from worker.db import migrate

    src = Path(src)
    try:
        meta = json.loads((src / "backup.json").read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{src} is not a segboard backup (no readable backup.json): {exc}") from exc
    url = _url(settings)
    kind = url.get_backend_name()
    if meta.get("database") != kind:
        raise BackupError(f"the backup in {src} is of a {meta.get('database')} database and the target is {kind}; "
                          "restore it into a database of the same kind")
    if kind == "sqlite":
        target = _sqlite_path(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        _sqlite_copy(src / _SQLITE, target)
    else:
        _run([_pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--single-transaction",
              "--dbname", _libpq(url), str(src / _PGDUMP)], "pg_restore")
    migrate.upgrade(str(settings.database_url))
    count = 0
    root = _local_root(settings)
    saved = src / _MANIFESTS
    if root is not None and saved.is_dir():
        for manifest in sorted(saved.rglob("manifest.json")):
            target = root / manifest.relative_to(saved)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(manifest, target)
                count += 1
    return BackupReport(folder=src, database=kind, revision=migrate.current(str(settings.database_url)),
                        manifests=count)
