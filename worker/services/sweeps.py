"""Sweeps: a search over config values with a budget of trials, driven by an Optuna study.

A sweep holds a base config, a search space over config paths, a budget (trials in all), a
parallelism (trials queued or running at once), a sampler (TPE or random) and the metric to
optimise. Each trial is one queued run, created through
:func:`worker.services.experiments.create_experiment` as the sweep's owner (so the submit-time
check and the per-member active-run limit apply) and linked to its trial number in
``sweep_trials``. When a trial's run ends (succeeded, failed or cancelled), :func:`settle_trial`
(called by the lifecycle module wherever a run's state changes) tells the study the run's score
and asks it for the next trials while budget remains.

The study lives in the platform's database, in Optuna's own tables (``studies``, ``trials``...;
created on first use, left out of Alembic's autogenerate). Optuna's storage runs on the caller's
session connection, its commits being savepoints: telling, asking and queueing commit together
with the run's end, or not at all, and a SQLite writer never waits on itself.

Example:
    >>> sweep = create_sweep(session, actor=me, spec={"name": "lr", "config": cfg, "budget": 8,
    ...                      "parallelism": 2, "search": {"optimizer.lr": {"low": 1e-4, "high": 1e-2, "log": True}}})
    >>> sweep.queued_run_ids   # publish after commit; each run's end queues the next trial
    [1, 2]
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

import sqlalchemy as sa
import yaml
from pydantic import ValidationError
from sqlalchemy.orm import Session

from segcore import catalog
from segcore.config import field_problems, parse_config
from worker.db.base import utcnow
from worker.db.models import ExpansionKind, Run, RunStatus, Sweep, SweepStatus, SweepTrial
from worker.errors import ConfigError, InvalidFields, InvalidInput, NotFound, PermissionDenied
from worker.schemas import SweepPoint, SweepRead, SweepSpec, SweepTrialRead, SweepView
from worker.services import _study, access, admission, experiments
from worker.services._common import check_actor, check_name, check_priority, get_or_raise
from worker.services.audit import record_event
from worker.services.confinement import DataRoots

__all__ = [
    "create_sweep",
    "get_sweep",
    "list_sweeps",
    "advance_sweep",
    "cancel_sweep",
    "settle_trial",
    "sweep_view",
    "grid_view",
    "list_grid_experiments",
]

log = logging.getLogger(__name__)

_ENDED = {RunStatus.SUCCEEDED: "complete", RunStatus.FAILED: "failed", RunStatus.CANCELLED: "cancelled"}
_REFUSED = "the sweep was not created; fix these fields"


# ------------------------------------------------------------------ create


def _parse_spec(spec: SweepSpec | dict[str, Any] | str) -> SweepSpec:
    if isinstance(spec, SweepSpec):
        return spec
    if isinstance(spec, str):
        try:
            spec = yaml.safe_load(spec)
        except yaml.YAMLError as exc:
            raise InvalidInput(f"the sweep spec is not valid YAML ({type(exc).__name__}); "
                               "check its indentation") from exc
    if not isinstance(spec, dict):
        raise InvalidInput("a sweep spec is a mapping with name, config, search and budget (docs/sweeps.md)")
    try:
        return SweepSpec.model_validate(spec)
    except ValidationError as exc:
        raise InvalidFields(_REFUSED, field_problems(exc)) from exc


def create_sweep(
    session: Session, *, actor: int | None, spec: SweepSpec | dict[str, Any] | str, roots: DataRoots | None = None,
) -> SweepRead:
    """Validate a sweep, create its Optuna study and queue its first trials (``parallelism`` of them).

    The base config goes through the submit-time check, and each bound of the search space (each
    choice, ``low`` and ``high``) must give a valid config. The caller commits, then publishes
    ``result.queued_run_ids``.

    Raises:
        InvalidFields: the spec or the base config is invalid (every problem named by field).
        ConfigError: a value of the search space makes the config invalid (the path and value are named).
        PermissionDenied: the actor is a viewer, or the first trials would pass the active-run limit.
        NotFound: the actor or the dataset does not exist.
    """
    check_actor(session, actor)
    access.require_member(session, actor, "create sweeps")
    spec = _parse_spec(spec)
    name = check_name(spec.name, what="a sweep's name", max_chars=150)  # trial experiments add "-t<n>"
    cfg = admission.validate_submission(session, actor=actor, config=spec.config, dataset_id=spec.dataset_id,
                                        roots=roots)
    metric = spec.metric or cfg.evaluation.monitor
    if metric not in catalog.METRICS:
        raise InvalidInput(f"metric {metric!r} is not a validation metric; use one of {', '.join(catalog.METRICS)}")
    base = cfg.to_dict()
    base["evaluation"]["monitor"] = metric
    base["training"]["seed"] = spec.seed
    for path, param in spec.search.items():
        for value in param.extremes():
            try:
                parse_config(experiments.set_config_path(base, path, value))
            except ConfigError as exc:
                raise ConfigError(f"search value {str(value)[:60]!r} for {path}: {exc}") from exc
    check_priority(spec.priority)
    access.check_priority_allowed(session, actor, spec.priority)
    access.check_active_run_limit(session, actor, min(spec.parallelism, spec.budget))
    direction = spec.direction or ("minimize" if metric in catalog.MINIMIZED_METRICS else "maximize")
    stored = spec.model_copy(update={"name": name, "config": base, "metric": metric, "direction": direction})
    sweep = Sweep(name=name, study_name=f"segboard-{uuid.uuid4().hex}", spec=stored.model_dump(mode="json"),
                  budget=spec.budget, parallelism=spec.parallelism, metric=metric, direction=direction,
                  status=SweepStatus.RUNNING, owner_id=actor, dataset_id=spec.dataset_id, message="")
    session.add(sweep)
    session.flush()
    sweep.study_name = f"segboard-sweep-{sweep.id}-{sweep.study_name[-8:]}"
    session.flush()

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name=sweep.study_name, storage=_study.study_storage(session), direction=direction)
    record_event(session, actor=actor, action="sweep.create", object_kind="sweep", object_id=sweep.id,
                 detail={"name": name, "study_name": sweep.study_name, "budget": spec.budget,
                         "parallelism": spec.parallelism, "sampler": spec.sampler, "metric": metric,
                         "search": sorted(spec.search)})
    queued = _advance(session, sweep, roots=roots)
    return _read(session, sweep, queued)


# ------------------------------------------------------------------ the trials' life cycle


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:2000]


def _tell_ended(session: Session, sweep: Sweep, rows: list[SweepTrial], study: Any) -> None:
    """Tell the study about every trial whose run ended (or was deleted) since the last call."""
    from optuna.trial import TrialState

    ids = [r.run_id for r in rows if r.run_id is not None]
    runs = {i: (s, v) for i, s, v in session.execute(
        sa.select(Run.id, Run.status, Run.monitor_value).where(Run.id.in_(ids)))} if ids else {}
    now = utcnow()
    for row in rows:
        status, value = runs.get(row.run_id, (None, None)) if row.run_id is not None else (RunStatus.FAILED, None)
        if status not in _ENDED:
            continue
        if row.run_id is None:
            row.message = "its run was deleted before it ended"
        if status is RunStatus.SUCCEEDED and value is not None and math.isfinite(value):
            study.tell(row.trial_number, float(value), skip_if_finished=True)
            row.state, row.value = "complete", float(value)
        else:
            study.tell(row.trial_number, state=TrialState.FAIL, skip_if_finished=True)
            row.state = _ENDED[status] if status is not RunStatus.SUCCEEDED else "failed"
            if status is RunStatus.SUCCEEDED:
                row.message = f"the run recorded no {sweep.metric}"
        row.told_at = now


def _ask_one(session: Session, sweep: Sweep, spec: SweepSpec, study: Any, roots: DataRoots | None) -> int | None:
    """Ask the study for a trial and queue its run; the run's id, or None when its config was refused.

    Raises:
        PermissionDenied, NotFound: the owner may not queue now (the trial is told failed and not kept).
    """
    from optuna.trial import TrialState

    trial = study.ask(_study.distributions(spec))
    params = {k: (v.item() if hasattr(v, "item") else v) for k, v in trial.params.items()}
    cfg = dict(spec.config)
    for path, value in params.items():
        cfg = experiments.set_config_path(cfg, path, value)
    row = SweepTrial(sweep_id=sweep.id, trial_number=trial.number, params=params, message="")
    try:
        with session.begin_nested():
            exp = experiments.create_experiment(
                session, actor=sweep.owner_id, config=cfg,
                name=experiments.unique_name(session, f"{sweep.name}-t{trial.number}", taken_is_error=False),
                dataset_id=sweep.dataset_id, seeds=[spec.seed], priority=spec.priority,
                tags=[*spec.tags, "sweep"], note=f"trial {trial.number} of sweep {sweep.id} ({sweep.name})",
                roots=roots,
            )
    except (PermissionDenied, NotFound):
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        raise
    except (ConfigError, InvalidInput) as exc:  # this draw of the space gives an invalid config
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        row.state, row.message, row.told_at = "failed", _one_line(str(exc)), utcnow()
        session.add(row)
        return None
    row.experiment_id, row.run_id = exp.id, exp.run_ids[0]
    session.add(row)
    return exp.run_ids[0]


def _advance(session: Session, sweep: Sweep, *, roots: DataRoots | None = None) -> list[int]:
    """Tell the study about ended trials, queue new ones while budget and parallelism allow, and finish
    the sweep once every trial of its budget has ended. Returns the runs queued."""
    rows = list(session.scalars(sa.select(SweepTrial).where(SweepTrial.sweep_id == sweep.id)
                                .order_by(SweepTrial.trial_number)))
    open_rows = [r for r in rows if r.state is None]
    spec = SweepSpec.model_validate(sweep.spec)
    running = sweep.status is SweepStatus.RUNNING
    room = running and len(rows) < sweep.budget
    if not open_rows and not room:
        return []
    study = _study.load_study(session, sweep, spec, len(rows))
    _tell_ended(session, sweep, open_rows, study)
    if running:  # an asked trial without a row (its transaction failed half-way elsewhere) never ends
        from optuna.trial import TrialState

        numbers = {r.trial_number for r in rows}
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            if t.number not in numbers:
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
    active = sum(1 for r in rows if r.state is None)
    used = len(rows)
    queued: list[int] = []
    while running and used < sweep.budget and active < sweep.parallelism:
        try:
            access.check_active_run_limit(session, sweep.owner_id, 1)
            run_id = _ask_one(session, sweep, spec, study, roots)
        except (PermissionDenied, NotFound) as exc:
            sweep.message = _one_line(f"waiting to queue trial {used + 1}: {exc}")
            break
        used += 1
        if run_id is not None:
            queued.append(run_id)
            active += 1
    if queued:
        sweep.message = ""
    if running and used >= sweep.budget and active == 0:
        sweep.status, sweep.finished_at = SweepStatus.FINISHED, utcnow()
        record_event(session, actor=None, action="sweep.finish", object_kind="sweep", object_id=sweep.id,
                     detail={"trials": used})
        _notify_finished(session, sweep, used)
    sweep.updated_at = utcnow()
    session.flush()
    return queued


def _notify_finished(session: Session, sweep: Sweep, trials: int) -> None:
    """Tell the owner's hooks that the sweep spent its budget, with its best trial (docs/notifications.md)."""
    from worker.services.notifications import notify

    pick = sa.func.max if sweep.direction == "maximize" else sa.func.min
    best = session.scalar(sa.select(pick(SweepTrial.value)).where(SweepTrial.sweep_id == sweep.id))
    detail = f"{trials} trials" + (f", best {sweep.metric} {best:.4f}" if best is not None else "")
    notify(session, event="succeeded", object_kind="sweep", object_id=sweep.id, owner_id=sweep.owner_id,
           title=f'sweep {sweep.id} "{sweep.name}"', detail=detail, page=f"sweeps?sweep={sweep.id}")


