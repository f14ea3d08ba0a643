"""Submissions of a run, group or ensemble, and the public leaderboard scores members enter for them."""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.base import utcnow
from worker.db.models import Ensemble, Job, JobKind, Run, RunGroup, RunStatus, SourceKind, Submission
from worker.errors import InvalidInput
from worker.schemas import JobRead, SubmissionRead
from worker.services import access
from worker.services._common import as_float, check_actor, get_or_raise
from worker.services.audit import record_event

__all__ = [
    "create_submission",
    "record_public_score",
    "set_submission_file",
    "get_submission",
    "list_submissions",
    "PendingPredictions",
    "pending_test_predictions",
]


def create_submission(
    session: Session,
    *,
    actor: int | None,
    run_id: int | None = None,
    group_id: int | None = None,
    ensemble_id: int | None = None,
    file_path: str | None = None,
    format: str = "csv_rle",  # noqa: A002 - the keyword callers and the stored column use
    tta: dict[str, Any] | None = None,
    note: str = "",
) -> SubmissionRead:
    """Record a submission of exactly one run, group or ensemble (several per source are fine).

    ``file_path`` may be None while the submission file is still being written by a queued job;
    :func:`set_submission_file` fills it in. Such a submission is ``queued`` and then takes its
    status from that job (the lifecycle module copies it; a failed job fails it with the error).

    Raises:
        InvalidInput: not exactly one source given, or an empty format.
        NotFound: the source does not exist.
    """
    check_actor(session, actor)
    access.require_member(session, actor, "create submissions")
    sources = (("run_id", run_id), ("group_id", group_id), ("ensemble_id", ensemble_id))
    given = {k: v for k, v in sources if v is not None}
    if len(given) != 1:
        raise InvalidInput(
            f"a submission comes from exactly one of run_id, group_id, ensemble_id; got {given or 'none'}"
        )
    if not format or not format.strip():
        raise InvalidInput("a submission needs a format such as 'csv_rle' or 'png_masks'")
    if run_id is not None:
        dataset_id = get_or_raise(session, Run, run_id, "run").dataset_id
    elif group_id is not None:
        dataset_id = get_or_raise(session, RunGroup, group_id, "group").dataset_id
    else:
        # exactly one source was given (checked above), so ensemble_id is set
        dataset_id = get_or_raise(session, Ensemble, ensemble_id, "ensemble").dataset_id  # type: ignore[arg-type]
    sub = Submission(
        run_id=run_id, group_id=group_id, ensemble_id=ensemble_id, dataset_id=dataset_id, file_path=file_path,
        format=format.strip(), tta=tta, note=note or "", created_by=actor,
        status=RunStatus.SUCCEEDED if file_path is not None else RunStatus.QUEUED,
    )
    session.add(sub)
    session.flush()
    record_event(session, actor=actor, action="submission.create", object_kind="submission", object_id=sub.id,
                 detail={**given, "format": sub.format, "tta": tta})
    return SubmissionRead.model_validate(sub)


def record_public_score(
    session: Session, *, actor: int | None, submission_id: int, score: Any, note: str | None = None
) -> SubmissionRead:
    """Store the public leaderboard score a member read off the competition site.

    Args:
        score: A number, or numeric text from a form (``"0.8123"``).
        note: A note about the score (e.g. "public LB, 30% of the test set"), kept apart from the
            submission's own note; an empty one clears it.

    Raises:
        InvalidInput: the score is not a finite number from 0 to 1 (text like "good" is refused).
        NotFound: no such submission.
    """
    check_actor(session, actor)
    value = as_float(score, name="public score")
    if not 0.0 <= value <= 1.0:
        shown = f"{value:.6g}"
        hint = f"; type {value / 100:.4g}, not {shown}" if 1.0 < value <= 100.0 else ""
        raise InvalidInput(
            f"public score must be between 0 and 1 (the metrics SegBoard compares, mIoU, Dice and pixel accuracy, "
            f"are fractions), got {shown}{hint}"
        )
    sub = get_or_raise(session, Submission, submission_id, "submission")
    access.require_owner(session, actor, sub.created_by, f"enter the public score of submission {submission_id}")
    old = sub.public_score
    sub.public_score = value
    sub.score_entered_by = actor
    sub.score_entered_at = utcnow()
    if note is not None:
        sub.score_note = note.strip() or None
    session.flush()
    record_event(session, actor=actor, action="submission.record_public_score", object_kind="submission",
                 object_id=sub.id, detail={"old": old, "new": value})
    return SubmissionRead.model_validate(sub)


