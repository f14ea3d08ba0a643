"""The leaderboard, predictions and jobs, submissions and public scores, ensembles."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from worker.api._bodies import (
    CreateEnsemble,
    CreateSubmission,
    EnsembleSaved,
    JobQueued,
    Predict,
    PublicScore,
    SubmissionQueued,
)
from worker.api._context import Caller, caller
from worker.errors import InvalidInput
from worker.schemas import EnsembleRead, JobRead, LeaderboardRow, SubmissionRead
from worker.services import ensembles, jobs, leaderboard, probabilities, submissions
from worker.services.ensembles import SavedCandidate
from worker.services.outbox import Queued

__all__ = ["router"]

router = APIRouter()

Me = Annotated[Caller, Depends(caller)]


@router.get("/leaderboard", response_model=list[LeaderboardRow], tags=["leaderboard"], summary="The leaderboard")
def get_leaderboard(
    me: Me,
    dataset_id: int | None = None,
    metric: str = Query(default="val", description="Sort key: val (each row's monitor value), a metric kind "
                                                   "(miou, dice, ...), public, gap or created_at."),
    kinds: Annotated[list[str] | None, Query(description="run, group, ensemble, student")] = None,
    owner_id: int | None = None,
    arch: str | None = None,
    tag: str | None = None,
    descending: bool = True,
    limit: int = Query(default=200, ge=1, le=1000),
    offset: int = Query(default=0, ge=0),
) -> list[LeaderboardRow]:
    """Finished runs, groups, ensembles and pseudo-label students of a dataset, best first."""
    options: dict[str, Any] = {"kinds": kinds} if kinds else {}
    return me.run(lambda s, _: leaderboard.leaderboard(
        s, dataset_id=dataset_id, owner_id=owner_id, arch=arch, tag=tag, sort=metric, descending=descending,
        limit=limit, offset=offset, **options))


# ------------------------------------------------------------------ predictions and jobs


@router.post("/predictions", response_model=JobQueued, status_code=201, tags=["jobs"], summary="Queue a prediction")
def predict(body: Predict, me: Me) -> JobQueued:
    """Queue a ``predict`` job for runs (or groups): their test probabilities, which a submission needs."""
    target: dict[str, Any] = {}
    if body.run_ids:
        target["run_ids"] = body.run_ids
    if body.group_ids:
        target["group_ids"] = body.group_ids
    if not target:
        raise InvalidInput("name the runs or groups to predict in run_ids or group_ids")
    job, problem = me.submit(
        lambda s, actor: jobs.create_job(s, actor=actor, kind="predict", target=target,
                                         params={"split": body.split, "tta": body.tta}, priority=body.priority),
        queued=lambda j: Queued(job_ids=(j.id,)))
    return JobQueued(job=job, queue_problem=problem)


@router.get("/jobs/{job_id}", response_model=JobRead, tags=["jobs"], summary="Get a job")
def get_job(job_id: int, me: Me) -> JobRead:
    """One job: its status, result or error."""
    return me.run(lambda s, _: jobs.get_job(s, job_id=job_id))


# ------------------------------------------------------------------ submissions


@router.post("/submissions", response_model=SubmissionQueued, status_code=201, tags=["submissions"],
             summary="Create a submission")
def create_submission(body: CreateSubmission, me: Me) -> SubmissionQueued:
    """Queue a submission file made from the stored test predictions of one run, group or ensemble.

    The test predictions must be stored already (``POST /predictions`` queues them); the submission
    records their TTA policy and takes the status of the job writing its file.
    """
    arts = me.built.artifacts
    given = {k: v for k, v in (("run", body.run_id), ("group", body.group_id), ("ensemble", body.ensemble_id))
             if v is not None}
    if len(given) != 1:
        raise InvalidInput("a submission comes from exactly one of run_id, group_id, ensemble_id; got "
                           f"{ {f'{k}_id': v for k, v in given.items()} or 'none'}")
    kind, source_id = next(iter(given.items()))

    def create(s: Session, actor: int) -> tuple[SubmissionRead, JobRead]:
        found = probabilities.resolve_probabilities(s, actor=actor, kind=kind, id=source_id, split="test",
                                                    artifacts=arts)
        sub = submissions.create_submission(s, actor=actor, format=body.format, note=body.note,
                                            tta=getattr(found.reader, "tta", None), **{f"{kind}_id": source_id})
        job = jobs.create_job(s, actor=actor, kind="submission", target={"submission_id": sub.id}, params={})
        return sub, job

    (sub, job), problem = me.submit(create, queued=lambda r: Queued(job_ids=(r[1].id,)))
    return SubmissionQueued(submission=sub, job=job, queue_problem=problem)


@router.get("/submissions", response_model=list[SubmissionRead], tags=["submissions"], summary="List submissions")
def list_submissions(me: Me, run_id: int | None = None, group_id: int | None = None, ensemble_id: int | None = None,
                     dataset_id: int | None = None, scored_only: bool = False,
                     limit: int = Query(default=500, ge=1, le=5000)) -> list[SubmissionRead]:
    """Submissions, newest first, filtered by source or dataset."""
    return me.run(lambda s, _: submissions.list_submissions(
        s, run_id=run_id, group_id=group_id, ensemble_id=ensemble_id, dataset_id=dataset_id,
        scored_only=scored_only, limit=limit))


@router.get("/submissions/{submission_id}", response_model=SubmissionRead, tags=["submissions"],
            summary="Get a submission")
def get_submission(submission_id: int, me: Me) -> SubmissionRead:
    """One submission: its status, file and public score."""
    return me.run(lambda s, _: submissions.get_submission(s, submission_id=submission_id))


@router.post("/submissions/{submission_id}/public-score", response_model=SubmissionRead, tags=["submissions"],
             summary="Enter a public score")
def record_public_score(submission_id: int, body: PublicScore, me: Me) -> SubmissionRead:
    """Store the public leaderboard score of a submission (a fraction from 0 to 1)."""
    return me.run(lambda s, actor: submissions.record_public_score(
        s, actor=actor, submission_id=submission_id, score=body.score, note=body.note))


# ------------------------------------------------------------------ ensembles


@router.post("/ensembles", response_model=EnsembleSaved, status_code=201, tags=["ensembles"],
             summary="Start an ensemble")
def start_ensemble(body: CreateEnsemble, me: Me) -> EnsembleSaved:
    """Score the members' combined validation probabilities here, save the ensemble, queue its test prediction.

    The same step as the Ensemble builder's "Save and queue": a weight search finds its weights
    again; members without test predictions get a ``predict`` job first.
    """
    built = me.built

    def save(s: Session, actor: int) -> SavedCandidate:
        return ensembles.save_candidate(
            s, actor=actor, name=body.name, members=body.members, method=body.method,
            weight_search=body.weight_search, tta=body.tta, note=body.note,
            dataset_root=built.settings.dataset_root, artifacts=built.artifacts)

    saved, problem = me.submit(save, queued=lambda c: Queued.of(job_ids=[c.job.id] if c.job is not None else []))
    return EnsembleSaved(ensemble=saved.ensemble, job=saved.job, next_step=saved.next_step, queue_problem=problem)


@router.get("/ensembles/{ensemble_id}", response_model=EnsembleRead, tags=["ensembles"], summary="Get an ensemble")
def get_ensemble(ensemble_id: int, me: Me) -> EnsembleRead:
    """One ensemble: members, weights, validation score, status."""
    return me.run(lambda s, _: ensembles.get_ensemble(s, ensemble_id=ensemble_id))
