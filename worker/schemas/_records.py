"""Read and input models of the experiment records: members, datasets, experiments, runs, groups,
leaderboard rows, submissions, ensembles, pseudo-label rounds, workers, jobs and audit events.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
from typing import Any

from pydantic import Field, field_validator, model_validator

from segcore.config import TaskType
from worker.db.models import (
    EnsembleMethod,
    ExpansionKind,
    GroupKind,
    JobKind,
    LogLevel,
    MemberRole,
    RunStatus,
    SourceKind,
    WorkerStatus,
)
from worker.schemas._base import _Input, _Read


class RowKind(str, enum.Enum):
    """What a leaderboard row stands for."""

    RUN = "run"
    GROUP = "group"
    ENSEMBLE = "ensemble"
    STUDENT = "student"


# ------------------------------------------------------------------ members, datasets


class MemberRead(_Read):
    id: int
    name: str
    email: str | None
    role: MemberRole
    created_at: dt.datetime
    has_password: bool = False
    oidc_linked: bool = False


class DatasetRead(_Read):
    id: int
    name: str
    source: dict[str, Any]
    classes: list[str]
    task: TaskType
    ignore_index: int
    background: int | None = None
    fingerprint: str | None
    report: dict[str, Any]
    statistics: dict[str, Any] | None
    created_by: int | None
    created_at: dt.datetime


# ------------------------------------------------------------------ experiments, groups, runs


class GridAxis(_Input):
    """One axis of an ablation grid: a dotted config path and the values it takes."""

    path: str = Field(min_length=1, description="Dotted config path, e.g. 'loss' or 'model.encoder'.")
    values: list[Any] = Field(min_length=1)

    @field_validator("path")
    @classmethod
    def _dotted(cls, v: str) -> str:
        parts = v.split(".")
        if any(not p.strip() for p in parts):
            raise ValueError(f"grid axis {v!r} is not a dotted config path like 'augmentation.preset'")
        return v


def _one_axis(data: Any) -> Any:
    """``{"axis": path, "values": [...]}`` (one axis, as stored expansions and ``--grid`` write it) as ``axes``."""
    if isinstance(data, dict) and "axes" not in data and ("axis" in data or "values" in data):
        rest = {k: v for k, v in data.items() if k not in ("axis", "values")}
        return {**rest, "axes": [{"path": data.get("axis"), "values": data.get("values")}]}
    return data


class GridSpec(_Input):
    """An ablation grid: one or more axes, and one group of runs per combination of their values (the
    full grid, first axis slowest).

    Example: ``GridSpec(axes=[{"path": "loss", "values": ["ce", "dice"]},
    {"path": "model.encoder", "values": ["resnet18", "resnet34"]}])`` (4 groups);
    ``GridSpec(axis="augmentation.preset", values=["basic", "strong"])`` is the one-axis form.
    """

    axes: list[GridAxis] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _from_one_axis(cls, data: Any) -> Any:
        return _one_axis(data)

    @field_validator("axes")
    @classmethod
    def _distinct(cls, v: list[GridAxis]) -> list[GridAxis]:
        paths = [a.path for a in v]
        if len(set(paths)) != len(paths):
            raise ValueError(f"grid axes must differ, got {paths}")
        return v

    @property
    def axis(self) -> str:
        """The axis path, or the paths joined by `` x `` (for messages and labels)."""
        return " x ".join(a.path for a in self.axes)

    @property
    def combinations(self) -> list[dict[str, Any]]:
        """Every combination of the axes' values as ``{path: value}``, first axis slowest."""
        return [dict(zip([a.path for a in self.axes], combo, strict=True))
                for combo in itertools.product(*(a.values for a in self.axes))]

    @property
    def values(self) -> list[Any]:
        """One entry per group: the values of a single axis, else the combinations."""
        return list(self.axes[0].values) if len(self.axes) == 1 else self.combinations


