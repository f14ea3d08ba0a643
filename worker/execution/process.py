"""``segboard worker``: one Celery worker, one child process per device.

``--gpus 0,1 --ddp`` starts one child that trains each run on both GPUs (DDP, one process per GPU).

``--gpus 0,1`` starts a prefork pool of two children, each bound to one GPU in
``worker_process_init`` (``CUDA_VISIBLE_DEVICES``), with a prefetch of one: a child takes a
message only when it is free, so a job waits in the queue until a device is. Without GPUs there is
one CPU child. Each child registers itself in the workers table as ``<worker_name>/<device>`` and
reports a heartbeat there every ``heartbeat_s``.

A worker asked to stop (SIGTERM to its main process, as ``docker stop`` sends; or to its whole
process group, as ``segboard up`` does) passes it on to its children: each stops its training at
the next step and gives the run back to the queue, where it resumes from its last checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Sequence

from celery import Celery, signals

from worker.db.session import session_scope
from worker.execution.context import WorkerContext
from worker.queue.celery_app import make_celery, settings_of
from worker.services import workers
from worker.settings import Settings

__all__ = ["parse_devices", "bind_device", "install_worker_hooks", "current_context", "run_worker", "DEVICES_ENV"]

log = logging.getLogger(__name__)

DEVICES_ENV = "SEGBOARD_WORKER_DEVICES"

# The context of this worker child, set by worker_process_init after the fork.
_context: WorkerContext | None = None
_context_lock = threading.Lock()


def parse_devices(gpus: str | None, *, ddp: bool = False) -> list[str]:
    """``"0,1"`` -> ``["cuda:0", "cuda:1"]``; ``None``, ``""`` or ``"cpu"`` -> ``["cpu"]``.

    With ``ddp`` the GPUs form one device group, ``["cuda:0,1"]``: one training process that runs
    each run on all of them (DDP).

    Raises:
        ValueError: an entry is not a GPU index, one is repeated, or ``ddp`` has fewer than two GPUs.
    """
    if gpus is None or not gpus.strip() or gpus.strip().lower() == "cpu":
        if ddp:
            raise ValueError("--ddp trains one run on several GPUs; name them, e.g. --gpus 0,1 --ddp")
        return ["cpu"]
    devices: list[str] = []
    for part in gpus.split(","):
        p = part.strip().removeprefix("cuda:")
        if not p.isdigit():
            raise ValueError(f"--gpus {gpus!r}: {part.strip()!r} is not a GPU index; write e.g. --gpus 0,1 (or cpu)")
        if f"cuda:{int(p)}" in devices:
            raise ValueError(f"--gpus {gpus!r} names GPU {int(p)} twice")
        devices.append(f"cuda:{int(p)}")
    if ddp:
        if len(devices) < 2:
            raise ValueError(f"--ddp needs two or more GPUs, got --gpus {gpus!r}; e.g. --gpus 0,1 --ddp")
        return ["cuda:" + ",".join(d.split(":")[1] for d in devices)]
    return devices


def bind_device(device: str) -> tuple[str, list[int] | None]:
    """Pin this process to ``device`` (``cpu``, ``cuda:1`` or a group ``cuda:0,1``) before torch starts.

    Returns:
        The ``device`` and ``devices`` arguments of ``fit``: ``("cuda", [0, 1])`` for a group, whose
        GPUs this process then sees as 0 and 1.
    """
    if not device.startswith("cuda:"):
        return device, None
    indices = device.split(":", 1)[1]
    os.environ["CUDA_VISIBLE_DEVICES"] = indices
    count = len(indices.split(","))
    return "cuda", list(range(count)) if count > 1 else None


def _devices_of(app: Celery) -> list[str]:
    devices = app.conf.get("segboard_devices")
    if not devices:
        devices = parse_devices(os.environ.get(DEVICES_ENV))
    return list(devices)


class _NodeHeartbeat(threading.Thread):
    """Keeps this child's row in the workers table fresh, busy or idle."""

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(name="worker-node-heartbeat", daemon=True)
        self.ctx = ctx
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.ctx.settings.heartbeat_s):
            try:
                with session_scope(self.ctx.factory) as s:
                    workers.touch_worker(s, name=self.ctx.worker_name, current_run_id=_run_of(self.ctx))
            except Exception as exc:  # noqa: BLE001 - informative only; try again next beat
                log.warning("worker heartbeat failed: %s", exc)


