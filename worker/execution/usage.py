"""What a training run uses of the machine, sampled at the end of each epoch for the run page's charts.

CPU and memory cover the training process and its children (the data-loading workers); GPU memory is
the peak torch allocated on this process's device during the epoch, and GPU utilisation what the
driver reports when NVML is available. A figure that cannot be read is left out, never guessed.

Example:
    >>> usage = ResourceUsage()
    >>> sorted(usage.sample())  # doctest: +SKIP
    ['cpu_percent', 'cpus', 'processes', 'rss_gb']
"""

from __future__ import annotations

import sys
from typing import Any

import psutil

__all__ = ["ResourceUsage"]

_GB = float(2**30)


class ResourceUsage:
    """CPU %, resident memory and GPU memory of this process tree since the previous sample."""

    def __init__(self) -> None:
        self._root = psutil.Process()
        self._seen: dict[int, psutil.Process] = {}
        self._cpu([self._root])  # the first cpu_percent of a process only starts its clock

    def _tree(self) -> list[psutil.Process]:
        try:
            children = self._root.children(recursive=True)
        except psutil.Error:
            children = []
        return [self._root, *children]

    def _cpu(self, procs: list[psutil.Process]) -> float:
        total = 0.0
        for proc in procs:
            known = self._seen.setdefault(proc.pid, proc)
            try:
                total += known.cpu_percent(None)
            except psutil.Error:  # a worker that ended meanwhile
                self._seen.pop(proc.pid, None)
        return total

    def sample(self) -> dict[str, Any]:
        """The figures since the last sample: ``cpu_percent`` (100 = one core busy), ``rss_gb``,
        ``processes``, ``cpus``, and on CUDA ``gpu_mem_gb`` (peak) and ``gpu_util_percent``."""
        procs = self._tree()
        rss = 0
        for proc in procs:
            try:
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
        out: dict[str, Any] = {
            "cpu_percent": round(self._cpu(procs), 1),
            "rss_gb": round(rss / _GB, 3),
            "processes": len(procs),
            "cpus": psutil.cpu_count() or 1,
        }
        torch = sys.modules.get("torch")  # training imported it; sampling never does
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            out["gpu_mem_gb"] = round(torch.cuda.max_memory_allocated() / _GB, 3)
            torch.cuda.reset_peak_memory_stats()
            try:
                out["gpu_util_percent"] = float(torch.cuda.utilization())
            except Exception:  # noqa: BLE001 - NVML missing or refusing: the figure is left out
                pass
        return out
