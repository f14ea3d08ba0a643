"""Experiments: a validated config expanded into queued runs (k folds x m seeds, or an ablation grid).

Example:
    >>> exp = create_experiment(session, actor=me, name="unet-r18", config=cfg, n_folds=3, seeds=(0, 1))
    >>> len(exp.run_ids), len(exp.groups)   # publish exp.run_ids to the queue after commit
    (6, 1)
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from segcore import limits
from segcore.config import ExperimentConfig, parse_config
from segcore.errors import ConfigError
from worker.db.base import utcnow
from worker.db.models import (
    Dataset,
    ExpansionKind,
    Experiment,
    GroupKind,
    PseudoRound,
    Run,
    RunGroup,
    RunStatus,
)
from worker.errors import Conflict, InvalidInput
from worker.schemas import ExpansionPlan, ExpansionRead, ExperimentRead, GridSpec
from worker.services import access, admission
from worker.services._common import check_actor, check_name, check_priority, clean_tags, get_or_raise
from worker.services.audit import record_event
from worker.services.confinement import DataRoots
from worker.services.groups import group_reads

__all__ = [
    "unique_name",
    "create_experiment",
    "get_experiment",
    "list_experiments",
    "delete_experiment",
    "expand_configs",
    "plan_expansion",
    "set_config_path",
]

MAX_RUNS_PER_EXPERIMENT = limits.MAX_RUNS_PER_EXPERIMENT


def set_config_path(config: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``config`` with the dotted ``path`` set to ``value`` (intermediate sections created).

    Raises:
        InvalidInput: a segment of ``path`` goes through a value that is not a section.
    """
    out = copy.deepcopy(config)
    node = out
    parts = path.split(".")
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise InvalidInput(
                f"grid axis {path!r}: {'.'.join(parts[: i + 1])!r} is a value, not a section; "
                "use the full path of a field such as 'model.encoder'"
            )
        node = nxt
    node[parts[-1]] = value
    return out


def _validate(data: dict[str, Any], context: str) -> ExperimentConfig:
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{context}: {exc}") from exc