def _locked(session: Session, sweep_id: int) -> Sweep:
    """The sweep, after a write to its row: concurrent advances of one sweep take turns (and SQLite's
    transaction has begun before Optuna's savepoints)."""
    session.execute(sa.update(Sweep).where(Sweep.id == sweep_id).values(updated_at=utcnow())
                    .execution_options(synchronize_session=False))
    sweep = get_or_raise(session, Sweep, sweep_id, "sweep", "list sweeps with `segboard sweep list`")
    session.refresh(sweep)
    return sweep


def settle_trial(session: Session, *, run_id: int) -> list[int]:
    """When ``run_id`` is a sweep's trial and has ended, tell the study its score and queue the next trials.

    Called by :mod:`worker.services.lifecycle` on every change of a run's state; does nothing for
    other runs, for runs still queued or running, and for a trial already told (so a second call
    for the same run does nothing). A problem of the sweep never undoes the run's end: it is
    written on the sweep (``message``) and :func:`advance_sweep` retries. Returns the runs queued,
    which the reaper publishes (they are queued and unpublished) unless the caller does.
    """
    found = session.execute(
        sa.select(SweepTrial.sweep_id, SweepTrial.state, Run.status).join(Run, Run.id == SweepTrial.run_id)
        .where(SweepTrial.run_id == run_id)
    ).one_or_none()
    if found is None or found.state is not None or found.status not in _ENDED:
        return []
    try:
        with session.begin_nested():
            return _advance(session, _locked(session, found.sweep_id))
    except Exception as exc:  # noqa: BLE001 - the run's end stands; the sweep says what went wrong
        log.warning("sweep %s: could not settle the trial of run %s: %s", found.sweep_id, run_id, exc)
        session.execute(sa.update(Sweep).where(Sweep.id == found.sweep_id).values(
            message=_one_line(f"could not tell the study about run {run_id}: {exc}; retry with "
                              f"`segboard sweep advance {found.sweep_id}`")))
        return []


