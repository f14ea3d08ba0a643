"""Run groups: k folds x m seeds of one config, or one value of an ablation grid.

A group scores and ensembles like one model: its out-of-fold (OOF) store is the union of its fold
runs' validation predictions and its test store the mean of their test predictions.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.artifacts import Artifacts, open_local_dataset
from worker.db.models import METRIC_KINDS, Run, RunGroup, RunStatus
from worker.errors import InvalidInput
from worker.schemas import GroupRead, MetricStat
from worker.services import access
from worker.services._common import check_actor, get_or_raise
from worker.services.audit import record_event

__all__ = [
    "get_group",
    "list_groups",
    "group_reads",
    "set_group_oof",
    "refresh_group_metrics",
    "build_group_oof",
    "metric_stats",
    "sample_std",
]


def sample_std(n: int, mean: float | None, mean_sq: float | None) -> float | None:
    """Sample standard deviation from the mean and the mean of squares (0 for one value)."""
    if n == 0 or mean is None or mean_sq is None:
        return None
    if n == 1:
        return 0.0
    var = max(mean_sq - mean * mean, 0.0) * n / (n - 1)
    return math.sqrt(var)


def metric_stats(session: Session, group_ids: Iterable[int]) -> dict[int, dict[str, MetricStat]]:
    """Mean and std of every metric kind over each group's succeeded runs, in one query."""
    ids = list(group_ids)
    if not ids:
        return {}
    cols: list[Any] = [Run.group_id]
    for kind in METRIC_KINDS:
        v = Run.best_metrics[kind].as_float()
        cols += [sa.func.avg(v), sa.func.avg(v * v), sa.func.count(v)]
    q = (
        sa.select(*cols)
        .where(Run.group_id.in_(ids), Run.status == RunStatus.SUCCEEDED)
        .group_by(Run.group_id)
    )
    out: dict[int, dict[str, MetricStat]] = {}
    for row in session.execute(q):
        stats = {}
        for i, kind in enumerate(METRIC_KINDS):
            mean, mean_sq, n = row[1 + 3 * i], row[2 + 3 * i], row[3 + 3 * i]
            stats[kind] = MetricStat(mean=mean, std=sample_std(n, mean, mean_sq), n=n)
        out[row[0]] = stats
    return out


def group_reads(session: Session, groups: list[RunGroup]) -> list[GroupRead]:
    """Read models of ``groups`` with their run ids, status counts and metric statistics (3 queries)."""
    ids = [g.id for g in groups]
    run_ids: dict[int, list[int]] = defaultdict(list)
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    if ids:
        for gid, rid, status in session.execute(
            sa.select(Run.group_id, Run.id, Run.status).where(Run.group_id.in_(ids)).order_by(Run.id)
        ):
            run_ids[gid].append(rid)
            counts[gid][status.value] = counts[gid].get(status.value, 0) + 1
    stats = metric_stats(session, ids)
    out = []
    for g in groups:
        out.append(
            GroupRead(
                id=g.id,
                experiment_id=g.experiment_id,
                kind=g.kind,
                label=g.label,
                axis_value=g.axis_value,
                dataset_id=g.dataset_id,
                monitor_metric=g.monitor_metric,
                oof_store=g.oof_store,
                test_store=g.test_store,
                oof_metrics=g.oof_metrics,
                oof_score=g.oof_score,
                run_ids=run_ids.get(g.id, []),
                status_counts=counts.get(g.id, {}),
                metrics=stats.get(g.id, {}),
                created_at=g.created_at,
            )
        )
    return out


def get_group(session: Session, *, group_id: int) -> GroupRead:
    """One group with its runs and metric statistics.

    Raises:
        NotFound: no such group.
    """
    return group_reads(session, [get_or_raise(session, RunGroup, group_id, "group")])[0]


def list_groups(
    session: Session, *, experiment_id: int | None = None, dataset_id: int | None = None, limit: int = 500
) -> list[GroupRead]:
    """Groups, newest first, of an experiment or a dataset."""
    q = sa.select(RunGroup)
    if experiment_id is not None:
        q = q.where(RunGroup.experiment_id == experiment_id)
    if dataset_id is not None:
        q = q.where(RunGroup.dataset_id == dataset_id)
    groups = list(session.scalars(q.order_by(RunGroup.id.desc()).limit(limit)))
    return group_reads(session, groups)


