"""``/experiments``, ``/datasets`` and ``/me``: submit experiments, read them, list datasets, who am I."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from worker.api._bodies import ExperimentSubmitted, SubmitExperiment
from worker.api._context import Caller, caller
from worker.schemas import DatasetRead, ExperimentRead, MemberRead
from worker.services import datasets, experiments, members
from worker.services.outbox import Queued

__all__ = ["router"]

router = APIRouter()

Me = Annotated[Caller, Depends(caller)]


@router.get("/me", response_model=MemberRead, tags=["members"], summary="The member of this token")
def who_am_i(me: Me) -> MemberRead:
    """The member the API token acts as (name, role)."""
    return me.run(lambda s, actor: members.get_member(s, member_id=actor))


@router.get("/datasets", response_model=list[DatasetRead], tags=["datasets"], summary="List datasets")
def list_datasets(me: Me) -> list[DatasetRead]:
    """Every registered dataset, by name."""
    return me.run(lambda s, _: datasets.list_datasets(s))


@router.post("/experiments", response_model=ExperimentSubmitted, status_code=201, tags=["experiments"],
             summary="Submit an experiment")
def submit(body: SubmitExperiment, me: Me) -> ExperimentSubmitted:
    """Validate a config (the same submit-time check as the web form) and queue its runs after the commit.

    A refusal is 422 with one message per field in ``fields``; a viewer's submission is 403.
    """
    roots = me.built.roots

    def create(s: Session, actor: int) -> ExperimentRead:
        return experiments.create_experiment(
            s, actor=actor, name=body.name, config=body.config, n_folds=body.n_folds, seeds=body.seeds,
            grid=body.grid, priority=body.priority, tags=body.tags, note=body.note, dataset_id=body.dataset_id,
            roots=roots)

    exp, problem = me.submit(create, queued=lambda e: Queued.of(run_ids=e.run_ids))
    return ExperimentSubmitted(experiment=exp, queue_problem=problem)


@router.get("/experiments/{experiment_id}", response_model=ExperimentRead, tags=["experiments"],
            summary="Get an experiment")
def get_experiment(experiment_id: int, me: Me) -> ExperimentRead:
    """One experiment with its groups (and their statistics) and run ids."""
    return me.run(lambda s, _: experiments.get_experiment(s, experiment_id=experiment_id))


@router.get("/experiments", response_model=list[ExperimentRead], tags=["experiments"], summary="List experiments")
def list_experiments(me: Me, owner_id: int | None = None, dataset_id: int | None = None,
                     limit: int = Query(default=100, ge=1, le=1000),
                     offset: int = Query(default=0, ge=0)) -> list[ExperimentRead]:
    """Experiments, newest first (without group statistics)."""
    return me.run(lambda s, _: experiments.list_experiments(s, owner_id=owner_id, dataset_id=dataset_id,
                                                            limit=limit, offset=offset))
