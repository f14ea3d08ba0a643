"""What the training loop tells the outside world, and how the outside world stops it.

A callback is any object with some of these methods; each is optional:

- ``on_train_start(info: dict)``: epochs, steps_per_epoch, num_train, num_val, device, start_epoch
- ``on_step(report: StepReport)``: at each sync point: every step on the CPU, at most every second
  on CUDA (the loss is the mean since the last report; throttle expensive work yourself)
- ``on_epoch_end(report: EpochReport)``: after every epoch, with validation metrics when validated
- ``on_checkpoint(path: Path, best: bool)``: after a checkpoint folder is written
- ``on_log(line: str)``: human-readable log lines

Any method may raise :class:`StopTraining` to stop; :func:`segcore.training.fit` then returns with
``status="stopped"``. The worker uses this to honour cancellation within a step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = ["Callback", "StepReport", "EpochReport", "FitResult", "StopTraining", "dispatch"]


class StopTraining(Exception):
    """Raised by a callback to stop training cleanly (e.g. the run was cancelled)."""

    def __init__(self, reason: str = "stopped by a callback") -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class StepReport:
    epoch: int
    step: int
    steps_per_epoch: int
    loss: float
    images_per_s: float
    lr: float


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    epochs: int
    train_loss: float
    lr: float
    images_per_s: float
    eta_s: float
    elapsed_s: float
    val: dict[str, Any] | None
    is_best: bool
    loss_terms: dict[str, float] = field(default_factory=dict)
    # seconds spent on each part of the epoch: train_s (what images_per_s counts), val_s,
    # checkpoint_s, and loader_start_s / compile_warmup_s when they happened
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "epochs": self.epochs,
            "train_loss": self.train_loss,
            "lr": self.lr,
            "images_per_s": self.images_per_s,
            "eta_s": self.eta_s,
            "elapsed_s": self.elapsed_s,
            "val": self.val,
            "is_best": self.is_best,
            "loss_terms": self.loss_terms,
            "timings": self.timings,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpochReport:
        """The report :meth:`to_dict` wrote (unknown keys ignored)."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class FitResult:
    """What :func:`fit` returns.

    ``status`` is ``completed`` (all epochs), ``early_stopped`` (patience ran out) or ``stopped``
    (a callback raised :class:`StopTraining`).
    """

    status: str
    epochs_run: int
    best_epoch: int | None
    best_metrics: dict[str, Any]
    last_metrics: dict[str, Any]
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    val_store: Path | None
    dataset_fingerprint: str
    images_per_s: float
    history: list[EpochReport] = field(default_factory=list)
    stop_reason: str | None = None


@runtime_checkable
class Callback(Protocol):
    """Marker protocol; see the module docstring for the optional methods."""


def dispatch(callbacks: Any, method: str, *args: Any) -> None:
    """Call ``method`` on every callback that has it (StopTraining propagates)."""
    for cb in callbacks:
        fn = getattr(cb, method, None)
        if fn is not None:
            fn(*args)
