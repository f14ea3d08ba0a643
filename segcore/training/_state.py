"""Checkpoint and resume for ``fit``: what ``checkpoints/last`` holds beyond the weights, and reading it back."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from segcore.checkpoint import load_checkpoint, save_checkpoint
from segcore.errors import CheckpointError
from segcore.io import read_jsonl, recover_dir, rewrite_jsonl
from segcore.training._epoch import Trainer

__all__ = ["Progress", "save_last", "save_best", "restore", "repair_metrics_log", "seed_everything"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    # the legacy tuple (name, keys, pos, has_gauss, cached_gaussian); numpy's stubs say dict
    np_state = cast(tuple[Any, ...], np.random.get_state())
    return {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((state["python_version"], tuple(state["python"]), None))


@dataclass
class Progress:
    """Where a run stands: the last finished epoch and the best validation so far."""

    epoch: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    best_metrics: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] | None = None  # the report of ``epoch``, from the checkpoint


def _provenance(fingerprint: str, t: Trainer, epoch: int) -> dict[str, Any]:
    return {"dataset_fingerprint": fingerprint, "seed": t.cfg.training.seed, "epoch": epoch,
            "world_size": t.dist.world}


def save_best(path: Path, t: Trainer, model: torch.nn.Module, *, metrics: dict[str, Any], epoch: int,
              fingerprint: str) -> None:
    """The weights that validated best (the averaged ones when averaging is on)."""
    save_checkpoint(path, model=model, config=t.cfg, metrics=metrics, provenance=_provenance(fingerprint, t, epoch))


def save_last(path: Path, t: Trainer, progress: Progress, *, metrics: dict[str, Any] | None,
              fingerprint: str, report: dict[str, Any] | None = None) -> None:
    """A resumable checkpoint after ``progress.epoch``: weights plus optimizer, scheduler, scaler, averages, RNG.

    ``report`` (the epoch's :class:`EpochReport` as a dict) travels inside the checkpoint, so the
    epoch that a checkpoint marks as done can always be recorded again on resume.
    """
    state: dict[str, Any] = {
        "epoch": progress.epoch,
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict(),
        "scaler": t.scaler.state_dict(),
        "rng": _rng_state(),
        "best_value": progress.best_value,
        "best_epoch": progress.best_epoch,
        "bad_epochs": progress.bad_epochs,
        "best_metrics_json": json.dumps(progress.best_metrics),
        "report_json": json.dumps(report) if report is not None else "",
    }
    if t.ema is not None:
        state["ema"] = t.ema.state_dict()
    if t.swa is not None:
        state["swa"] = t.swa.state_dict()
    save_checkpoint(path, model=t.model, config=t.cfg, metrics=metrics or {},
                    provenance=_provenance(fingerprint, t, progress.epoch), train_state=state)


def restore(path: Path, t: Trainer) -> Progress:
    """Load ``path`` (a ``last`` checkpoint) into the trainer; returns the progress it recorded.

    Raises:
        CheckpointError: the checkpoint's training state does not fit this config.
    """
    recover_dir(path)
    ckpt = load_checkpoint(path, device=t.rt.device, with_train_state=True)
    t.model.load_state_dict(ckpt.model.state_dict())
    st = ckpt.train_state or {}
    try:
        t.optimizer.load_state_dict(st["optimizer"])
        t.scheduler.load_state_dict(st["scheduler"])
        t.scaler.load_state_dict(st["scaler"])
        if t.ema is not None and "ema" in st:
            t.ema.load_state_dict(st["ema"])
        if t.swa is not None and "swa" in st:
            t.swa.load_state_dict(st["swa"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"cannot resume from {path}: its training state does not match this config ({exc}); "
            "start a fresh run instead"
        ) from exc
    _set_rng_state(st["rng"])
    return Progress(
        epoch=int(st["epoch"]),
        best_value=st.get("best_value"),
        best_epoch=st.get("best_epoch"),
        bad_epochs=int(st.get("bad_epochs", 0)),
        best_metrics=json.loads(st.get("best_metrics_json", "{}")),
        report=json.loads(st["report_json"]) if st.get("report_json") else None,
    )


def repair_metrics_log(path: Path, progress: Progress) -> bool:
    """Make ``metrics.jsonl`` hold exactly the epochs up to the checkpoint's, one line each.

    Drops a torn last line and lines of epochs after the checkpoint (they run again), and adds the
    checkpoint's own epoch when a crash came between the checkpoint and its line. Returns whether the
    checkpoint's epoch was added back.
    """
    records = [r for r in read_jsonl(path) if isinstance(r, dict) and int(r.get("epoch", 0)) <= progress.epoch]
    added = False
    if progress.report is not None and not any(int(r["epoch"]) == progress.epoch for r in records):
        records.append(progress.report)
        added = True
    rewrite_jsonl(path, records)
    return added