def set_group_oof(
    session: Session,
    *,
    actor: int | None,
    group_id: int,
    oof_store: str | None = None,
    test_store: str | None = None,
    oof_metrics: dict[str, Any] | None = None,
) -> GroupRead:
    """Record a group's OOF/test probability stores and its OOF metrics (every kind + per_class).

    ``oof_score`` becomes ``oof_metrics[monitor_metric]``; arguments left None are kept.

    Raises:
        InvalidInput: ``oof_metrics`` is not a mapping of metric names to numbers.
        NotFound: no such group.
    """
    check_actor(session, actor)
    access.require_admin(session, actor, "record a group's out-of-fold store (its job does)")
    group = get_or_raise(session, RunGroup, group_id, "group")
    changed: dict[str, Any] = {}
    if oof_store is not None:
        group.oof_store = changed["oof_store"] = oof_store
    if test_store is not None:
        group.test_store = changed["test_store"] = test_store
    if oof_metrics is not None:
        if not isinstance(oof_metrics, dict):
            raise InvalidInput(f"oof_metrics must be a mapping of metric name to value, got {oof_metrics!r}")
        score = oof_metrics.get(group.monitor_metric)
        if score is not None and not isinstance(score, (int, float)):
            raise InvalidInput(f"oof_metrics[{group.monitor_metric!r}] must be a number, got {score!r}")
        group.oof_metrics = oof_metrics
        group.oof_score = float(score) if score is not None else None
        changed["oof_score"] = group.oof_score
    session.flush()
    record_event(session, actor=actor, action="group.set_oof", object_kind="group", object_id=group.id, detail=changed)
    return get_group(session, group_id=group.id)


def refresh_group_metrics(session: Session, *, actor: int | None, group_id: int) -> GroupRead:
    """Store the mean/std of each metric over the group's succeeded runs in ``aggregated_metrics``.

    The leaderboard computes these live; the stored copy is for exports and the run-detail page.
    """
    check_actor(session, actor)
    access.require_member(session, actor, "refresh group metrics")
    group = get_or_raise(session, RunGroup, group_id, "group")
    stats = metric_stats(session, [group_id]).get(group_id, {})
    group.aggregated_metrics = {k: s.model_dump() for k, s in stats.items()}
    session.flush()
    record_event(session, actor=actor, action="group.refresh_metrics", object_kind="group", object_id=group.id)
    return get_group(session, group_id=group.id)


def build_group_oof(session: Session, *, actor: int | None, group_id: int, artifacts: Artifacts,
                    dataset_root: str | None = None) -> GroupRead | None:
    """Assemble and score a group's out-of-fold store once every member run has ended.

    The OOF store is the union of the succeeded members' validation stores (an image predicted by
    several seeds gets their mean), written to ``<artifact_root>/groups/<id>/oof`` and scored with
    every metric kind against the dataset's ground truth. Reads stored probabilities only (fetched
    from a remote artifact root when it is one).

    Returns:
        The updated group, or None while members are still queued or running, or when no member
        left a validation store.

    Raises:
        NotFound: no such group.
    """
    from segcore.config import parse_config
    from segcore.oof import assemble_oof, score_store

    group = get_or_raise(session, RunGroup, group_id, "group")
    runs = session.scalars(sa.select(Run).where(Run.group_id == group.id).order_by(Run.id)).all()
    if not runs or any(r.status in (RunStatus.QUEUED, RunStatus.RUNNING) for r in runs):
        return None
    done = [r for r in runs if r.status is RunStatus.SUCCEEDED and artifacts.exists(r.val_store)]
    if not done:
        return None
    out = artifacts.local_dir("groups", str(group.id), "oof")
    reader = assemble_oof([artifacts.fetch(str(r.val_store)) for r in done], out,
                          meta={"group_id": group.id, "runs": [r.id for r in done]})
    cfg = parse_config(done[0].config)
    dataset = open_local_dataset(artifacts, cfg.data.source, classes=cfg.data.classes, task=cfg.data.task,
                                 ignore_index=cfg.data.ignore_index, dataset_root=dataset_root)
    metrics = score_store(reader, dataset.load_mask, ignore_index=cfg.data.ignore_index,
                          threshold=cfg.evaluation.threshold)
    metrics["num_images"] = len(reader.ids)
    metrics["members"] = [r.id for r in done]
    location = artifacts.push(out)
    return set_group_oof(session, actor=actor, group_id=group.id, oof_store=location, oof_metrics=metrics)
