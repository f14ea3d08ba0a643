"""Pseudo-label rounds: a teacher, thresholds, the produced dataset and the student runs trained on it.

Student runs are created with ``create_experiment(..., pseudo_round_id=round.id)``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.orm import Session

from worker.db.models import Dataset, PseudoRound, Run, RunGroup, RunStatus, SourceKind, Submission
from worker.errors import InvalidInput
from worker.schemas import PseudoParams, PseudoRoundRead
from worker.services import access
from worker.services._common import check_actor, check_name, get_or_raise
from worker.services.audit import record_event
from worker.services.ensembles import source_dataset_id
from worker.services.leaderboard import validated_on

__all__ = ["create_pseudo_round", "set_pseudo_round_result", "get_pseudo_round", "list_pseudo_rounds", "lineage"]


def create_pseudo_round(
    session: Session,
    *,
    actor: int | None,
    name: str,
    teacher_kind: SourceKind | str,
    teacher_id: int,
    params: PseudoParams | dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
    parent_round_id: int | None = None,
) -> PseudoRoundRead:
    """Record a pseudo-label round (its dataset is produced by a queued job).

    Args:
        teacher_kind: ``run``, ``group`` or ``ensemble``.
        params: Pixel and image thresholds, image limit, per-class thresholds.
        report: The preview report shown when the round was set up.
        parent_round_id: The previous round when this one's teacher was a student of it.

    Raises:
        InvalidInput: unknown teacher kind or invalid thresholds.
        NotFound: the teacher or parent round does not exist.
    """
    check_actor(session, actor)
    access.require_member(session, actor, "create pseudo-label rounds")
    name = (name or "").strip()
    if not name:
        raise InvalidInput("a pseudo-label round needs a name; type one")
    name = check_name(name, what="a pseudo-label round's name", max_chars=150)  # its dataset is named after it
    try:
        teacher_kind = SourceKind(teacher_kind)
    except ValueError:
        raise InvalidInput(f"unknown teacher kind {teacher_kind!r}; use run, group or ensemble") from None
    try:
        parsed = params if isinstance(params, PseudoParams) else PseudoParams.model_validate(params or {})
    except ValidationError as exc:
        raise InvalidInput(f"invalid pseudo-label thresholds: {exc}") from exc
    source_dataset = source_dataset_id(session, teacher_kind, teacher_id)
    if parent_round_id is not None:
        get_or_raise(session, PseudoRound, parent_round_id, "pseudo-label round")
    rnd = PseudoRound(
        name=name, teacher_kind=teacher_kind, teacher_id=teacher_id, params=parsed.model_dump(mode="json"),
        report=report, source_dataset_id=source_dataset, parent_round_id=parent_round_id, created_by=actor,
    )
    session.add(rnd)
    session.flush()
    record_event(session, actor=actor, action="pseudo.create", object_kind="pseudo_round", object_id=rnd.id,
                 detail={"teacher": f"{teacher_kind.value}:{teacher_id}", "params": rnd.params})
    return _reads(session, [rnd])[0]


def set_pseudo_round_result(
    session: Session,
    *,
    actor: int | None,
    round_id: int,
    status: RunStatus | str | None = None,
    report: dict[str, Any] | None = None,
    dataset_id: int | None = None,
) -> PseudoRoundRead:
    """Record what the round's job produced: its report and the pseudo-labelled dataset.

    ``status`` is for records made outside a job; one made by a job takes its status from the job
    (:mod:`worker.services.lifecycle` copies it at each of the job's transitions).

    Raises:
        InvalidInput: unknown status.
        NotFound: no such round or dataset.
    """
    check_actor(session, actor)
    access.require_admin(session, actor, "record pseudo-label results (its job does)")
    rnd = get_or_raise(session, PseudoRound, round_id, "pseudo-label round")
    detail: dict[str, Any] = {}
    if status is not None:
        try:
            rnd.status = RunStatus(status)
        except ValueError:
            raise InvalidInput(f"unknown status {status!r}; use {', '.join(s.value for s in RunStatus)}") from None
        detail["status"] = rnd.status.value
    if report is not None:
        rnd.report = report
    if dataset_id is not None:
        get_or_raise(session, Dataset, dataset_id, "dataset")
        rnd.dataset_id = detail["dataset_id"] = dataset_id
    session.flush()
    record_event(session, actor=actor, action="pseudo.set_result", object_kind="pseudo_round", object_id=rnd.id,
                 detail=detail)
    return _reads(session, [rnd])[0]


def _split(config: dict[str, Any] | None) -> dict[str, Any]:
    return dict(((config or {}).get("data") or {}).get("split") or {"kind": "holdout"})


def _run_images(config: dict[str, Any] | None, fold: int | None) -> tuple[str, str]:
    """``(key, words)``: which images a run's validation score is on; equal keys mean the same images."""
    split = _split(config)
    words = validated_on(split.get("kind"), fold, split.get("n_folds"))
    return repr(sorted(split.items())), words


def _group_images(configs: list[dict[str, Any]]) -> tuple[str, str]:
    """``(key, words)`` of a group's out-of-fold score: every image of its folds, whatever its fold."""
    split = _split(configs[0] if configs else None)
    split.pop("fold", None)
    if split.get("kind") != "kfold":
        return repr(sorted(split.items())), "mean of its runs"
    return "oof:" + repr(sorted(split.items())), f"out-of-fold ({split.get('n_folds')} folds)"


def _teacher_images(session: Session, rnd: PseudoRound) -> tuple[str | None, str]:
    if rnd.teacher_kind is SourceKind.RUN:
        run = session.get(Run, rnd.teacher_id)
        return _run_images(run.config, run.fold) if run is not None else (None, "unknown (the run was deleted)")
    if rnd.teacher_kind is SourceKind.GROUP:
        configs = list(session.scalars(sa.select(Run.config).where(Run.group_id == rnd.teacher_id).limit(1)))
        return _group_images(configs)
    return None, "its members' images"


def _best_student(session: Session, rnd: PseudoRound, teacher_key: str | None) -> tuple[float | None, str | None,
                                                                                        bool]:
    """The best student score at the teacher's level (group OOF against a group, a run against a run), the
    images it is on, and whether they are the teacher's (then the two compare). Scores on the teacher's
    images are preferred: a k-fold student is compared at the teacher's fold."""
    found: list[tuple[float, str, str]] = []
    if rnd.teacher_kind is SourceKind.GROUP:
        for score, first_run in session.execute(
                sa.select(RunGroup.oof_score, sa.func.min(Run.id)).join(Run, Run.group_id == RunGroup.id)
                .where(Run.pseudo_round_id == rnd.id, RunGroup.oof_score.is_not(None)).group_by(RunGroup.id)):
            found.append((score, *_group_images([session.get(Run, first_run).config])))
    if not found:  # a run teacher, an ensemble teacher, or student groups without an out-of-fold score yet
        for config, fold, value in session.execute(
                sa.select(Run.config, Run.fold, Run.monitor_value)
                .where(Run.pseudo_round_id == rnd.id, Run.monitor_value.is_not(None))):
            found.append((value, *_run_images(config, fold)))
    if not found:
        return None, None, False
    same = [f for f in found if teacher_key is not None and f[1] == teacher_key]
    best = max(same or found, key=lambda f: f[0])
    return best[0], best[2], bool(same)


def _reads(session: Session, rounds: list[PseudoRound]) -> list[PseudoRoundRead]:
    ids = [r.id for r in rounds]
    students: dict[int, list[int]] = {i: [] for i in ids}
    best_pub: dict[int, float] = {}
    if ids:
        for rid, run_id in session.execute(
            sa.select(Run.pseudo_round_id, Run.id).where(Run.pseudo_round_id.in_(ids)).order_by(Run.id)
        ):
            students[rid].append(run_id)
        for rid, public in session.execute(
            sa.select(Run.pseudo_round_id, sa.func.max(Submission.public_score))
            .join(Submission, Submission.run_id == Run.id)
            .where(Run.pseudo_round_id.in_(ids))
            .group_by(Run.pseudo_round_id)
        ):
            if public is not None:
                best_pub[rid] = public
    out = []
    for r in rounds:
        data = {c: getattr(r, c) for c in PseudoRoundRead.model_fields if hasattr(r, c)}
        teacher_key, teacher_words = _teacher_images(session, r)
        val, val_words, comparable = _best_student(session, r, teacher_key)
        data.update(student_run_ids=students[r.id], best_student_val=val, best_student_public=best_pub.get(r.id),
                    student_validated_on=val_words, teacher_validated_on=teacher_words,
                    comparable_with_teacher=comparable)
        out.append(PseudoRoundRead.model_validate(data))
    return out


def get_pseudo_round(session: Session, *, round_id: int) -> PseudoRoundRead:
    """One round with its student runs and their best validation and public scores.

    Raises:
        NotFound: no such round.
    """
    return _reads(session, [get_or_raise(session, PseudoRound, round_id, "pseudo-label round")])[0]


def list_pseudo_rounds(session: Session, *, dataset_id: int | None = None) -> list[PseudoRoundRead]:
    """Rounds in creation order, optionally of one source dataset."""
    q = sa.select(PseudoRound)
    if dataset_id is not None:
        q = q.where(PseudoRound.source_dataset_id == dataset_id)
    return _reads(session, list(session.scalars(q.order_by(PseudoRound.id))))


def lineage(session: Session, *, round_id: int) -> list[PseudoRoundRead]:
    """The chain of rounds from the first one to ``round_id`` (parents first).

    Raises:
        NotFound: no such round.
        InvalidInput: the parent links form a cycle (a corrupted database).
    """
    chain: list[PseudoRound] = []
    seen: set[int] = set()
    current: int | None = round_id
    while current is not None:
        if current in seen:
            raise InvalidInput(f"pseudo-label rounds {sorted(seen)} link to each other in a cycle; fix parent_round_id")
        seen.add(current)
        rnd = get_or_raise(session, PseudoRound, current, "pseudo-label round")
        chain.append(rnd)
        current = rnd.parent_round_id
    return _reads(session, list(reversed(chain)))
