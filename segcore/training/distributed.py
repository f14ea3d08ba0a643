"""One run on several devices: torch.distributed DDP, one process per device.

The process that calls :func:`segcore.training.fit` is rank 0: it keeps the callbacks (progress,
cancellation, the worker's lease), writes the run folder and the probability store. Ranks
``1..world-1`` are fresh processes (``python -m segcore.training.distributed``, as torchrun starts
its workers; a Celery prefork child may not use multiprocessing for this) that train the same config
on their share of every batch; they write nothing but their logs, ``<workdir>/.ddp/rank-<r>.log``.

- ``training.devices``: a list of CUDA indices (``[0, 1]``) or a count (``2``: the first two CUDA
  devices, or two CPU processes with ``training.device: cpu``). ``training.batch_size`` is per
  device; the global batch is ``batch_size * world``.
- Backend: NCCL when every rank has its own CUDA device, else gloo (CPU processes, or several ranks
  sharing one GPU, which NCCL refuses).
- Failure: rank 0 watches the other ranks. When one dies, rank 0 fails the run with that rank's
  error; if rank 0 is blocked in a collective that never returns (NCCL waits on a dead peer), it
  ends its process after :data:`PEER_GRACE_S`, so the worker requeues the run and it resumes from
  ``checkpoints/last``. Each rank ends itself when rank 0's process disappears.

Example:
    >>> cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"devices": [0, 1]})})  # doctest: +SKIP
    >>> fit(cfg, "runs/ddp")  # two processes, one per GPU  # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from segcore.errors import ConfigError, TrainingError

__all__ = ["Dist", "resolve_devices", "launch", "PEER_GRACE_S"]

log = logging.getLogger(__name__)

# How long rank 0 waits, after another rank died, for its own collective to fail before it ends itself.
PEER_GRACE_S = 30.0
_HOST = "127.0.0.1"


def resolve_devices(devices: int | Sequence[int] | None, device_type: str) -> list[int] | None:
    """``training.devices`` as one index per rank, or None for a single-process run.

    Raises:
        ConfigError: more CUDA devices than are visible, or a list on the CPU.
    """
    if devices is None:
        return None
    if isinstance(devices, int):
        indices = list(range(devices))
    else:
        indices = [int(d) for d in devices]
    if len(indices) < 2:
        return None
    if device_type == "cuda":
        visible = torch.cuda.device_count()
        bad = [d for d in indices if not 0 <= d < visible]
        if bad:
            raise ConfigError(
                f"training.devices names CUDA device(s) {bad} but {visible} are visible; "
                f"use indices below {visible} or fewer devices"
            )
    elif not isinstance(devices, int):
        raise ConfigError("training.devices on the CPU is a process count (e.g. 2), not a list of indices")
    return indices


@dataclass
class Dist:
    """This process's place in the run: rank, world size and its device."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None  # set when this process is in a process group (also with one rank)

    @property
    def active(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, values: Sequence[float | torch.Tensor]) -> list[float]:
        """Sums over ranks of a few scalars, as floats (one collective; a no-op for one rank)."""
        t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self.device) for v in values])
        if self.active:
            dist.all_reduce(t)
        return t.tolist()

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Average the floating buffers (BatchNorm statistics) of ``module`` over ranks."""
        if not self.active:
            return
        for b in module.buffers():
            if b.is_floating_point():
                dist.all_reduce(b)
                b /= self.world


def backend_for(device_type: str, indices: Sequence[int]) -> str:
    """NCCL for distinct CUDA devices, gloo otherwise."""
    if device_type == "cuda" and len(set(indices)) == len(indices) and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def init_rank(*, rank: int, world: int, device_type: str, indices: Sequence[int], port: int,
              store: Any = None) -> Dist:
    """Join the process group as ``rank`` and pin this process to its device."""
    if device_type == "cuda":
        device = torch.device("cuda", indices[rank])
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if store is None:
        store = dist.TCPStore(_HOST, port, world, is_master=False, timeout=datetime.timedelta(seconds=120))
    backend = backend_for(device_type, indices)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world)
    return Dist(rank=rank, world=world, device=device, backend=backend)


def _watch_parent(parent: int) -> None:
    """End this rank when the process that started it is gone (e.g. SIGKILLed)."""
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(1.0)


def _rank_main(spec_path: str, rank: int) -> None:
    """Entry point of ranks 1..world-1: ``python -m segcore.training.distributed SPEC RANK``."""
    from segcore.config import parse_config
    from segcore.training.loop import fit_rank
    from segcore.weights import WeightsCache

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    threading.Thread(target=_watch_parent, args=(spec["parent"],), daemon=True).start()
    ctx = init_rank(rank=rank, world=spec["world"], device_type=spec["device_type"], indices=spec["indices"],
                    port=spec["port"])
    try:
        fit_rank(parse_config(spec["config"]), spec["workdir"], dataset_root=spec["dataset_root"],
                 resume=spec["resume"], device=spec["device"], dist_ctx=ctx,
                 weights_cache=WeightsCache.from_dict(spec.get("weights_cache")))
    finally:
        dist.destroy_process_group()


def _last_line(log: Path) -> str:
    try:
        lines = [x for x in log.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip()[:500] if lines else "no output"


class _Ranks:
    """The processes of ranks 1..world-1, each with its log file."""

    def __init__(self, spec_path: Path, world: int, logs: Path) -> None:
        import segcore

        env = dict(os.environ)
        home = str(Path(segcore.__file__).resolve().parent.parent)  # so `-m segcore...` imports this segcore
        env["PYTHONPATH"] = os.pathsep.join(p for p in (home, env.get("PYTHONPATH")) if p)
        self.procs: list[tuple[int, subprocess.Popen[bytes], Path]] = []
        for rank in range(1, world):
            log = logs / f"rank-{rank}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen([sys.executable, "-m", "segcore.training.distributed", str(spec_path),
                                         str(rank)], env=env, stdout=out, stderr=subprocess.STDOUT)
            self.procs.append((rank, proc, log))

    def failure(self) -> str | None:
        for rank, proc, log in self.procs:
            rc = proc.poll()
            if rc is not None and rc != 0:
                return f"rank {rank} exited with code {rc}: {_last_line(log)}"
        return None

    def running(self) -> bool:
        return any(proc.poll() is None for _, proc, _ in self.procs)

    def stop(self) -> None:
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for _, proc, _ in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class _Watchdog(threading.Thread):
    """Rank 0's view of the other ranks: notes the first failure; ends a rank 0 that cannot notice."""

    def __init__(self, ranks: _Ranks) -> None:
        super().__init__(name="ddp-watchdog", daemon=True)
        self.ranks = ranks
        self.failure: str | None = None
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.5):
            failure = self.ranks.failure()
            if failure is None:
                continue
            self.failure = failure
            log.error("a training rank failed: %s", failure)
            if not self._done.wait(PEER_GRACE_S):
                log.error("rank 0 did not notice within %.0f s; ending the process", PEER_GRACE_S)
                self.ranks.stop()
                os._exit(75)
            return

    def finish(self) -> None:
        self._done.set()