def _label_value(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def expand_configs(
    config: ExperimentConfig,
    *,
    n_folds: int = 1,
    seeds: Sequence[int] = (0,),
    grid: GridSpec | None = None,
) -> list[tuple[Any, str, list[tuple[int | None, int, ExperimentConfig]]]]:
    """Expand a config into groups of run configs, validating every one.

    Returns:
        ``[(axis_value, group_label, [(fold, seed, run_config), ...]), ...]``: one entry per grid
        value, or per combination of several axes' values (``axis_value`` is then ``{path: value}``);
        one entry without a grid. With ``n_folds > 1`` each run's ``data.split`` is a
        ``KFoldSplit`` with its fold (keeping the split's seed, stratification and group key);
        ``training.seed`` is the run's seed.

    Raises:
        ConfigError: a grid value or the fold split makes the config invalid (the field is named).
        InvalidInput: n_folds, seeds or the grid are malformed.
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or not (1 <= n_folds <= limits.MAX_FOLDS):
        raise InvalidInput(f"n_folds must be 1 (no cross-validation) or 2..{limits.MAX_FOLDS}, got {n_folds!r}")
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise InvalidInput(f"seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise InvalidInput(f"seeds must not repeat, got {seeds!r}")
    base = config.to_dict()
    variants: list[tuple[Any, str, dict[str, Any]]] = []
    if grid is None:
        variants.append((None, "", base))
    else:
        labels: dict[str, list[str]] = {}
        for ax in grid.axes:
            head = ax.path.split(".")[0]
            if head not in ExperimentConfig.model_fields:
                raise InvalidInput(
                    f"grid axis {ax.path!r} is not a config path; it must start with one of "
                    f"{', '.join(ExperimentConfig.model_fields)}"
                )
            labels[ax.path] = [_label_value(v) for v in ax.values]
            if len(set(labels[ax.path])) != len(labels[ax.path]):
                raise InvalidInput(f"grid values must differ (axis {ax.path}), got {ax.values!r}")
        single = len(grid.axes) == 1
        shown = [dict(zip(labels, combo, strict=True)) for combo in itertools.product(*labels.values())]
        for combo, names in zip(grid.combinations, shown, strict=True):
            variant = base
            for path, value in combo.items():
                variant = set_config_path(variant, path, value)
            label = ", ".join(f"{path}={name}" for path, name in names.items())
            if single:
                _validate(variant, f"grid value {names[grid.axis]} for {grid.axis}")
            else:
                _validate(variant, f"grid combination {label}")
            variants.append((combo[grid.axis] if single else combo, label, variant))

    out = []
    for value, label, variant in variants:
        runs = []
        split = variant["data"].get("split") or {}
        for fold in range(n_folds) if n_folds > 1 else [None]:
            for seed in seeds:
                d = copy.deepcopy(variant)
                if fold is not None:
                    d["data"]["split"] = {
                        "kind": "kfold",
                        "n_folds": n_folds,
                        "fold": fold,
                        "seed": split.get("seed", 0),
                        "stratify": split.get("stratify", True),
                        "group_key": split.get("group_key"),
                    }
                d["training"]["seed"] = seed
                run_cfg = _validate(d, f"fold {fold}, seed {seed}" if fold is not None else f"seed {seed}")
                if fold is None and run_cfg.data.split.kind == "kfold":
                    fold_of_run: int | None = run_cfg.data.split.fold
                else:
                    fold_of_run = fold
                runs.append((fold_of_run, seed, run_cfg))
        parts = [label] if label else []
        if n_folds > 1 or len(seeds) > 1:
            parts.append(
                f"{n_folds} fold{'s' if n_folds > 1 else ''} x {len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
            )
        out.append((value, " ".join(parts) or "single", runs))
    return out


def plan_expansion(
    *,
    n_folds: int = 1,
    seeds: Sequence[int] = (0,),
    grid: GridSpec | dict[str, Any] | None = None,
) -> ExpansionPlan:
    """How many groups and runs an experiment expands into, before anything is validated or queued.

    Runs are groups (grid values, or combinations of several axes' values; 1 without a grid)
    x folds x seeds; ``problem`` says why :func:`create_experiment` would refuse that many.

    Raises:
        InvalidInput: the grid is malformed.
    """
    if isinstance(grid, dict):
        try:
            grid = GridSpec.model_validate(grid)
        except Exception as exc:  # pydantic ValidationError: say what a grid looks like
            raise InvalidInput(f"grid must look like {{'axes': [{{'path': 'loss', 'values': [...]}}]}}: {exc}") from exc
    groups = len(grid.combinations) if grid is not None else 1
    folds = n_folds if isinstance(n_folds, int) and n_folds > 1 else 1
    runs = groups * folds * max(len(list(seeds)), 1)
    problem = None
    if runs > MAX_RUNS_PER_EXPERIMENT:
        problem = (f"this experiment expands into {runs} runs, more than {MAX_RUNS_PER_EXPERIMENT}; "
                   "use fewer folds, seeds or grid values")
    return ExpansionPlan(runs=runs, groups=groups, n_folds=folds, n_seeds=max(len(list(seeds)), 1),
                         max_runs=MAX_RUNS_PER_EXPERIMENT, problem=problem)


def unique_name(session: Session, name: str, *, taken_is_error: bool) -> str:
    """``name`` when no experiment has it; else a Conflict (``taken_is_error``) or the first free ``name-2``, ``-3``...

    Example:
        >>> unique_name(session, "fast", taken_is_error=False)  # doctest: +SKIP
        'fast-2'
    """
    if session.scalar(sa.select(Experiment.id).where(Experiment.name == name)) is None:
        return name
    base = name[:190]
    taken = set(session.scalars(sa.select(Experiment.name).where(Experiment.name.startswith(f"{base}-",
                                                                                             autoescape=True))))
    k = 2
    while f"{base}-{k}" in taken:
        k += 1
    free = f"{base}-{k}"
    if taken_is_error:
        raise Conflict(f"an experiment named {name!r} exists already; choose another name, e.g. {free!r}")
    return free


def create_experiment(
    session: Session,
    *,
    actor: int | None,
    name: str | None = None,
    config: ExperimentConfig | dict[str, Any] | str,
    n_folds: int = 1,
    seeds: Iterable[int] = (0,),
    grid: GridSpec | dict[str, Any] | None = None,
    priority: int = 0,
    tags: Iterable[str] = (),
    note: str = "",
    dataset_id: int | None = None,
    parent_run_id: int | None = None,
    pseudo_round_id: int | None = None,
    roots: DataRoots | None = None,
) -> ExperimentRead:
    """Validate a config and expand it into queued runs grouped in run groups.

    Nothing is written when anything is invalid: :func:`worker.services.admission.validate_submission`
    checks the submission first. The caller commits, then publishes ``result.run_ids`` to the queue.

    Args:
        actor: The acting member (the runs' owner).
        name: The experiment's name, unique; default the config's ``name``, numbered (``fast-2``) when taken.
        config: An ``ExperimentConfig``, its dict, or YAML/JSON text.
        n_folds: 1, or k for k-fold cross-validation (one run per fold).
        seeds: One run per seed (per fold).
        grid: An ablation grid of one or more axes; each value (each combination of the axes' values)
            becomes its own group of folds x seeds.
        priority: Queue priority of the runs (higher runs first).
        tags: Labels for filtering the leaderboard (merged with the config's tags).
        note: Free text.
        dataset_id: The registered dataset; its classes must match the config's and its
            fingerprint is pinned in every run's ``data.fingerprint`` unless one is set.
        parent_run_id: The run this one was cloned from (lineage).
        pseudo_round_id: The pseudo-label round whose student these runs are.
        roots: Where data may be read from (``confinement.data_roots(settings)``); None: the current settings.

    Raises:
        ConfigError: the config (or a grid value) is invalid; the message names the field
            (an ``InvalidFields`` lists every field the submit-time check refused).
        InvalidInput: other arguments are malformed.
        NotFound: the actor, dataset, parent run or pseudo round does not exist.
        Conflict: ``name`` was given and another experiment has it.
    """
    check_actor(session, actor)
    access.require_member(session, actor, "queue experiments")
    seeds = list(seeds)
    if isinstance(grid, dict):
        try:
            grid = GridSpec.model_validate(grid)
        except Exception as exc:  # pydantic ValidationError: say what a grid looks like
            raise InvalidInput(f"grid must look like {{'axis': 'model.encoder', 'values': [...]}}: {exc}") from exc
    cfg = admission.validate_submission(session, actor=actor, config=config, dataset_id=dataset_id, n_folds=n_folds,
                                        seeds=seeds, grid=grid, roots=roots)
    check_priority(priority)
    access.check_priority_allowed(session, actor, priority)
    tags = clean_tags(list(cfg.tags) + clean_tags(tags))
    named = name is not None
    name = (name if name is not None else cfg.name).strip()
    if not name:
        raise InvalidInput("an experiment needs a name; type one")
    name = unique_name(session, check_name(name, what="an experiment's name"), taken_is_error=named)
    dataset = None
    if dataset_id is not None:
        dataset = get_or_raise(session, Dataset, dataset_id, "dataset", "register the dataset first")
        if cfg.data.fingerprint is None and dataset.fingerprint:
            cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"fingerprint": dataset.fingerprint})})
    if parent_run_id is not None:
        get_or_raise(session, Run, parent_run_id, "run")
    if pseudo_round_id is not None:
        get_or_raise(session, PseudoRound, pseudo_round_id, "pseudo-label round")

    seeds = list(seeds)
    expanded = expand_configs(cfg, n_folds=n_folds, seeds=seeds, grid=grid)
    total = sum(len(runs) for _, _, runs in expanded)
    if total > MAX_RUNS_PER_EXPERIMENT:
        raise InvalidInput(
            f"this experiment expands into {total} runs, more than {MAX_RUNS_PER_EXPERIMENT}; "
            "use fewer folds, seeds or grid values"
        )
    access.check_active_run_limit(session, actor, total)

    if grid is not None:
        expansion = {"kind": ExpansionKind.GRID.value, "n_folds": n_folds, "seeds": seeds,
                     "axis": grid.axis, "values": list(grid.values), "axes": [a.model_dump() for a in grid.axes]}
        group_kind = GroupKind.GRID_VALUE
    elif n_folds > 1 or len(seeds) > 1:
        expansion = {"kind": ExpansionKind.FOLDS_SEEDS.value, "n_folds": n_folds, "seeds": seeds,
                     "axis": None, "values": None}
        group_kind = GroupKind.FOLDS_SEEDS
    else:
        expansion = {"kind": ExpansionKind.SINGLE.value, "n_folds": 1, "seeds": seeds, "axis": None, "values": None}
        group_kind = GroupKind.SINGLE

    now = utcnow()
    exp = Experiment(
        name=name,
        config=cfg.to_dict(),
        owner_id=actor,
        dataset_id=dataset_id,
        expansion=expansion,
        priority=priority,
        tags=tags,
        note=note or "",
    )
    session.add(exp)
    try:
        session.flush()
    except sa.exc.IntegrityError:  # another submit took the name since the check above
        raise Conflict(f"an experiment named {name!r} was created meanwhile; choose another name") from None
    monitor = cfg.evaluation.monitor
    groups: list[RunGroup] = []
    runs: list[Run] = []
    for value, label, run_cfgs in expanded:
        group = RunGroup(
            experiment_id=exp.id,
            kind=group_kind,
            label=label,
            axis_value=value,
            dataset_id=dataset_id,
            owner_id=actor,
            monitor_metric=monitor,
        )
        session.add(group)
        groups.append(group)
        session.flush()
        for fold, seed, run_cfg in run_cfgs:
            parts = [name]
            if grid is not None:
                parts.append(label)
            if fold is not None and n_folds > 1:
                parts.append(f"fold{fold}")
            if len(seeds) > 1 or n_folds > 1:
                parts.append(f"seed{seed}")
            run = Run(
                experiment_id=exp.id,
                group_id=group.id,
                dataset_id=dataset_id,
                name=" / ".join(parts)[:300],
                config=run_cfg.to_dict(),
                arch=run_cfg.model.arch,
                encoder=run_cfg.model.encoder,
                fold=fold,
                seed=seed,
                status=RunStatus.QUEUED,
                priority=priority,
                queued_at=now,
                total_epochs=run_cfg.training.epochs,
                monitor_metric=run_cfg.evaluation.monitor,
                dataset_fingerprint=dataset.fingerprint if dataset is not None else None,
                parent_run_id=parent_run_id,
                pseudo_round_id=pseudo_round_id,
                tags=tags,
                owner_id=actor,
            )
            runs.append(run)
    session.add_all(runs)
    session.flush()
    run_ids = [r.id for r in runs]
    record_event(
        session, actor=actor, action="experiment.create", object_kind="experiment", object_id=exp.id,
        detail={"name": name, "expansion": expansion, "run_ids": run_ids, "group_ids": [g.id for g in groups],
                "parent_run_id": parent_run_id, "pseudo_round_id": pseudo_round_id},
    )
    return _read(session, exp, groups, run_ids)


def _read(session: Session, exp: Experiment, groups: list[RunGroup], run_ids: list[int]) -> ExperimentRead:
    return ExperimentRead(
        id=exp.id,
        name=exp.name,
        config=exp.config,
        owner_id=exp.owner_id,
        dataset_id=exp.dataset_id,
        expansion=ExpansionRead.model_validate(exp.expansion),
        priority=exp.priority,
        tags=list(exp.tags),
        note=exp.note,
        created_at=exp.created_at,
        groups=group_reads(session, groups),
        run_ids=run_ids,
    )


def get_experiment(session: Session, *, experiment_id: int) -> ExperimentRead:
    """One experiment with its groups and run ids.

    Raises:
        NotFound: no such experiment.
    """
    exp = get_or_raise(session, Experiment, experiment_id, "experiment")
    groups = list(session.scalars(sa.select(RunGroup).where(RunGroup.experiment_id == exp.id).order_by(RunGroup.id)))
    run_ids = list(session.scalars(sa.select(Run.id).where(Run.experiment_id == exp.id).order_by(Run.id)))
    return _read(session, exp, groups, run_ids)


def list_experiments(
    session: Session,
    *,
    owner_id: int | None = None,
    dataset_id: int | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[ExperimentRead]:
    """Experiments, newest first (without group statistics, for lists)."""
    q = sa.select(Experiment)
    if owner_id is not None:
        q = q.where(Experiment.owner_id == owner_id)
    if dataset_id is not None:
        q = q.where(Experiment.dataset_id == dataset_id)
    exps = list(session.scalars(q.order_by(Experiment.id.desc()).limit(limit).offset(offset)))
    ids = [e.id for e in exps]
    run_ids: dict[int, list[int]] = {i: [] for i in ids}
    if ids:
        for eid, rid in session.execute(
            sa.select(Run.experiment_id, Run.id).where(Run.experiment_id.in_(ids)).order_by(Run.id)
        ):
            run_ids[eid].append(rid)
    return [
        ExperimentRead(
            id=e.id, name=e.name, config=e.config, owner_id=e.owner_id, dataset_id=e.dataset_id,
            expansion=ExpansionRead.model_validate(e.expansion), priority=e.priority, tags=list(e.tags),
            note=e.note, created_at=e.created_at, groups=[], run_ids=run_ids[e.id],
        )
        for e in exps
    ]


def delete_experiment(session: Session, *, actor: int | None, experiment_id: int) -> list[int]:
    """Delete an experiment with its groups, runs, epoch metrics, logs and submissions.

    Rows only: files under the artifact root are left alone and nothing checks who uses the runs.
    :func:`worker.services.deletion.delete` is the full delete (files, dependants, pins) that
    ``segboard delete`` and the Storage page use.

    Returns:
        The ids of the deleted runs.

    Raises:
        Conflict: a run of the experiment is running; cancel it and wait for it to stop first.
        NotFound: no such experiment.
    """
    check_actor(session, actor)
    exp = get_or_raise(session, Experiment, experiment_id, "experiment")
    access.require_owner(session, actor, exp.owner_id, f"delete experiment {exp.name!r}")
    rows = session.execute(sa.select(Run.id, Run.status).where(Run.experiment_id == exp.id).order_by(Run.id)).all()
    running = [rid for rid, status in rows if status is RunStatus.RUNNING]
    if running:
        raise Conflict(
            f"runs {running} of experiment {exp.name!r} are running; cancel them and wait until they stop, "
            "then delete the experiment"
        )
    name = exp.name
    session.flush()
    # the database cascades to groups, runs and everything hanging off them
    session.execute(sa.delete(Experiment).where(Experiment.id == exp.id).execution_options(synchronize_session=False))
    session.expunge(exp)
    session.expire_all()
    run_ids = [rid for rid, _ in rows]
    record_event(session, actor=actor, action="experiment.delete", object_kind="experiment", object_id=experiment_id,
                 detail={"name": name, "run_ids": run_ids})
    return run_ids