class ExpansionRead(_Read):
    kind: ExpansionKind
    n_folds: int
    seeds: list[int]
    axis: str | None = None
    values: list[Any] | None = None
    axes: list[GridAxis] = Field(default_factory=list, description="The grid's axes (empty without a grid).")

    @model_validator(mode="before")
    @classmethod
    def _axes_of_one_axis_grids(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("axes") and data.get("axis") and data.get("values"):
            return {**data, "axes": [{"path": data["axis"], "values": data["values"]}]}
        return data


class MetricStat(_Read):
    """Mean and standard deviation of one metric over a group's finished runs."""

    mean: float | None
    std: float | None
    n: int


class GroupRead(_Read):
    id: int
    experiment_id: int
    kind: GroupKind
    label: str
    axis_value: Any = None
    dataset_id: int | None
    monitor_metric: str
    oof_store: str | None
    test_store: str | None
    oof_metrics: dict[str, Any] | None
    oof_score: float | None
    run_ids: list[int] = Field(default_factory=list)
    status_counts: dict[str, int] = Field(default_factory=dict)
    metrics: dict[str, MetricStat] = Field(default_factory=dict)
    created_at: dt.datetime


class ExperimentRead(_Read):
    id: int
    name: str
    config: dict[str, Any]
    owner_id: int | None
    dataset_id: int | None
    expansion: ExpansionRead
    priority: int
    tags: list[str]
    note: str
    created_at: dt.datetime
    groups: list[GroupRead] = Field(default_factory=list)
    run_ids: list[int] = Field(default_factory=list, description="Runs to publish to the queue after commit.")


class RunSummary(_Read):
    """A run as a queue or list row."""

    id: int
    name: str
    experiment_id: int
    group_id: int | None
    dataset_id: int | None
    status: RunStatus
    priority: int
    cancel_requested: bool
    attempt: int
    lost_count: int
    arch: str
    encoder: str
    fold: int | None
    seed: int
    worker_name: str | None
    device: str | None
    current_epoch: int | None
    total_epochs: int | None
    images_per_s: float | None
    error_message: str | None = None
    eta_s: float | None
    epoch_progress: float | None = None
    monitor_metric: str
    monitor_value: float | None
    owner_id: int | None
    tags: list[str]
    queued_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    created_at: dt.datetime


class RunRead(RunSummary):
    """A run with everything its detail page shows."""

    config: dict[str, Any]
    best_metrics: dict[str, Any] | None
    error_message: str | None
    artifact_dir: str | None
    checkpoint_dir: str | None
    val_store: str | None
    test_store: str | None
    dataset_fingerprint: str | None
    parent_run_id: int | None
    pseudo_round_id: int | None
    claimed_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    lease_expires_at: dt.datetime | None
    published_at: dt.datetime | None


class EpochMetricRead(_Read):
    epoch: int
    train_loss: float | None
    lr: float | None
    images_per_s: float | None
    val: dict[str, Any] | None
    created_at: dt.datetime
    resources: dict[str, Any] | None = None


class LogLine(_Read):
    id: int
    ts: dt.datetime
    level: LogLevel
    message: str


class QueueSummary(_Read):
    """Counts of runs and jobs by status, and the runs that are queued or running now."""

    runs_by_status: dict[str, int]
    jobs_by_status: dict[str, int]
    running: list[RunSummary]
    queued: list[RunSummary]
    workers_online: int


class ConfigChange(_Read):
    """One difference between two configs: a dotted path and the two values (None when absent)."""

    path: str
    old: Any = None
    new: Any = None


# ------------------------------------------------------------------ leaderboard


class LeaderboardRow(_Read):
    """A run, fold/seed group, ensemble or pseudo-label student in one comparable shape.

    ``metrics`` holds every validation metric kind (a group: the mean over its finished runs,
    ``metrics_std`` the standard deviation); ``val_score`` is the row's monitor value (a group's
    out-of-fold score when it has one), ``gap = public_score - val_score``.
    ``public_up_val_down`` flags a row whose public score rose while its validation score fell
    compared with its reference (the parent run, the pseudo-label teacher, else the previous
    scored submission on the dataset), named in ``flag_reference``.
    """

    kind: RowKind
    id: int
    name: str
    dataset_id: int | None
    owner_id: int | None
    arch: str | None = None
    encoder: str | None = None
    tags: list[str] = Field(default_factory=list)
    monitor_metric: str
    metrics: dict[str, float | None]
    metrics_std: dict[str, float | None] = Field(default_factory=dict)
    n_runs: int = 1
    oof_score: float | None = None
    val_score: float | None
    public_score: float | None = None
    n_submissions: int = 0
    gap: float | None = None
    public_up_val_down: bool = False
    flag_reference: str | None = None
    experiment_id: int | None = None
    group_id: int | None = None
    parent: str | None = Field(default=None, description="Lineage: 'run:12', 'group:3', 'ensemble:2'.")
    validated_on: str | None = Field(
        default=None,
        description="Which images the validation score is on: 'fold 2 of 3', 'hold-out', 'predefined', "
        "'out-of-fold' (a group's every image), 'mean of its runs' (a group without OOF), 'members\' images'.",
    )
    created_at: dt.datetime


class CorrelationPoint(_Read):
    kind: RowKind
    id: int
    name: str
    val: float
    public: float


class MetricCorrelation(_Read):
    """How well one validation metric kind tracks the public score (None below 3 points)."""

    metric: str
    n: int
    pearson: float | None
    pearson_p: float | None
    spearman: float | None
    spearman_p: float | None
    slope: float | None
    intercept: float | None
    points: list[CorrelationPoint]


class CorrelationReport(_Read):
    dataset_id: int
    metrics: dict[str, MetricCorrelation]


# ------------------------------------------------------------------ submissions, ensembles, pseudo


class SubmissionRead(_Read):
    id: int
    run_id: int | None
    group_id: int | None
    ensemble_id: int | None
    dataset_id: int | None
    file_path: str | None
    format: str
    tta: dict[str, Any] | None
    public_score: float | None
    score_entered_by: int | None
    score_entered_at: dt.datetime | None
    note: str
    score_note: str | None = None
    status: RunStatus
    error_message: str | None
    created_by: int | None
    created_at: dt.datetime


class EnsembleMember(_Input):
    """A member of an ensemble: a run, a group (its OOF/test stores) or another ensemble."""

    kind: SourceKind
    id: int = Field(ge=1)
    weight: float = Field(default=1.0, gt=0)


class EnsembleRead(_Read):
    id: int
    name: str
    method: EnsembleMethod
    members: list[EnsembleMember]
    tta: dict[str, Any] | None
    dataset_id: int | None
    monitor_metric: str
    val_score: float | None
    val_metrics: dict[str, Any] | None
    member_scores: list[Any] | None
    status: RunStatus
    error_message: str | None
    test_store: str | None
    owner_id: int | None
    note: str
    created_at: dt.datetime


class PseudoParams(_Input):
    """Thresholds of a pseudo-label round."""

    pixel_threshold: float = Field(default=0.9, gt=0, le=1, description="Min max-probability of a kept pixel.")
    image_threshold: float = Field(
        default=0.8, ge=0, le=1, description="A foreground pixel is uncertain below this max-probability."
    )
    max_low_confidence: float = Field(
        default=0.1, ge=0, le=1,
        description="Drop an image when more than this share of its foreground pixels is uncertain.",
    )
    limit: int | None = Field(default=None, ge=1, description="Keep at most this many images.")
    per_class: dict[str, float] = Field(default_factory=dict, description="Class name -> its own pixel threshold.")


class PseudoRoundRead(_Read):
    id: int
    name: str
    teacher_kind: SourceKind
    teacher_id: int
    params: dict[str, Any]
    report: dict[str, Any] | None
    source_dataset_id: int | None
    dataset_id: int | None
    parent_round_id: int | None
    status: RunStatus
    error_message: str | None
    created_by: int | None
    created_at: dt.datetime
    student_run_ids: list[int] = Field(default_factory=list)
    best_student_val: float | None = Field(default=None, description=(
        "The best student's validation score at the teacher's level: its groups' out-of-fold score when the "
        "teacher is a group, else its best run's."))
    best_student_public: float | None = None
    student_validated_on: str | None = Field(default=None, description="The images best_student_val is on.")
    teacher_validated_on: str | None = Field(default=None, description="The images the teacher's score is on.")
    comparable_with_teacher: bool = Field(default=False, description=(
        "True when best_student_val is on the teacher's validation images, so the two may be compared."))


# ------------------------------------------------------------------ workers, jobs, audit


class WorkerRead(_Read):
    id: int
    name: str
    hostname: str
    devices: list[Any]
    current_run_id: int | None
    status: WorkerStatus
    started_at: dt.datetime
    last_seen_at: dt.datetime


class JobRead(_Read):
    id: int
    kind: JobKind
    target: dict[str, Any]
    status: RunStatus
    priority: int
    params: dict[str, Any]
    result: dict[str, Any] | None
    error_message: str | None
    cancel_requested: bool
    attempt: int
    lost_count: int
    worker_name: str | None
    queued_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    created_by: int | None
    created_at: dt.datetime


class AuditEventRead(_Read):
    id: int
    actor_id: int | None
    action: str
    object_kind: str
    object_id: int | None
    detail: dict[str, Any]
    ts: dt.datetime
