"""The SegBoard tables as typed SQLAlchemy 2 declarative models.

The database is the source of truth for every run's state (see ``docs/data-model.md``). JSON
columns hold pydantic dumps (``ExperimentConfig``, segcore ``DatasetSource``, metric dicts); the
service layer validates them on the way in and turns rows into read models on the way out.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from segcore.config import TaskType
from worker.db._accounts import ApiToken, LoginMethod, LoginSession, Upload, UploadStatus
from worker.db._notifications import DeliveryStatus, NotificationDelivery, NotificationHook, PayloadFormat
from worker.db._sweeps import Sweep, SweepStatus, SweepTrial
from worker.db.base import Base, MetricsJSON, enum_column_type, utcnow

__all__ = [
    "QueueState",
    "MemberRole",
    "RunStatus",
    "JobStatus",
    "JobKind",
    "GroupKind",
    "ExpansionKind",
    "EnsembleMethod",
    "SourceKind",
    "WorkerStatus",
    "LogLevel",
    "METRIC_KINDS",
    "Member",
    "Dataset",
    "Experiment",
    "RunGroup",
    "Run",
    "EpochMetric",
    "RunLog",
    "Submission",
    "Ensemble",
    "PseudoRound",
    "WorkerNode",
    "Job",
    "AuditEvent",
    "LoginMethod",
    "UploadStatus",
    "LoginSession",
    "ApiToken",
    "Upload",
    "PayloadFormat",
    "DeliveryStatus",
    "NotificationHook",
    "NotificationDelivery",
    "SweepStatus",
    "Sweep",
    "SweepTrial",
]

# The validation metric kinds every leaderboard row has a column for (segcore.catalog.METRICS minus loss).
METRIC_KINDS: tuple[str, ...] = ("miou", "miou_per_image", "dice", "dice_per_image", "pixel_accuracy")


class MemberRole(str, enum.Enum):
    """What a team member may do (enforced by the access-control layer)."""

    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


class RunStatus(str, enum.Enum):
    """Life cycle of a run or job: queued -> running -> succeeded | failed | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Whether the run has finished (for good or not)."""
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


# Jobs go through the same states as runs.
JobStatus = RunStatus


class JobKind(str, enum.Enum):
    """Non-training work the queue runs."""

    PREDICT = "predict"
    EVALUATE = "evaluate"
    ENSEMBLE = "ensemble"
    PSEUDO = "pseudo"
    DATASET_IMPORT = "dataset_import"
    SUBMISSION = "submission"


class ExpansionKind(str, enum.Enum):
    """How an experiment expands into runs."""

    SINGLE = "single"
    FOLDS_SEEDS = "folds_seeds"
    GRID = "grid"


class GroupKind(str, enum.Enum):
    """A group is one training repeated over folds/seeds, or one value of an ablation grid."""

    SINGLE = "single"
    FOLDS_SEEDS = "folds_seeds"
    GRID_VALUE = "grid_value"


class EnsembleMethod(str, enum.Enum):
    """How member probabilities are combined."""

    SOFT = "soft"
    GEOMETRIC = "geometric"
    MAJORITY = "majority"
    WEIGHTED = "weighted"


class SourceKind(str, enum.Enum):
    """What a model reference (ensemble member, pseudo-label teacher) points at."""

    RUN = "run"
    GROUP = "group"
    ENSEMBLE = "ensemble"


class WorkerStatus(str, enum.Enum):
    """A worker node as last seen."""

    IDLE = "idle"
    BUSY = "busy"
    OFFLINE = "offline"


class LogLevel(str, enum.Enum):
    """Severity of a run log line."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


def _fk(target: str, *, ondelete: str | None = None) -> sa.ForeignKey:
    return sa.ForeignKey(target, ondelete=ondelete)


class Member(Base):
    """A team member: the acting person of every write."""

    __tablename__ = "members"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100), unique=True)
    email: Mapped[str | None] = mapped_column(sa.String(254), unique=True)
    role: Mapped[MemberRole] = mapped_column(enum_column_type(MemberRole), default=MemberRole.MEMBER)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # argon2 hash; None: no password (an OIDC identity, or a member who has not logged in yet)
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    # a unique index, not a constraint: adding it leaves the table in place on SQLite too
    oidc_subject: Mapped[str | None] = mapped_column(sa.String(255), unique=True, index=True)
    # logins (and OIDC tokens) issued before this are revoked
    credentials_changed_at: Mapped[dt.datetime | None]

    @property
    def has_password(self) -> bool:
        """Whether the member can log in with a password."""
        return self.password_hash is not None

    @property
    def oidc_linked(self) -> bool:
        """Whether an OpenID Connect identity is linked to the member."""
        return self.oidc_subject is not None