def advance_sweep(session: Session, *, actor: int | None, sweep_id: int, roots: DataRoots | None = None) -> SweepRead:
    """Tell the study about ended trials and queue trials while budget remains (what every run's end does).

    For a sweep that was waiting (the active-run limit, a transient error). The caller commits,
    then publishes ``result.queued_run_ids``.

    Raises:
        NotFound: no such sweep.
        PermissionDenied: the actor neither owns the sweep nor is an admin.
    """
    check_actor(session, actor)
    sweep = get_or_raise(session, Sweep, sweep_id, "sweep", "list sweeps with `segboard sweep list`")
    access.require_owner(session, actor, sweep.owner_id, f"advance sweep {sweep.name!r}")
    sweep = _locked(session, sweep_id)
    queued = _advance(session, sweep, roots=roots)
    record_event(session, actor=actor, action="sweep.advance", object_kind="sweep", object_id=sweep.id,
                 detail={"queued_run_ids": queued})
    return _read(session, sweep, queued)


def cancel_sweep(session: Session, *, actor: int | None, sweep_id: int) -> SweepRead:
    """Stop a sweep: no more trials are queued, and its queued and running trial runs are cancelled.

    Raises:
        NotFound: no such sweep.
        PermissionDenied: the actor neither owns the sweep nor is an admin.
    """
    from worker.services import lifecycle

    check_actor(session, actor)
    sweep = get_or_raise(session, Sweep, sweep_id, "sweep", "list sweeps with `segboard sweep list`")
    access.require_owner(session, actor, sweep.owner_id, f"cancel sweep {sweep.name!r}")
    sweep = _locked(session, sweep_id)
    if sweep.status is SweepStatus.RUNNING:
        sweep.status, sweep.finished_at = SweepStatus.CANCELLED, utcnow()
        session.flush()
    live = session.scalars(
        sa.select(Run.id).join(SweepTrial, SweepTrial.run_id == Run.id)
        .where(SweepTrial.sweep_id == sweep.id, Run.status.in_([RunStatus.QUEUED, RunStatus.RUNNING]))
    ).all()
    for rid in live:
        lifecycle.request_cancel(session, run_id=rid, actor=actor)
    record_event(session, actor=actor, action="sweep.cancel", object_kind="sweep", object_id=sweep.id,
                 detail={"cancelled_run_ids": list(live)})
    return _read(session, sweep, [])