def _run_of(ctx: WorkerContext) -> int | None:
    return ctx.current_id if ctx.current_kind == "run" else None


def _make_context(app: Celery, index: int) -> WorkerContext:
    settings = settings_of(app)
    devices = _devices_of(app)
    device = devices[index % len(devices)]
    fit_device, fit_devices = bind_device(device)  # before torch is imported in this child
    ctx = WorkerContext.create(settings, worker_name=f"{settings.worker_name}/{device}", device=device,
                               fit_device=fit_device, fit_devices=fit_devices)
    ctx.on_stuck = _end_stuck_process
    with session_scope(ctx.factory) as s:
        workers.register_worker(s, name=ctx.worker_name, hostname=socket.gethostname(), devices=[device])
    _NodeHeartbeat(ctx).start()
    return ctx


def _end_stuck_process() -> None:
    """A training ignored a cancel or shutdown (see :class:`worker.execution.runner.LeaseKeeper`): end this
    pool child; Celery starts a fresh one and acknowledges or requeues the message."""
    os._exit(70)


def _on_sigterm(signum: int, frame: object) -> None:
    ctx = _context
    if ctx is None or ctx.current_id is None:
        # idle: leave now
        if ctx is not None:
            _offline(ctx)
        os._exit(0)
    ctx.shutdown.set()  # the step callback releases the run and the task returns; SIGKILL forces it


def _stop_children(**_: object) -> None:
    """On the main process's warm shutdown (SIGTERM, e.g. ``docker stop``), ask the pool children
    to give their runs back instead of waiting for trainings that may last hours."""
    from billiard import active_children

    for child in active_children():
        try:
            os.kill(child.pid, signal.SIGTERM)
        except (OSError, TypeError):
            pass


def _offline(ctx: WorkerContext) -> None:
    try:
        with session_scope(ctx.factory) as s:
            workers.mark_worker_offline(s, name=ctx.worker_name)
    except Exception as exc:  # noqa: BLE001 - shutting down anyway
        log.warning("cannot mark worker %s offline: %s", ctx.worker_name, exc)


def current_context(app: Celery) -> WorkerContext:
    """This process's :class:`WorkerContext` (created on first use in a solo or threads pool)."""
    global _context
    with _context_lock:
        if _context is None:
            _context = _make_context(app, 0)
        ctx = _context
    # billiard installs its own SIGTERM handler after worker_process_init; take it back here, in
    # the pool child's main thread, so that a SIGTERM gives the run back instead of failing it
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is not _on_sigterm:
        signal.signal(signal.SIGTERM, _on_sigterm)
    return ctx


def install_worker_hooks(app: Celery) -> None:
    """Bind each pool child to a device when it starts, and mark it offline when it stops."""

    def init_child(**_: object) -> None:
        global _context
        from billiard.process import current_process

        index = int(getattr(current_process(), "index", 0) or 0)
        with _context_lock:
            _context = _make_context(app, index)

    def shutdown_child(**_: object) -> None:
        if _context is not None:
            _offline(_context)

    signals.worker_process_init.connect(init_child, weak=False)
    signals.worker_process_shutdown.connect(shutdown_child, weak=False)
    signals.worker_shutting_down.connect(_stop_children, weak=False)


def run_worker(
    settings: Settings,
    *,
    devices: Sequence[str],
    broker_url: str | None = None,
    loglevel: str | None = None,
) -> int:
    """Run a worker in this process until it is stopped (SIGTERM/SIGINT: warm shutdown).

    Returns:
        The worker's exit code.
    """
    app = make_celery(settings, broker_url=broker_url)
    app.conf.segboard_devices = list(devices)
    install_worker_hooks(app)
    worker = app.Worker(
        hostname=f"segboard@{settings.worker_name}",
        concurrency=len(devices),
        pool="prefork",
        queues=[settings.queue_name, settings.jobs_queue_name],
        loglevel=loglevel or settings.log_level,
        optimization="fair",
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
    )
    worker.start()
    return int(worker.exitcode or 0)
