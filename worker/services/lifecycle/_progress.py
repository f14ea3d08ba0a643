"""Progress a training reports under its claim: epochs, live figures, logs, checkpoints."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.models import EpochMetric, LogLevel, Run
from worker.errors import InvalidInput
from worker.services.lifecycle._base import ClaimToken, _log, _now, _owned

# ------------------------------------------------------------------ progress


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _clean_json(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become None (PostgreSQL's JSON refuses them)."""
    if isinstance(obj, dict):
        return {str(k): _clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_json(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if hasattr(obj, "item"):  # numpy / torch scalars
        return _clean_json(obj.item())
    return str(obj)


def record_epoch(
    session: Session,
    *,
    token: ClaimToken,
    epoch: int,
    epochs: int,
    train_loss: float | None,
    lr: float | None,
    images_per_s: float | None,
    eta_s: float | None,
    val: dict[str, Any] | None,
    is_best: bool,
    monitor: str | None = None,
    resources: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> bool:
    """Store one epoch's metrics (and the resources it used) and the run's progress columns.

    An epoch reported again (a resumed run repeats the epoch after its last checkpoint) replaces
    the earlier row. ``is_best`` with ``val`` updates ``best_metrics`` and ``monitor_value``.

    Returns:
        False when the claim is no longer held (nothing written).
    """
    now = _now(now)
    values: dict[str, Any] = {
        "current_epoch": epoch,
        "total_epochs": epochs,
        "images_per_s": _finite(images_per_s),
        "eta_s": _finite(eta_s),
        "epoch_progress": 0.0,
        "heartbeat_at": now,
    }
    val_clean = _clean_json(val) if val is not None else None
    if is_best and val_clean:
        values["best_metrics"] = {**val_clean, "epoch": epoch}
        if monitor is not None:
            values["monitor_value"] = _finite(val_clean.get(monitor))
    stmt = sa.update(Run).where(_owned(Run, token)).values(**values).execution_options(synchronize_session=False)
    if session.execute(stmt).rowcount != 1:
        return False
    session.execute(sa.delete(EpochMetric).where(EpochMetric.run_id == token.object_id, EpochMetric.epoch == epoch))
    session.add(
        EpochMetric(
            run_id=token.object_id,
            epoch=epoch,
            train_loss=_finite(train_loss),
            lr=_finite(lr),
            images_per_s=_finite(images_per_s),
            val=val_clean,
            resources=_clean_json(resources) if resources else None,
            created_at=now,
        )
    )
    return True


def record_progress(
    session: Session,
    *,
    token: ClaimToken,
    current_epoch: int | None = None,
    total_epochs: int | None = None,
    images_per_s: float | None = None,
    eta_s: float | None = None,
    epoch_progress: float | None = None,
) -> bool:
    """Update the live progress columns between epochs (throttled by the caller).

    Args:
        epoch_progress: The share of the current epoch's steps done (clipped to 0-1).
    """
    values: dict[str, Any] = {}
    if epoch_progress is not None and math.isfinite(epoch_progress):
        values["epoch_progress"] = min(max(float(epoch_progress), 0.0), 1.0)
    if current_epoch is not None:
        values["current_epoch"] = current_epoch
    if total_epochs is not None:
        values["total_epochs"] = total_epochs
    if images_per_s is not None:
        values["images_per_s"] = _finite(images_per_s)
    if eta_s is not None:
        values["eta_s"] = _finite(eta_s)
    if not values:
        return True
    stmt = sa.update(Run).where(_owned(Run, token)).values(**values).execution_options(synchronize_session=False)
    return session.execute(stmt).rowcount == 1


def start_training(session: Session, *, token: ClaimToken, start_epoch: int, total_epochs: int | None) -> bool:
    """A training (fresh or resumed) starts at ``start_epoch``: rows of that epoch and later go.

    They belong to an earlier attempt that got past its last checkpoint; the epochs run again, so the
    stored epochs match ``metrics.jsonl`` (which the training repairs the same way).

    Returns:
        False when the claim is no longer held (nothing written).
    """
    if not record_progress(session, token=token, current_epoch=start_epoch - 1, total_epochs=total_epochs):
        return False
    session.execute(sa.delete(EpochMetric).where(EpochMetric.run_id == token.object_id,
                                                 EpochMetric.epoch >= start_epoch))
    return True


def record_log(
    session: Session,
    *,
    message: str,
    run_id: int | None = None,
    job_id: int | None = None,
    level: LogLevel = LogLevel.INFO,
    now: dt.datetime | None = None,
) -> None:
    """Append a log line to a run (or a job).

    Raises:
        InvalidInput: neither or both of ``run_id`` and ``job_id`` given.
    """
    if (run_id is None) == (job_id is None):
        raise InvalidInput("record_log needs exactly one of run_id and job_id")
    _log(session, "run" if run_id is not None else "job", run_id or job_id or 0, message, level, _now(now))


def record_checkpoint(session: Session, *, token: ClaimToken, checkpoint_dir: str) -> bool:
    """Remember the run's newest checkpoint folder (what a resumed run starts from)."""
    stmt = (
        sa.update(Run)
        .where(_owned(Run, token))
        .values(checkpoint_dir=checkpoint_dir)
        .execution_options(synchronize_session=False)
    )
    return session.execute(stmt).rowcount == 1
