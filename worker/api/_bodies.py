"""Request bodies and answers of the API that are not a service's read model.

Bodies refuse unknown fields, so a misspelt option is an error rather than a default. Answers of a
request that queued something carry ``queue_problem``: None when the queue messages went out, else
why not (nothing is lost: the reaper publishes queued work once the queue can be reached).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.db.models import RunStatus
from worker.schemas import EnsembleMember, EnsembleRead, ExperimentRead, JobRead, SubmissionRead

__all__ = [
    "SubmitExperiment",
    "ExperimentSubmitted",
    "RunControl",
    "Predict",
    "JobQueued",
    "CreateSubmission",
    "SubmissionQueued",
    "PublicScore",
    "CreateEnsemble",
    "EnsembleSaved",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitExperiment(_Body):
    """An experiment: a config expanded into folds x seeds (or a grid), queued after the commit."""

    config: dict[str, Any] | str = Field(description="The experiment config: a mapping, or YAML/JSON text.")
    name: str | None = Field(default=None, description="The experiment's name; default the config's name.")
    n_folds: int = Field(default=1, description="1, or k for k-fold cross-validation (one run per fold).")
    seeds: list[int] = Field(default_factory=lambda: [0], description="One run per seed (per fold).")
    grid: dict[str, Any] | None = Field(default=None, description="An ablation axis: {'axis': ..., 'values': [...]}.")
    priority: int = Field(default=0, description="Queue priority, 0 (lowest) to 9.")
    tags: list[str] = Field(default_factory=list)
    note: str = ""
    dataset_id: int | None = Field(default=None, description="The registered dataset the runs train on.")


class _Queued(BaseModel):
    queue_problem: str | None = Field(default=None, description="Why the queue messages did not go out, if so.")


class ExperimentSubmitted(_Queued):
    """The experiment with its groups and queued runs."""

    experiment: ExperimentRead


class RunControl(_Queued):
    """A run's status after a cancel or requeue (``running`` until its worker stops a cancelled run)."""

    run_id: int
    status: RunStatus


class Predict(_Body):
    """A queued prediction of runs' or groups' images (a ``predict`` job)."""

    run_ids: list[int] = Field(default_factory=list)
    group_ids: list[int] = Field(default_factory=list)
    split: Literal["test", "val"] = "test"
    tta: dict[str, Any] | None = Field(default=None, description="A TTA policy; None: no test-time augmentation.")
    priority: int = 0


class JobQueued(_Queued):
    """The job that was queued."""

    job: JobRead


class CreateSubmission(_Body):
    """A submission file made from the stored test predictions of exactly one run, group or ensemble."""

    run_id: int | None = None
    group_id: int | None = None
    ensemble_id: int | None = None
    format: str = Field(default="csv_rle", description="csv_rle or class_map.")
    note: str = ""


class SubmissionQueued(_Queued):
    """The submission and the job writing its file (the submission takes the job's status)."""

    submission: SubmissionRead
    job: JobRead


class PublicScore(_Body):
    """The public leaderboard score read off the competition site."""

    score: float | str = Field(description="A fraction from 0 to 1, e.g. 0.8123.")
    note: str | None = Field(default=None, description="A note about the score, e.g. 'public LB, 30% of the test "
                                                       "set'; an empty one clears it.")


class CreateEnsemble(_Body):
    """An ensemble of runs, groups or ensembles, scored again on the server and saved; its test prediction queued."""

    name: str
    members: list[EnsembleMember] = Field(min_length=1)
    method: str = Field(default="soft", description="soft, geometric, majority or weighted.")
    weight_search: str = Field(default="none", description="How a weighted ensemble finds its weights.")
    tta: dict[str, Any] | None = None
    note: str = ""


class EnsembleSaved(_Queued):
    """The saved ensemble, the job its test prediction needs (if any) and what happens next."""

    ensemble: EnsembleRead
    job: JobRead | None
    next_step: str
