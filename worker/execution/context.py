"""What one worker process needs to execute runs and jobs, and the thread that keeps a claim's lease.

Example:
    >>> ctx = WorkerContext.create(settings, worker_name="box1/cpu", device="cpu")
    >>> keeper = LeaseKeeper(ctx, token)  # heartbeats every settings.heartbeat_s
    >>> keeper.start()
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from worker.artifacts import Artifacts
from worker.db.session import make_engine, make_session_factory, session_scope
from worker.services import lifecycle
from worker.services.lifecycle import ClaimToken, LeaseState
from worker.settings import Settings

__all__ = ["WorkerContext", "LeaseKeeper", "STOP_GRACE_S"]

log = logging.getLogger(__name__)

# A training that has not reached a step this long after a cancel (or a shutdown) is stuck (a
# hung data loader, one enormous step): the run is marked and its process ended.
STOP_GRACE_S = 60.0


@dataclasses.dataclass
class WorkerContext:
    """What one worker process needs to execute runs: settings, database, its name and device.

    Attributes:
        worker_name: This process's name in the workers table and on the runs it claims.
        device: The device shown in the database (``cuda:1``, ``cpu``).
        fit_device: The device passed to ``fit`` (``cuda`` when ``CUDA_VISIBLE_DEVICES`` pins it).
        fit_devices: The ``devices`` passed to ``fit`` for a GPU group (``[0, 1]``: DDP), else None.
        shutdown: Set when the process should stop; a run in progress is released.
        current_id: The run or job being executed, for the workers table.
        on_stuck: Called (from the heartbeat thread) when a training has not stopped within
            ``STOP_GRACE_S`` of a cancel or shutdown, after the run was marked; a pool child ends
            its process there. None (in-process use) only logs it.
    """

    settings: Settings
    factory: sessionmaker[Session]
    worker_name: str
    device: str
    fit_device: str
    fit_devices: list[int] | None = None
    shutdown: threading.Event = dataclasses.field(default_factory=threading.Event)
    current_id: int | None = None
    current_kind: str = "run"
    on_stuck: Callable[[], None] | None = None
    _artifacts: Artifacts | None = dataclasses.field(default=None, repr=False)

    @property
    def artifacts(self) -> Artifacts:
        """The artifact root (local folder or its mirror), built on first use."""
        if self._artifacts is None:
            self._artifacts = Artifacts.from_settings(self.settings)
        return self._artifacts

    @classmethod
    def create(
        cls, settings: Settings, *, worker_name: str, device: str, fit_device: str | None = None,
        fit_devices: list[int] | None = None,
    ) -> WorkerContext:
        """A context with its own engine (build it after forking, never before)."""
        engine = make_engine(settings)
        return cls(
            settings=settings,
            factory=make_session_factory(engine),
            worker_name=worker_name,
            device=device,
            fit_device=fit_device or device,
            fit_devices=fit_devices,
        )



class LeaseKeeper(threading.Thread):
    """Renews a claim's lease every ``heartbeat_s`` until stopped; remembers what it found.

    A heartbeat that cannot reach the database is retried; once the lease would have expired
    without a renewal, the claim is treated as lost (another worker may take the run).
    """

    def __init__(self, ctx: WorkerContext, token: ClaimToken, *, stop_grace_s: float = STOP_GRACE_S) -> None:
        super().__init__(name=f"lease-{token.kind}-{token.object_id}", daemon=True)
        self.ctx = ctx
        self.token = token
        self.state = LeaseState.HELD
        self.stop_grace_s = stop_grace_s
        self._halt = threading.Event()
        self._renewed = time.monotonic()
        self._stop_asked: float | None = None

    def beat(self) -> LeaseState:
        """One heartbeat now (also called by the step callback)."""
        settings = self.ctx.settings
        try:
            with session_scope(self.ctx.factory) as s:
                fn = lifecycle.heartbeat if self.token.kind == "run" else lifecycle.heartbeat_job
                state = fn(s, token=self.token, lease_s=settings.lease_s)
            self._renewed = time.monotonic()
            if self.state is not LeaseState.LOST:
                self.state = state
        except Exception as exc:  # noqa: BLE001 - the database may be briefly away; retry next beat
            log.warning("heartbeat of %s %s failed: %s", self.token.kind, self.token.object_id, exc)
            if time.monotonic() - self._renewed > settings.lease_s:
                self.state = LeaseState.LOST
        return self.state

    def run(self) -> None:
        while not self._halt.wait(self.ctx.settings.heartbeat_s):
            state = self.beat()
            if state is LeaseState.LOST:
                return
            if state is LeaseState.CANCEL_REQUESTED or self.ctx.shutdown.is_set():
                self._stop_asked = self._stop_asked or time.monotonic()
                if time.monotonic() - self._stop_asked > self.stop_grace_s:
                    self._end_stuck(cancel=state is LeaseState.CANCEL_REQUESTED)
                    return

    def _end_stuck(self, *, cancel: bool) -> None:
        """The training ignored a stop for ``stop_grace_s``: mark the run, then end the process."""
        reason = f"the training did not reach its next step within {self.stop_grace_s:g} s; its process was ended"
        try:
            with session_scope(self.ctx.factory) as s:
                if cancel:
                    lifecycle.mark_cancelled(s, token=self.token, reason=reason)
                else:
                    lifecycle.release(s, token=self.token, reason=reason)
        except Exception as exc:  # noqa: BLE001 - the reaper settles it from the expired lease
            log.warning("cannot mark stuck %s %s: %s", self.token.kind, self.token.object_id, exc)
        log.error("%s %s: %s", self.token.kind, self.token.object_id, reason)
        self.state = LeaseState.LOST
        if self.ctx.on_stuck is not None:
            self.ctx.on_stuck()

    def stop(self) -> None:
        """Stop beating (the claim's last write follows)."""
        self._halt.set()
        self.join(timeout=self.ctx.settings.heartbeat_s + 5)