# ------------------------------------------------------------------ reading


def _read(session: Session, sweep: Sweep, queued: list[int]) -> SweepRead:
    rows = list(session.scalars(sa.select(SweepTrial).where(SweepTrial.sweep_id == sweep.id)
                                .order_by(SweepTrial.trial_number)))
    ids = [r.run_id for r in rows if r.run_id is not None]
    status = dict(session.execute(sa.select(Run.id, Run.status).where(Run.id.in_(ids))).all()) if ids else {}
    trials = [
        SweepTrialRead(number=r.trial_number, params=r.params, experiment_id=r.experiment_id, run_id=r.run_id,
                       run_status=status.get(r.run_id), state=r.state, value=r.value, message=r.message,
                       created_at=r.created_at)
        for r in rows
    ]
    scored = [t for t in trials if t.value is not None]
    best = (max if sweep.direction == "maximize" else min)(scored, key=lambda t: t.value or 0.0) if scored else None
    return SweepRead(
        id=sweep.id, name=sweep.name, study_name=sweep.study_name, spec=sweep.spec, budget=sweep.budget,
        parallelism=sweep.parallelism, metric=sweep.metric, direction=sweep.direction, status=sweep.status,
        owner_id=sweep.owner_id, dataset_id=sweep.dataset_id, message=sweep.message, created_at=sweep.created_at,
        finished_at=sweep.finished_at, trials=trials, best_value=best.value if best else None,
        best_trial=best.number if best else None, queued_run_ids=list(queued),
    )


