"""One run on several devices: torch.distributed DDP, one process per device.

The process that calls :func:`segcore.training.fit` is rank 0: it keeps the callbacks (progress,
cancellation, the worker's lease), writes the run folder and the probability store. Ranks
``1..world-1`` are started with ``torch.multiprocessing`` (spawn) and train the same config on
their share of every batch; they write nothing.

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
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
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


def _rank_main(index: int, spec: dict[str, Any]) -> None:
    """Entry point of ranks 1..world-1 (``index`` counts from 0, as torch.multiprocessing passes it)."""
    from segcore.config import parse_config
    from segcore.training.loop import fit_rank

    threading.Thread(target=_watch_parent, args=(spec["parent"],), daemon=True).start()
    rank = index + 1
    ctx = init_rank(rank=rank, world=spec["world"], device_type=spec["device_type"], indices=spec["indices"],
                    port=spec["port"])
    try:
        fit_rank(parse_config(spec["config"]), spec["workdir"], dataset_root=spec["dataset_root"],
                 resume=spec["resume"], device=spec["device"], dist_ctx=ctx)
    finally:
        dist.destroy_process_group()


class _Watchdog(threading.Thread):
    """Rank 0's view of the other ranks: notes the first failure; ends a rank 0 that cannot notice."""

    def __init__(self, context: Any) -> None:
        super().__init__(name="ddp-watchdog", daemon=True)
        self.context = context
        self.failure: str | None = None
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                if self.context.join(timeout=0.5):
                    return  # every other rank finished cleanly
            except Exception as exc:  # noqa: BLE001 - ProcessRaisedException / ProcessExitedException
                self.failure = str(exc).strip()
                log.error("a training rank failed: %s", self.failure)
                if not self._done.wait(PEER_GRACE_S):
                    log.error("rank 0 did not notice within %.0f s; ending the process", PEER_GRACE_S)
                    os._exit(75)
                return

    def finish(self) -> None:
        self._done.set()


def _stop(context: Any) -> None:
    for p in context.processes:
        if p.is_alive():
            p.terminate()
    for p in context.processes:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()


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
) -> Any:
    """Start ranks 1..n-1, run rank 0 here with ``run_rank0(dist_ctx)``, and return its result.

    Raises:
        TrainingError: another rank failed (its error is in the message).
    """
    import torch.multiprocessing as mp

    world = len(indices)
    store = dist.TCPStore(_HOST, 0, world, is_master=True, timeout=datetime.timedelta(seconds=120),
                          wait_for_workers=False)
    spec = {
        "config": config.to_dict(), "workdir": str(workdir), "dataset_root": dataset_root, "resume": resume,
        "device": device, "world": world, "indices": list(indices), "device_type": device_type,
        "port": store.port, "parent": os.getpid(),
    }
    threads = torch.get_num_threads()
    context = mp.start_processes(_rank_main, args=(spec,), nprocs=world - 1, join=False, start_method="spawn")
    watchdog = _Watchdog(context)
    watchdog.start()
    try:
        ctx = init_rank(rank=0, world=world, device_type=device_type, indices=indices, port=store.port, store=store)
        try:
            result = run_rank0(ctx)
        except Exception as exc:
            if watchdog.failure is not None:
                raise TrainingError(f"a training rank failed: {watchdog.failure}") from exc
            raise
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
        if getattr(result, "status", None) == "stopped":
            return result  # the other ranks are stopped below, mid-epoch
        while watchdog.is_alive() and watchdog.failure is None:
            watchdog.join(timeout=0.5)
        if watchdog.failure is not None:
            raise TrainingError(f"a training rank failed: {watchdog.failure}")
        return result
    finally:
        watchdog.finish()
        _stop(context)
        torch.set_num_threads(threads)