class Dataset(Base):
    """A registered, validated dataset; configs refer to it by its source location."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    source: Mapped[dict[str, Any]]
    classes: Mapped[list[Any]]
    task: Mapped[TaskType] = mapped_column(enum_column_type(TaskType), default=TaskType.MULTICLASS)
    ignore_index: Mapped[int] = mapped_column(default=255)
    background: Mapped[int | None]  # the background class index, or None: no class is background
    fingerprint: Mapped[str | None] = mapped_column(sa.String(128))
    report: Mapped[dict[str, Any]]
    statistics: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON())
    created_by: Mapped[int | None] = mapped_column(_fk("members.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Experiment(Base):
    """A named config and its expansion into runs (folds x seeds, or an ablation grid)."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True, index=True)
    config: Mapped[dict[str, Any]]
    owner_id: Mapped[int | None] = mapped_column(_fk("members.id", ondelete="SET NULL"), index=True)
    dataset_id: Mapped[int | None] = mapped_column(_fk("datasets.id", ondelete="SET NULL"), index=True)
    # {kind: folds_seeds|grid|single, n_folds, seeds, axis, values}
    expansion: Mapped[dict[str, Any]]
    priority: Mapped[int] = mapped_column(default=0)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    note: Mapped[str] = mapped_column(sa.Text, default="")
    pinned: Mapped[bool] = mapped_column(default=False)  # no retention policy touches its runs' files
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    groups: Mapped[list[RunGroup]] = relationship(back_populates="experiment", order_by="RunGroup.id")


class RunGroup(Base):
    """k folds x m seeds of one config (or one ablation value): scores and ensembles like one model.

    ``oof_store`` is the union of the fold runs' validation predictions, ``test_store`` the mean
    of the members' test predictions; ``oof_metrics``/``oof_score`` are computed from the former.
    """

    __tablename__ = "run_groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(_fk("experiments.id", ondelete="CASCADE"), index=True)
    kind: Mapped[GroupKind] = mapped_column(enum_column_type(GroupKind))
    label: Mapped[str] = mapped_column(sa.String(300))
    axis_value: Mapped[Any | None] = mapped_column(sa.JSON())
    dataset_id: Mapped[int | None] = mapped_column(_fk("datasets.id", ondelete="SET NULL"), index=True)
    owner_id: Mapped[int | None] = mapped_column(_fk("members.id", ondelete="SET NULL"))
    monitor_metric: Mapped[str] = mapped_column(sa.String(32), default="miou")
    oof_store: Mapped[str | None] = mapped_column(sa.String(1024))
    test_store: Mapped[str | None] = mapped_column(sa.String(1024))
    oof_metrics: Mapped[dict[str, Any] | None] = mapped_column(MetricsJSON)
    oof_score: Mapped[float | None]
    aggregated_metrics: Mapped[dict[str, Any] | None] = mapped_column(MetricsJSON)
    pinned: Mapped[bool] = mapped_column(default=False)  # no retention policy touches its (or its runs') files
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    experiment: Mapped[Experiment] = relationship(back_populates="groups")


class QueueState:
    """The queue state a run and a job share; only :mod:`worker.services.lifecycle` changes it.

    A claim is ``(worker_name, claimed_at)``; the holder renews ``lease_expires_at`` by heartbeat.
    """

    status: Mapped[RunStatus] = mapped_column(enum_column_type(RunStatus), default=RunStatus.QUEUED)
    priority: Mapped[int] = mapped_column(default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    # every time it went back to the queue: manual requeue, reaper requeue, shutdown release
    attempt: Mapped[int] = mapped_column(default=0)
    # times its worker died while holding it since a person last requeued it (the reaper's rule)
    lost_count: Mapped[int] = mapped_column(default=0)
    worker_name: Mapped[str | None] = mapped_column(sa.String(200))
    device: Mapped[str | None] = mapped_column(sa.String(64))
    claimed_at: Mapped[dt.datetime | None]
    lease_expires_at: Mapped[dt.datetime | None]
    heartbeat_at: Mapped[dt.datetime | None]
    published_at: Mapped[dt.datetime | None]
    queued_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]


