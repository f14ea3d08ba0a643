"""Data to the device: samplers that fix every sample's randomness, loaders, and the prefetching feed.

- :class:`SeededSampler` wraps torch's ``DistributedSampler`` (one rank or several) and yields
  ``(index, item_seed)`` pairs. The item seed depends on the run seed, the epoch and the index only,
  so augmentations are the same whatever the number of loader workers, with persistent workers,
  after a resume, and on any rank that draws the sample.
- :class:`ShardSampler` splits validation images across ranks without padding, so no image is
  scored twice.
- :class:`DeviceFeed` moves batches to the device on a side CUDA stream one batch ahead (as timm's
  prefetch loader does), normalises uint8 images there and applies the memory format. On the CPU
  it does the same work in line.

Example:
    >>> sampler = SeededSampler(len(train_ds), seed=0, shuffle=True)  # doctest: +SKIP
    >>> loader = make_loader(train_ds, sampler=sampler, batch_size=16, workers=8, device=rt.device)  # doctest: +SKIP
    >>> for images, masks in DeviceFeed(loader, rt, mean, std):  # doctest: +SKIP
    ...     ...
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from segcore.training._device import Runtime

__all__ = ["SeededSampler", "ShardSampler", "make_loader", "DeviceFeed", "item_seed"]


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentations in one epoch (a 31-bit int)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0] & 0x7FFFFFFF)


class _Positions(Dataset[int]):
    """A stand-in of the right length for ``DistributedSampler``, which only needs ``len``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


class SeededSampler(Sampler[tuple[int, int]]):
    """Training order of one rank: ``(index, item_seed)`` pairs, reshuffled by :meth:`set_epoch`.

    With ``world > 1`` each rank takes every ``world``-th sample of one shared permutation (padded
    by repeating samples so every rank takes the same number, as ``DistributedSampler`` does); the
    ranks' batches at step ``s`` together are the batch of a one-process run with ``world`` times
    the batch size.

    Args:
        n: Dataset length.
        seed: The run seed; the permutation of epoch ``e`` depends on ``(seed, e)`` only.
        shuffle: Permute each epoch (training) or keep the order.
        rank: This process's rank.
        world: Number of ranks.
        limit: At most this many samples per epoch on this rank (``steps_per_epoch * batch_size``).
    """

    def __init__(self, n: int, *, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1,
                 limit: int | None = None) -> None:
        self.seed = seed
        self.epoch = 0
        self.limit = limit
        self._inner: DistributedSampler[int] = DistributedSampler(
            _Positions(n), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._inner.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self._inner)
        return n if self.limit is None else min(n, self.limit)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for k, index in enumerate(self._inner):
            if k >= len(self):
                return
            yield index, item_seed(self.seed, self.epoch, index)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: every sample on exactly one rank, none repeated."""

    def __init__(self, n: int, *, rank: int = 0, world: int = 1) -> None:
        self.indices = list(range(rank, n, world))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(ds: Dataset[Any], *, sampler: Sampler[Any], batch_size: int, workers: int, device: torch.device,
                drop_last: bool = False) -> DataLoader[Any]:
    """A loader whose workers live as long as it does and, for CUDA, fill pinned memory."""
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_worker_init if workers else None,
    )


class DeviceFeed:
    """Iterates ``(images, masks)`` on the device: images float, normalised, in the run's memory format.

    Images arrive as uint8 ``[N, 3, H, W]`` (0..255) or float (0..1, from a pipeline that converted
    them); both become ``(x / 255 - mean) / std`` in float32 on the device. uint8 masks (multiclass
    class indices) become int64 there. On CUDA the copy and the
    normalisation of batch ``k + 1`` run on a side stream while the model works on batch ``k``.

    Args:
        loader: Yields dicts with ``image`` and ``mask`` (and anything else, ignored).
        rt: The run's device and memory format.
        mean: Per-channel mean on the 0..1 scale.
        std: Per-channel std on the 0..1 scale.
    """

    def __init__(self, loader: DataLoader[Any], rt: Runtime, mean: Sequence[float], std: Sequence[float]) -> None:
        self.loader = loader
        self.rt = rt
        self.mean = torch.tensor(mean, dtype=torch.float32, device=rt.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=rt.device).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.loader)

    def _prepare(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        images = batch["image"].to(self.rt.device, non_blocking=True)
        masks = batch["mask"].to(self.rt.device, non_blocking=True)
        if masks.dtype == torch.uint8:  # multiclass class indices served compactly
            masks = masks.long()
        scale = 255.0 if images.dtype == torch.uint8 else 1.0
        images = (images.float() / scale - self.mean) / self.std
        if self.rt.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, masks

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.rt.device.type != "cuda":
            for batch in self.loader:
                yield self._prepare(batch)
            return
        stream = torch.cuda.Stream(device=self.rt.device)
        current = torch.cuda.current_stream(self.rt.device)
        pending: tuple[torch.Tensor, torch.Tensor] | None = None
        for batch in self.loader:
            with torch.cuda.stream(stream):
                ready = self._prepare(batch)
            if pending is not None:
                yield pending
            current.wait_stream(stream)
            for t in ready:  # the allocator must not reuse these while the main stream reads them
                t.record_stream(current)
            pending = ready
        if pending is not None:
            yield pending
