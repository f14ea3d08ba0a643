"""Ensembles: saved combinations of runs, groups and ensembles (the computation lives in segcore)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.orm import Session

from worker.db.models import Ensemble, EnsembleMethod, Run, RunGroup, RunStatus, SourceKind
from worker.errors import InvalidInput
from worker.schemas import EnsembleMember, EnsembleRead, JobRead
from worker.services import access
from worker.services._common import as_float, check_actor, get_or_raise
from worker.services.audit import record_event

__all__ = [
    "ENSEMBLE_METHODS",
    "EnsembleMethodInfo",
    "segcore_method",
    "SavedCandidate",
    "save_candidate",
    "create_ensemble",
    "get_ensemble",
    "list_ensembles",
    "set_ensemble_result",
    "source_dataset_id",
]


@dataclasses.dataclass(frozen=True)
class EnsembleMethodInfo:
    """One of SegBoard's ensemble methods: its name, segcore's method and a line for the UI."""

    name: str
    segcore: str
    description: str


#: SegBoard's ensemble methods, keyed by name (``weighted`` is segcore's soft mean with saved weights).
ENSEMBLE_METHODS: dict[str, EnsembleMethodInfo] = {
    m.name: m
    for m in (
        EnsembleMethodInfo("soft", "soft", "Mean of the members' probabilities."),
        EnsembleMethodInfo("geometric", "geometric",
                           "Normalised geometric mean (rewards agreement, punishes a confident dissenter)."),
        EnsembleMethodInfo("majority", "vote",
                           "Each member votes its class; ties go to the highest mean probability."),
        EnsembleMethodInfo("weighted", "soft",
                           "Weighted mean of probabilities with the weights below (or found by the search)."),
    )
}


def segcore_method(method: EnsembleMethod | str) -> str:
    """segcore.ensemble's name for a SegBoard ensemble method.

    Raises:
        InvalidInput: an unknown method; the message lists the known ones.
    """
    name = getattr(method, "value", method)
    try:
        return ENSEMBLE_METHODS[str(name)].segcore
    except KeyError:
        raise InvalidInput(f"unknown method {name!r}; use {', '.join(ENSEMBLE_METHODS)}") from None

_MODELS = {
    SourceKind.RUN: (Run, "run"), SourceKind.GROUP: (RunGroup, "group"), SourceKind.ENSEMBLE: (Ensemble, "ensemble")
}


def source_dataset_id(session: Session, kind: SourceKind | str, source_id: int) -> int | None:
    """The dataset of a run, group or ensemble.

    Raises:
        NotFound: the source does not exist.
    """
    model, name = _MODELS[SourceKind(kind)]
    # Run, RunGroup and Ensemble (the _MODELS values) all have dataset_id
    return get_or_raise(session, model, source_id, name).dataset_id  # type: ignore[attr-defined]


def create_ensemble(
    session: Session,
    *,
    actor: int | None,
    name: str,
    method: EnsembleMethod | str,
    members: Sequence[EnsembleMember | dict[str, Any]],
    tta: dict[str, Any] | None = None,
    val_metrics: dict[str, Any] | None = None,
    val_score: float | None = None,
    member_scores: list[Any] | None = None,
    monitor_metric: str = "miou",
    dataset_id: int | None = None,
    test_store: str | None = None,
    status: RunStatus | str = RunStatus.SUCCEEDED,
    note: str = "",
) -> EnsembleRead:
    """Save an ensemble whose validation score was computed from its members' stored probabilities.

    Args:
        members: ``[{"kind": "run"|"group"|"ensemble", "id": 3, "weight": 1.0}, ...]``, at least two
            (one member with test-time augmentation is a TTA run, not an ensemble).
        val_metrics: Every metric kind (+ ``per_class``) of the ensemble on the OOF/val images.
        val_score: Default ``val_metrics[monitor_metric]``.
        member_scores: Each member's own score, shown next to the ensemble's.
        status: State of the ensemble's test prediction (``succeeded`` when nothing is pending).

    Raises:
        InvalidInput: unknown method, malformed members, members of different datasets.
        NotFound: a member does not exist.
    """
    check_actor(session, actor)
    access.require_member(session, actor, "create ensembles")
    name = (name or "").strip()
    if not name:
        raise InvalidInput("an ensemble needs a name; type one")
    try:
        method = EnsembleMethod(method)
    except ValueError:
        raise InvalidInput(f"unknown method {method!r}; use {', '.join(m.value for m in EnsembleMethod)}") from None
    try:
        status = RunStatus(status)
    except ValueError:
        raise InvalidInput(f"unknown status {status!r}; use {', '.join(s.value for s in RunStatus)}") from None
    try:
        parsed = [m if isinstance(m, EnsembleMember) else EnsembleMember.model_validate(m) for m in members]
    except ValidationError as exc:
        raise InvalidInput(f"ensemble members must look like {{'kind': 'run', 'id': 3, 'weight': 1.0}}: {exc}") from exc
    if len(parsed) < 2:
        raise InvalidInput("an ensemble needs at least two members")
    keys = [(m.kind, m.id) for m in parsed]
    if len(set(keys)) != len(keys):
        raise InvalidInput("an ensemble lists the same member twice; remove the duplicate")
    datasets = {source_dataset_id(session, m.kind, m.id) for m in parsed}
    datasets.discard(None)
    if len(datasets) > 1:
        raise InvalidInput(f"ensemble members come from different datasets {sorted(datasets)}; pick one dataset")
    if dataset_id is None and datasets:
        dataset_id = datasets.pop()
    if val_metrics is not None and not isinstance(val_metrics, dict):
        raise InvalidInput("val_metrics must be a mapping of metric name to value")
    if val_score is None and val_metrics and val_metrics.get(monitor_metric) is not None:
        val_score = val_metrics[monitor_metric]
    score = as_float(val_score, name="val_score") if val_score is not None else None
    ens = Ensemble(
        name=name, method=method, members=[m.model_dump(mode="json") for m in parsed], tta=tta,
        dataset_id=dataset_id, monitor_metric=monitor_metric, val_score=score, val_metrics=val_metrics,
        member_scores=member_scores, status=status, test_store=test_store, owner_id=actor, note=note or "",
    )
    session.add(ens)
    session.flush()
    record_event(session, actor=actor, action="ensemble.create", object_kind="ensemble", object_id=ens.id,
                 detail={"name": name, "method": method.value, "members": ens.members, "val_score": score})
    return EnsembleRead.model_validate(ens)


@dataclasses.dataclass(frozen=True)
class SavedCandidate:
    """What :func:`save_candidate` did: the ensemble, the job it queued (publish it after the commit), the next step."""

    ensemble: EnsembleRead
    job: JobRead | None
    next_step: str


def save_candidate(
    session: Session,
    *,
    actor: int | None,
    name: str,
    members: Sequence[EnsembleMember | dict[str, Any]],
    method: str,
    weight_search: str = "none",
    tta: dict[str, Any] | None = None,
    note: str = "",
    dataset_root: str | None = None,
    artifacts: Any = None,
) -> SavedCandidate:
    """Score a candidate ensemble again here, save it with that score, and queue what its test prediction needs.

    The score is :func:`worker.services.candidates.score_candidate`'s, computed in this call (a
    weight search finds the same weights again; members it weighs 0 are left out). Jobs: members
    without test predictions first (one ``predict`` job, with ``tta``), else the ``ensemble`` job
    that combines their test predictions. An ensemble member without test predictions queues
    nothing: predict it first.

    Raises:
        InvalidInput: what :func:`create_ensemble` and ``score_candidate`` raise.
        EnsembleError: the members' stores do not fit together.
    """
    from worker.services import jobs
    from worker.services.candidates import score_candidate

    check_actor(session, actor)
    access.require_member(session, actor, "create ensembles")  # before any scoring work
    result = score_candidate(session, members=members, method=method, weight_search=weight_search,
                             dataset_root=dataset_root, artifacts=artifacts, actor=actor)
    rows = result["members"]
    kept = [(m, w) for m, w in zip(rows, result["weights"], strict=True) if w > 0]
    metric = result["metric"]
    ens = create_ensemble(
        session, actor=actor, name=name, method=method,
        members=[{"kind": m["kind"], "id": m["id"], "weight": w} for m, w in kept], tta=tta,
        val_metrics={metric: result["score"], "per_class": {metric: result["per_class"]}},
        member_scores=[{"kind": m["kind"], "id": m["id"], "score": m["score"]} for m in rows],
        monitor_metric=metric, status=RunStatus.QUEUED, note=note,
    )
    missing: dict[str, list[int]] = {"run": [], "group": [], "ensemble": []}
    for m, _ in kept:
        model, kind = _MODELS[SourceKind(m["kind"])]
        # Run, RunGroup and Ensemble (the _MODELS values) all have test_store
        if not get_or_raise(session, model, int(m["id"]), kind).test_store:  # type: ignore[attr-defined]
            missing[kind].append(int(m["id"]))
    if missing["ensemble"]:
        return SavedCandidate(ens, None, f"ensembles {missing['ensemble']} have no test predictions yet; queue "
                                         "their prediction first, then combine this one on its page")
    if missing["run"] or missing["group"]:
        target: dict[str, Any] = {"run_ids": missing["run"]} if missing["run"] else {}
        if missing["group"]:
            target["group_ids"] = missing["group"]
        # the ensemble is named in the target so that a failed prediction fails it too
        target["ensemble_id"] = ens.id
        job = jobs.create_job(session, actor=actor, kind="predict", target=target, params={"split": "test", "tta": tta})
        named = ", ".join([f"run {i}" for i in missing["run"]] + [f"group {i}" for i in missing["group"]])
        return SavedCandidate(ens, job, f"the test prediction of {named} is queued as job {job.id}; combine them on "
                                        "the ensemble's page when it finished")
    job = jobs.create_job(session, actor=actor, kind="ensemble", target={"ensemble_id": ens.id}, params={})
    return SavedCandidate(ens, job, f"its test prediction is queued as job {job.id}")


def set_ensemble_result(
    session: Session,
    *,
    actor: int | None,
    ensemble_id: int,
    status: RunStatus | str | None = None,
    test_store: str | None = None,
    val_metrics: dict[str, Any] | None = None,
) -> EnsembleRead:
    """Update an ensemble after its queued test prediction (or a re-evaluation) ran.

    ``status`` is for records made outside a job; one made by a job takes its status from the job
    (:mod:`worker.services.lifecycle` copies it at each of the job's transitions).

    Raises:
        InvalidInput: unknown status.
        NotFound: no such ensemble.
    """
    check_actor(session, actor)
    access.require_admin(session, actor, "record ensemble results (its job does)")
    ens = get_or_raise(session, Ensemble, ensemble_id, "ensemble")
    detail: dict[str, Any] = {}
    if status is not None:
        try:
            ens.status = RunStatus(status)
        except ValueError:
            raise InvalidInput(f"unknown status {status!r}; use {', '.join(s.value for s in RunStatus)}") from None
        detail["status"] = ens.status.value
    if test_store is not None:
        ens.test_store = detail["test_store"] = test_store
    if val_metrics is not None:
        ens.val_metrics = val_metrics
        if val_metrics.get(ens.monitor_metric) is not None:
            ens.val_score = as_float(val_metrics[ens.monitor_metric], name="val_score")
        detail["val_score"] = ens.val_score
    session.flush()
    record_event(session, actor=actor, action="ensemble.set_result", object_kind="ensemble", object_id=ens.id,
                 detail=detail)
    return EnsembleRead.model_validate(ens)


def get_ensemble(session: Session, *, ensemble_id: int) -> EnsembleRead:
    """One ensemble.

    Raises:
        NotFound: no such ensemble.
    """
    return EnsembleRead.model_validate(get_or_raise(session, Ensemble, ensemble_id, "ensemble"))


def list_ensembles(session: Session, *, dataset_id: int | None = None, limit: int = 200) -> list[EnsembleRead]:
    """Ensembles, best validation score first."""
    q = sa.select(Ensemble)
    if dataset_id is not None:
        q = q.where(Ensemble.dataset_id == dataset_id)
    q = q.order_by(sa.nulls_last(Ensemble.val_score.desc()), Ensemble.id).limit(limit)
    return [EnsembleRead.model_validate(e) for e in session.scalars(q)]
