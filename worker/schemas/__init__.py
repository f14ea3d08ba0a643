"""Pydantic models the service layer takes in and hands out.

Read models (``*Read``, ``*Summary``, ``LeaderboardRow`` ...) are what the web app renders; the
services never return ORM objects, so a page can cache them and no lazy load hits the database
after the session closed. Input models (``GridSpec``, ``EnsembleMember``, ``PseudoParams``) are
validated once at the service boundary.

One module per area (``_records``: the experiment records, ``_admin``: tokens, uploads and
weights); import every name from this package.
"""

from worker.schemas._admin import ApiTokenRead, CachedWeightsRead, UploadRead
from worker.schemas._notifications import (
    NotificationDeliveryRead,
    NotificationHookRead,
    NotificationSendReport,
)
from worker.schemas._records import (
    AuditEventRead,
    ConfigChange,
    CorrelationPoint,
    CorrelationReport,
    DatasetRead,
    EnsembleMember,
    EnsembleRead,
    EpochMetricRead,
    ExpansionRead,
    ExperimentRead,
    GridAxis,
    GridSpec,
    GroupRead,
    JobRead,
    LeaderboardRow,
    LogLine,
    MemberRead,
    MetricCorrelation,
    MetricStat,
    PseudoParams,
    PseudoRoundRead,
    QueueSummary,
    RowKind,
    RunRead,
    RunSummary,
    SubmissionRead,
    WorkerRead,
)
from worker.schemas._storage import (
    DeletePlan,
    Dependant,
    DiskUseBy,
    DiskUseReport,
    DiskUseRow,
    GcItem,
    GcPlan,
    ObjectStorage,
    StoredObject,
)
from worker.schemas._sweeps import (
    ExpansionPlan,
    SearchParam,
    SweepPoint,
    SweepRead,
    SweepSpec,
    SweepTrialRead,
    SweepView,
)

__all__ = [
    "RowKind",
    "MemberRead",
    "DatasetRead",
    "GridAxis",
    "GridSpec",
    "ExpansionRead",
    "MetricStat",
    "GroupRead",
    "ExperimentRead",
    "RunSummary",
    "RunRead",
    "EpochMetricRead",
    "LogLine",
    "QueueSummary",
    "ConfigChange",
    "LeaderboardRow",
    "CorrelationPoint",
    "MetricCorrelation",
    "CorrelationReport",
    "SubmissionRead",
    "EnsembleMember",
    "EnsembleRead",
    "PseudoParams",
    "PseudoRoundRead",
    "WorkerRead",
    "JobRead",
    "AuditEventRead",
    "ApiTokenRead",
    "UploadRead",
    "CachedWeightsRead",
    "DiskUseBy",
    "DiskUseRow",
    "DiskUseReport",
    "ObjectStorage",
    "StoredObject",
    "Dependant",
    "DeletePlan",
    "GcItem",
    "GcPlan",
    "NotificationHookRead",
    "NotificationDeliveryRead",
    "NotificationSendReport",
    "ExpansionPlan",
    "SearchParam",
    "SweepSpec",
    "SweepTrialRead",
    "SweepRead",
    "SweepPoint",
    "SweepView",
]
