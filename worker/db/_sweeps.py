"""The tables of sweeps (re-exported by :mod:`worker.db.models`), and the names of Optuna's own tables.

A sweep is a search over config values with a budget of trials; its Optuna study lives in the
same database, in Optuna's own tables (:data:`OPTUNA_TABLES`), which Alembic leaves alone
(:func:`include_object`). ``sweep_trials`` links each trial number to the experiment and run it
queued and keeps what the study was told, so pages read a sweep without loading Optuna.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from worker.db.base import Base, enum_column_type, utcnow

__all__ = ["SweepStatus", "Sweep", "SweepTrial", "OPTUNA_TABLES", "include_object"]

#: The tables Optuna's RDB storage creates (``optuna.storages._rdb.models``); a test keeps this list
#: equal to Optuna's. They are created on first use, never by a migration.
OPTUNA_TABLES: frozenset[str] = frozenset({
    "studies", "study_directions", "study_user_attributes", "study_system_attributes", "trials",
    "trial_user_attributes", "trial_system_attributes", "trial_params", "trial_values",
    "trial_intermediate_values", "trial_heartbeats", "version_info",
})


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic's ``include_object`` hook: leave Optuna's tables (and their indexes) out of autogenerate."""
    if type_ == "table":
        return name not in OPTUNA_TABLES
    table = getattr(obj, "table", None)
    return getattr(table, "name", None) not in OPTUNA_TABLES


class SweepStatus(str, enum.Enum):
    """A sweep queues trials while running; it is finished once its budget of trials has ended."""

    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"


class Sweep(Base):
    """A search over config values: base config, search space, budget, and the Optuna study's name."""

    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    study_name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    # the validated SweepSpec (worker.schemas.SweepSpec) as JSON: config, search space, sampler...
    spec: Mapped[dict[str, Any]]
    budget: Mapped[int]
    parallelism: Mapped[int] = mapped_column(default=1)
    metric: Mapped[str] = mapped_column(sa.String(64))
    direction: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[SweepStatus] = mapped_column(enum_column_type(SweepStatus), default=SweepStatus.RUNNING)
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("members.id", ondelete="SET NULL"), index=True)
    dataset_id: Mapped[int | None] = mapped_column(sa.ForeignKey("datasets.id", ondelete="SET NULL"), index=True)
    message: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]


class SweepTrial(Base):
    """One trial of a sweep: its Optuna number and parameters, the run it queued, what the study was told.

    ``state`` is None while the run is queued or running, then ``complete``, ``failed`` or
    ``cancelled`` once the study was told (a trial whose config was refused has no run; one whose run
    was deleted before it ended is told failed).
    """

    __tablename__ = "sweep_trials"
    __table_args__ = (sa.UniqueConstraint("sweep_id", "trial_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sweep_id: Mapped[int] = mapped_column(sa.ForeignKey("sweeps.id", ondelete="CASCADE"), index=True)
    trial_number: Mapped[int]
    params: Mapped[dict[str, Any]]
    # a deleted experiment or run leaves the trial (its parameters and result) in the sweep
    experiment_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("experiments.id", ondelete="SET NULL"), index=True)
    run_id: Mapped[int | None] = mapped_column(sa.ForeignKey("runs.id", ondelete="SET NULL"), unique=True)
    state: Mapped[str | None] = mapped_column(sa.String(16))
    value: Mapped[float | None]
    message: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    told_at: Mapped[dt.datetime | None]