def get_sweep(session: Session, *, sweep_id: int) -> SweepRead:
    """One sweep with its trials (parameters, run, state and score).

    Raises:
        NotFound: no such sweep.
    """
    return _read(session, get_or_raise(session, Sweep, sweep_id, "sweep", "list sweeps with `segboard sweep list`"),
                 [])


def list_sweeps(session: Session, *, owner_id: int | None = None, dataset_id: int | None = None,
                limit: int = 100) -> list[SweepRead]:
    """Sweeps, newest first, with their trials."""
    q = sa.select(Sweep)
    if owner_id is not None:
        q = q.where(Sweep.owner_id == owner_id)
    if dataset_id is not None:
        q = q.where(Sweep.dataset_id == dataset_id)
    return [_read(session, s, []) for s in session.scalars(q.order_by(Sweep.id.desc()).limit(limit))]


def sweep_view(session: Session, *, sweep_id: int) -> SweepView:
    """A sweep's trials as points: the searched values against the score (the run's monitored metric)."""
    sweep = get_sweep(session, sweep_id=sweep_id)
    monitor = {}
    ids = [t.run_id for t in sweep.trials if t.run_id is not None]
    if ids:
        monitor = dict(session.execute(sa.select(Run.id, Run.monitor_value).where(Run.id.in_(ids))).all())
    points = [
        SweepPoint(label=f"trial {t.number}", params=t.params,
                   score=t.value if t.value is not None else monitor.get(t.run_id),
                   status=t.state or (t.run_status.value if t.run_status else "queued"),
                   run_ids=[t.run_id] if t.run_id is not None else [], experiment_id=t.experiment_id)
        for t in sweep.trials
    ]
    return SweepView(kind="sweep", id=sweep.id, name=sweep.name, metric=sweep.metric, direction=sweep.direction,
                     params=list(sweep.spec.get("search", {})), points=points)


def _status_of(counts: dict[str, int]) -> str:
    live = {k: v for k, v in counts.items() if v}
    if len(live) == 1:
        return next(iter(live))
    return ", ".join(f"{v} {k}" for k, v in sorted(live.items())) or "empty"


def grid_view(session: Session, *, experiment_id: int) -> SweepView:
    """A grid experiment's groups as points: the axis values against the group's score (its out-of-fold
    score when built, else the mean of its runs' monitored metric).

    Raises:
        NotFound: no such experiment.
        InvalidInput: the experiment is not a grid.
    """
    exp = experiments.get_experiment(session, experiment_id=experiment_id)
    if exp.expansion.kind is not ExpansionKind.GRID:
        raise InvalidInput(f"experiment {exp.name!r} is not an ablation grid; open it on the leaderboard")
    paths = [a.path for a in exp.expansion.axes]
    points = []
    for g in exp.groups:
        params = g.axis_value if len(paths) > 1 and isinstance(g.axis_value, dict) else {paths[0]: g.axis_value}
        stat = g.metrics.get(g.monitor_metric)
        score = g.oof_score if g.oof_score is not None else (stat.mean if stat is not None else None)
        points.append(SweepPoint(label=g.label, params=params, score=score, status=_status_of(g.status_counts),
                                 run_ids=list(g.run_ids), experiment_id=exp.id))
    metric = exp.groups[0].monitor_metric if exp.groups else "miou"
    return SweepView(kind="grid", id=exp.id, name=exp.name, metric=metric,
                     direction="minimize" if metric in catalog.MINIMIZED_METRICS else "maximize",
                     params=paths, points=points)


def list_grid_experiments(session: Session, *, dataset_id: int | None = None, limit: int = 100) -> list[Any]:
    """Ablation-grid experiments, newest first (``ExperimentRead`` without groups), among the latest 500."""
    return [e for e in experiments.list_experiments(session, dataset_id=dataset_id, limit=500)
            if e.expansion.kind is ExpansionKind.GRID][:limit]