class Run(QueueState, Base):
    """One training: one config, one fold, one seed. Its row is the source of truth of its state."""

    __tablename__ = "runs"
    __table_args__ = (
        # the queue: next queued run by priority, then age; the reaper: expired leases
        sa.Index("ix_runs_queue", "status", "priority", "queued_at"),
        sa.Index("ix_runs_lease", "status", "lease_expires_at"),
        # the leaderboard: finished runs of a dataset sorted by their monitor value
        sa.Index("ix_runs_leaderboard", "dataset_id", "status", "monitor_value"),
        sa.Index("ix_runs_status_monitor", "status", "monitor_value"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(_fk("experiments.id", ondelete="CASCADE"), index=True)
    group_id: Mapped[int | None] = mapped_column(_fk("run_groups.id", ondelete="SET NULL"), index=True)
    dataset_id: Mapped[int | None] = mapped_column(_fk("datasets.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(sa.String(300))
    config: Mapped[dict[str, Any]]
    arch: Mapped[str] = mapped_column(sa.String(64), index=True)
    encoder: Mapped[str] = mapped_column(sa.String(128))
    fold: Mapped[int | None]
    seed: Mapped[int] = mapped_column(default=0)

    current_epoch: Mapped[int | None]
    total_epochs: Mapped[int | None]
    images_per_s: Mapped[float | None]
    eta_s: Mapped[float | None]
    epoch_progress: Mapped[float | None]  # share of the current epoch's steps done (0-1)
    # {"miou": .., "miou_per_image": .., "dice": .., ..., "per_class": {"miou": [...], ...}, "epoch": n}
    best_metrics: Mapped[dict[str, Any] | None] = mapped_column(MetricsJSON)
    monitor_metric: Mapped[str] = mapped_column(sa.String(32), default="miou")
    monitor_value: Mapped[float | None]
    error_message: Mapped[str | None] = mapped_column(sa.Text)

    artifact_dir: Mapped[str | None] = mapped_column(sa.String(1024))
    checkpoint_dir: Mapped[str | None] = mapped_column(sa.String(1024))
    val_store: Mapped[str | None] = mapped_column(sa.String(1024))
    test_store: Mapped[str | None] = mapped_column(sa.String(1024))
    dataset_fingerprint: Mapped[str | None] = mapped_column(sa.String(128))

    parent_run_id: Mapped[int | None] = mapped_column(_fk("runs.id", ondelete="SET NULL"), index=True)
    pseudo_round_id: Mapped[int | None] = mapped_column(_fk("pseudo_rounds.id", ondelete="SET NULL"), index=True)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    owner_id: Mapped[int | None] = mapped_column(_fk("members.id", ondelete="SET NULL"), index=True)
    pinned: Mapped[bool] = mapped_column(default=False)  # no retention policy touches its files
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class EpochMetric(Base):
    """One epoch of a run: training loss, lr, throughput and the validation metrics."""

    __tablename__ = "epoch_metrics"
    __table_args__ = (sa.UniqueConstraint("run_id", "epoch"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(_fk("runs.id", ondelete="CASCADE"))
    epoch: Mapped[int]
    train_loss: Mapped[float | None]
    lr: Mapped[float | None]
    images_per_s: Mapped[float | None]
    val: Mapped[dict[str, Any] | None] = mapped_column(MetricsJSON)
    resources: Mapped[dict[str, Any] | None] = mapped_column(MetricsJSON)  # CPU, memory, GPU at the epoch's end
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class RunLog(Base):
    """A log line of a run (or of a job, with ``job_id``), read back in id order."""

    __tablename__ = "run_logs"
    __table_args__ = (
        sa.Index("ix_run_logs_run", "run_id", "id"),
        sa.Index("ix_run_logs_job", "job_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(_fk("runs.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(_fk("jobs.id", ondelete="CASCADE"))
    ts: Mapped[dt.datetime] = mapped_column(default=utcnow)
    level: Mapped[LogLevel] = mapped_column(enum_column_type(LogLevel), default=LogLevel.INFO)
    message: Mapped[str] = mapped_column(sa.Text)


class Submission(Base):
    """A submission file of a run, group or ensemble, and the public score a member entered for it."""

    __tablename__ = "submissions"
    __table_args__ = (
        sa.CheckConstraint(
            "(CASE WHEN run_id IS NULL THEN 0 ELSE 1 END)"
            " + (CASE WHEN group_id IS NULL THEN 0 ELSE 1 END)"
            " + (CASE WHEN ensemble_id IS NULL THEN 0 ELSE 1 END) = 1",
            name="one_source",
        ),
        sa.Index("ix_submissions_dataset_scored", "dataset_id", "public_score"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(_fk("runs.id", ondelete="CASCADE"), index=True)
    group_id: Mapped[int | None] = mapped_column(_fk("run_groups.id", ondelete="CASCADE"), index=True)
    ensemble_id: Mapped[int | None] = mapped_column(_fk("ensembles.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[int | None] = mapped_column(_fk("datasets.id", ondelete="SET NULL"))
    file_path: Mapped[str | None] = mapped_column(sa.String(1024))
    format: Mapped[str] = mapped_column(sa.String(32), default="csv_rle")
    tta: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON())
    public_score: Mapped[float | None]
    score_entered_by: Mapped[int | None] = mapped_column(_fk("members.id", ondelete="SET NULL"))
    score_entered_at: Mapped[dt.datetime | None]
    note: Mapped[str] = mapped_column(sa.Text, default="")
    score_note: Mapped[str | None] = mapped_column(sa.Text)  # entered with the public score
    # derived from its submission job by the lifecycle module; succeeded for a file recorded directly
    status: Mapped[RunStatus] = mapped_column(enum_column_type(RunStatus), default=RunStatus.SUCCEEDED)
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    created_by: Mapped[int | None] = mapped_column(_fk("members.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Ensemble(Base):
    """A saved combination of runs, groups or ensembles; a leaderboard row with its lineage."""

    __tablename__ = "ensembles"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    method: Mapped[EnsembleMethod] = mapped_column(enum_column_type(EnsembleMethod))
    # [{"kind": "run"|"group"|"ensemble", "id": int, "weight": float}]
    members: Mapped[list[Any]]
    tta: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON())
    dataset_id: Mapped[int | None] = mapped_column(_fk("datasets.id", ondelete="SET NULL"), index=True)
    monitor_metric: Mapped[str] = mapped_column(sa.String(32), default="miou")
    val_score: Mapped[float | None]
    val_metrics: Mapped[dict[str, Any] | None] = mapped_column(MetricsJSON)
    member_scores: Mapped[list[Any] | None] = mapped_column(sa.JSON())
    # derived from its jobs by the lifecycle module (succeeded when nothing was queued for it)
    status: Mapped[RunStatus] = mapped_column(enum_column_type(RunStatus), default=RunStatus.SUCCEEDED)
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    test_store: Mapped[str | None] = mapped_column(sa.String(1024))
    owner_id: Mapped[int | None] = mapped_column(_fk("members.id", ondelete="SET NULL"))
    note: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PseudoRound(Base):
    """One pseudo-labelling round: a teacher, thresholds, the produced dataset and its student runs."""

    __tablename__ = "pseudo_rounds"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    teacher_kind: Mapped[SourceKind] = mapped_column(enum_column_type(SourceKind))
    teacher_id: Mapped[int]
    # {"pixel_threshold", "image_threshold", "max_low_confidence", "limit", "per_class": {...}}
    params: Mapped[dict[str, Any]]
    report: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON())
    source_dataset_id: Mapped[int | None] = mapped_column(_fk("datasets.id", ondelete="SET NULL"))
    dataset_id: Mapped[int | None] = mapped_column(_fk("datasets.id", ondelete="SET NULL"))
    parent_round_id: Mapped[int | None] = mapped_column(_fk("pseudo_rounds.id", ondelete="SET NULL"))
    # derived from its pseudo job by the lifecycle module
    status: Mapped[RunStatus] = mapped_column(enum_column_type(RunStatus), default=RunStatus.QUEUED)
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    created_by: Mapped[int | None] = mapped_column(_fk("members.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WorkerNode(Base):
    """A worker process as it last reported itself."""

    __tablename__ = "worker_nodes"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    hostname: Mapped[str] = mapped_column(sa.String(255))
    devices: Mapped[list[Any]] = mapped_column(default=list)
    current_run_id: Mapped[int | None] = mapped_column(_fk("runs.id", ondelete="SET NULL"))
    status: Mapped[WorkerStatus] = mapped_column(enum_column_type(WorkerStatus), default=WorkerStatus.IDLE)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Job(QueueState, Base):
    """Non-training work (predict, evaluate, ensemble, pseudo, dataset import, submission).

    Claimed like a run: one atomic update queued -> running with a lease renewed by heartbeat.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        sa.Index("ix_jobs_queue", "status", "priority", "queued_at"),
        sa.Index("ix_jobs_lease", "status", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[JobKind] = mapped_column(enum_column_type(JobKind))
    # e.g. {"run_ids": [..], "ensemble_id": 3}
    target: Mapped[dict[str, Any]]
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON())
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    created_by: Mapped[int | None] = mapped_column(_fk("members.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """Who did what to which object, written by every service write."""

    __tablename__ = "audit_events"
    __table_args__ = (sa.Index("ix_audit_events_object", "object_kind", "object_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    actor_id: Mapped[int | None] = mapped_column(_fk("members.id", ondelete="SET NULL"), index=True)
    action: Mapped[str] = mapped_column(sa.String(64))
    object_kind: Mapped[str] = mapped_column(sa.String(32))
    object_id: Mapped[int | None]
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ts: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