def set_submission_file(session: Session, *, actor: int | None, submission_id: int, file_path: str) -> SubmissionRead:
    """Point a submission at its written file (under the artifact root).

    Raises:
        InvalidInput: empty path.
        NotFound: no such submission.
    """
    check_actor(session, actor)
    access.require_admin(session, actor, "record submission files (its job does)")
    if not file_path:
        raise InvalidInput("file_path must name the written submission file")
    sub = get_or_raise(session, Submission, submission_id, "submission")
    sub.file_path = file_path
    session.flush()
    record_event(session, actor=actor, action="submission.set_file", object_kind="submission", object_id=sub.id,
                 detail={"file_path": file_path})
    return SubmissionRead.model_validate(sub)


def get_submission(session: Session, *, submission_id: int) -> SubmissionRead:
    """One submission.

    Raises:
        NotFound: no such submission.
    """
    return SubmissionRead.model_validate(get_or_raise(session, Submission, submission_id, "submission"))


def list_submissions(
    session: Session,
    *,
    run_id: int | None = None,
    group_id: int | None = None,
    ensemble_id: int | None = None,
    dataset_id: int | None = None,
    scored_only: bool = False,
    limit: int = 500,
) -> list[SubmissionRead]:
    """Submissions, newest first, filtered by source or dataset."""
    q = sa.select(Submission)
    if run_id is not None:
        q = q.where(Submission.run_id == run_id)
    if group_id is not None:
        q = q.where(Submission.group_id == group_id)
    if ensemble_id is not None:
        q = q.where(Submission.ensemble_id == ensemble_id)
    if dataset_id is not None:
        q = q.where(Submission.dataset_id == dataset_id)
    if scored_only:
        q = q.where(Submission.public_score.is_not(None))
    q = q.order_by(Submission.id.desc()).limit(limit)
    return [SubmissionRead.model_validate(s) for s in session.scalars(q)]


@dataclasses.dataclass(frozen=True)
class PendingPredictions:
    """Where a run's, group's or ensemble's test predictions stand (what a submission needs).

    Attributes:
        pending: Queued or running jobs that will write them (``predict`` of the run, group or an
            ensemble's run/group members; the ensemble's ``ensemble`` job), oldest first.
        missing_runs: An ensemble's run members without test predictions.
        missing_groups: Its group members without them.
        missing_ensembles: Its ensemble members without them.
    """

    pending: list[JobRead]
    missing_runs: list[int] = dataclasses.field(default_factory=list)
    missing_groups: list[int] = dataclasses.field(default_factory=list)
    missing_ensembles: list[int] = dataclasses.field(default_factory=list)


def pending_test_predictions(
    session: Session, *, kind: SourceKind | str, id: int  # noqa: A002 - the service-wide name of an object's id
) -> PendingPredictions:
    """The pending jobs and missing member predictions behind a source's test predictions.

    Raises:
        InvalidInput: an unknown kind.
        NotFound: no such run, group or ensemble.
    """
    try:
        kind = SourceKind(kind)
    except ValueError:
        raise InvalidInput(f"unknown kind {kind!r}; use run, group or ensemble") from None
    runs: set[int] = set()
    groups: set[int] = set()
    missing: dict[SourceKind, list[int]] = {k: [] for k in SourceKind}
    if kind is SourceKind.RUN:
        runs.add(get_or_raise(session, Run, id, "run").id)
    elif kind is SourceKind.GROUP:
        groups.add(get_or_raise(session, RunGroup, id, "group").id)
    else:
        ens = get_or_raise(session, Ensemble, id, "ensemble")
        models = {SourceKind.RUN: Run, SourceKind.GROUP: RunGroup, SourceKind.ENSEMBLE: Ensemble}
        for m in ens.members:
            member_kind, member_id = SourceKind(m["kind"]), int(m["id"])
            obj = session.get(models[member_kind], member_id)
            if obj is not None and not obj.test_store:  # type: ignore[attr-defined]  # Run, RunGroup, Ensemble
                missing[member_kind].append(member_id)
        runs.update(int(m["id"]) for m in ens.members if m["kind"] == SourceKind.RUN.value)
        groups.update(int(m["id"]) for m in ens.members if m["kind"] == SourceKind.GROUP.value)
    active = session.scalars(sa.select(Job).where(Job.status.in_([RunStatus.QUEUED, RunStatus.RUNNING]),
                                                  Job.kind.in_([JobKind.PREDICT, JobKind.ENSEMBLE]))
                             .order_by(Job.id))
    pending = []
    for job in active:
        target = job.target or {}
        if job.kind is JobKind.ENSEMBLE:
            mine = kind is SourceKind.ENSEMBLE and target.get("ensemble_id") == id
        else:
            mine = job.params.get("split", "test") == "test" and bool(
                runs & set(target.get("run_ids") or []) or groups & set(target.get("group_ids") or []))
        if mine:
            pending.append(JobRead.model_validate(job))
    return PendingPredictions(pending=pending, missing_runs=missing[SourceKind.RUN],
                           missing_groups=missing[SourceKind.GROUP], missing_ensembles=missing[SourceKind.ENSEMBLE])