def launch(
    config: Any,
    workdir: str,
    *,
    indices: Sequence[int],
    device_type: str,
    dataset_root: str | None,
    resume: bool,
    device: str | None,
    run_rank0: Any,
    weights_cache: Any = None,
) -> Any:
    """Start ranks 1..n-1, run rank 0 here with ``run_rank0(dist_ctx)``, and return its result.

    Raises:
        TrainingError: another rank failed (its last log line is in the message; its whole log is
            ``<workdir>/.ddp/rank-<r>.log``).
    """
    world = len(indices)
    store = dist.TCPStore(_HOST, 0, world, is_master=True, timeout=datetime.timedelta(seconds=120),
                          wait_for_workers=False)
    spec = {
        "config": config.to_dict(), "workdir": str(workdir), "dataset_root": dataset_root, "resume": resume,
        "device": device, "world": world, "indices": list(indices), "device_type": device_type,
        "port": store.port, "parent": os.getpid(),
        "weights_cache": weights_cache.to_dict() if weights_cache is not None else None,
    }
    logs = Path(workdir) / ".ddp"
    logs.mkdir(parents=True, exist_ok=True)
    spec_path = logs / "spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    threads = torch.get_num_threads()
    ranks = _Ranks(spec_path, world, logs)
    watchdog = _Watchdog(ranks)
    watchdog.start()
    try:
        ctx = init_rank(rank=0, world=world, device_type=device_type, indices=indices, port=store.port, store=store)
        try:
            result = run_rank0(ctx)
        except Exception as exc:
            failure = watchdog.failure or ranks.failure()
            if failure is not None:
                raise TrainingError(f"a training rank failed: {failure}") from exc
            raise
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
        if getattr(result, "status", None) == "stopped":
            return result  # the other ranks are stopped below, mid-epoch
        deadline = time.monotonic() + 120  # they finished training with rank 0; only their exit is left
        while ranks.running() and ranks.failure() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        failure = ranks.failure()
        if failure is not None:
            raise TrainingError(f"a training rank failed: {failure}")
        return result
    finally:
        watchdog.finish()
        ranks.stop()
        torch.set_num_threads(threads)


if __name__ == "__main__":
    _rank_main(sys.argv[1], int(sys.argv[2]))
