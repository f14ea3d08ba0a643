"""The leaderboard: runs, fold/seed groups, ensembles and pseudo-label students in one table.

How well each validation metric kind tracks the public score is :mod:`worker.services.public_scores`.

Each row kind is one aggregate query (metrics are read from the JSON ``best_metrics`` by the
database, public scores are grouped per source in a subquery), so the cost does not grow with
the number of rows shown: no query per row.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.models import (
    METRIC_KINDS,
    Ensemble,
    Experiment,
    PseudoRound,
    Run,
    RunGroup,
    RunStatus,
    Submission,
)
from worker.errors import InvalidInput
from worker.schemas import LeaderboardRow, RowKind
from worker.services._common import json_array_contains
from worker.services.groups import sample_std
from worker.services.public_scores import source_key

__all__ = ["SORT_KEYS", "leaderboard", "validated_on"]

SORT_KEYS: tuple[str, ...] = ("val", *METRIC_KINDS, "public", "gap", "created_at")
_ALL_KINDS = tuple(k.value for k in RowKind)
_KIND_ORDER = {RowKind.GROUP: 0, RowKind.ENSEMBLE: 1, RowKind.STUDENT: 2, RowKind.RUN: 3}


def _public_by(column: Any) -> Any:
    """Per source: the best public score and the number of submissions."""
    return (
        sa.select(
            column.label("sid"),
            sa.func.max(Submission.public_score).label("public"),
            sa.func.count(Submission.id).label("n_sub"),
        )
        .where(column.is_not(None))
        .group_by(column)
        .subquery()
    )


def _gap(public: float | None, val: float | None) -> float | None:
    return public - val if public is not None and val is not None else None


def _run_rows(
    session: Session,
    *,
    kinds: set[str],
    filters: list[Any],
    sort: str,
    descending: bool,
    limit: int,
) -> list[LeaderboardRow]:
    want_runs, want_students = "run" in kinds, "student" in kinds
    if not (want_runs or want_students):
        return []
    pub = _public_by(Submission.run_id)
    metric_cols = [Run.best_metrics[k].as_float().label(k) for k in METRIC_KINDS]
    sort_expr = {
        "val": Run.monitor_value,
        "public": pub.c.public,
        "gap": pub.c.public - Run.monitor_value,
        "created_at": Run.created_at,
        **{k: Run.best_metrics[k].as_float() for k in METRIC_KINDS},
    }[sort]
    q = (
        sa.select(
            Run.id, Run.name, Run.dataset_id, Run.owner_id, Run.arch, Run.encoder, Run.tags, Run.monitor_metric,
            Run.monitor_value, Run.experiment_id, Run.group_id, Run.parent_run_id, Run.pseudo_round_id,
            Run.created_at, PseudoRound.teacher_kind, PseudoRound.teacher_id, pub.c.public, pub.c.n_sub,
            Run.fold, Run.config["data"]["split"]["kind"].as_string().label("split_kind"),
            Run.config["data"]["split"]["n_folds"].as_integer().label("split_folds"),
            *metric_cols,
        )
        .outerjoin(pub, pub.c.sid == Run.id)
        .outerjoin(PseudoRound, PseudoRound.id == Run.pseudo_round_id)
        .where(Run.status == RunStatus.SUCCEEDED, *filters)
    )
    if not want_runs:
        q = q.where(Run.pseudo_round_id.is_not(None))
    if not want_students:
        q = q.where(Run.pseudo_round_id.is_(None))
    order = sort_expr.desc() if descending else sort_expr.asc()
    q = q.order_by(sa.nulls_last(order), Run.id).limit(limit)
    rows = []
    for r in session.execute(q).mappings():
        student = r["pseudo_round_id"] is not None
        if student:
            parent = f"{r['teacher_kind'].value}:{r['teacher_id']}"
        elif r["parent_run_id"] is not None:
            parent = f"run:{r['parent_run_id']}"
        else:
            parent = None
        rows.append(
            LeaderboardRow(
                kind=RowKind.STUDENT if student else RowKind.RUN,
                id=r["id"], name=r["name"], dataset_id=r["dataset_id"], owner_id=r["owner_id"], arch=r["arch"],
                encoder=r["encoder"], tags=list(r["tags"] or []), monitor_metric=r["monitor_metric"],
                metrics={k: r[k] for k in METRIC_KINDS}, val_score=r["monitor_value"],
                public_score=r["public"], n_submissions=r["n_sub"] or 0, gap=_gap(r["public"], r["monitor_value"]),
                experiment_id=r["experiment_id"], group_id=r["group_id"], parent=parent, created_at=r["created_at"],
                validated_on=validated_on(r["split_kind"], r["fold"], r["split_folds"]),
            )
        )
    return rows


def validated_on(split_kind: str | None, fold: int | None, n_folds: int | None) -> str:
    """Which images a run's validation score is on, in words (fold runs see one fold's images only)."""
    if split_kind == "kfold" and fold is not None:
        return f"fold {fold + 1} of {n_folds}" if n_folds else f"fold {fold + 1}"
    return "predefined" if split_kind == "predefined" else "hold-out"


def _group_rows(
    session: Session, *, filters: list[Any], sort: str, descending: bool, limit: int
) -> list[LeaderboardRow]:
    done = Run.status == RunStatus.SUCCEEDED
    cols: list[Any] = [
        Run.group_id.label("gid"),
        sa.func.count(Run.id).label("n_total"),
        sa.func.count(sa.case((done, 1))).label("n_done"),
        sa.func.min(Run.arch).label("arch"),
        sa.func.min(Run.encoder).label("encoder"),
        sa.func.avg(sa.case((done, Run.monitor_value))).label("monitor_mean"),
        sa.func.min(Run.pseudo_round_id).label("pseudo_round_id"),
        sa.func.min(Run.parent_run_id).label("parent_run_id"),
    ]
    for k in METRIC_KINDS:
        v = sa.case((done, Run.best_metrics[k].as_float()))
        cols += [
            sa.func.avg(v).label(f"{k}_mean"), sa.func.avg(v * v).label(f"{k}_sq"), sa.func.count(v).label(f"{k}_n")
        ]
    agg = sa.select(*cols).where(Run.group_id.is_not(None), *filters).group_by(Run.group_id).subquery()
    pub = _public_by(Submission.group_id)
    q = (
        sa.select(
            RunGroup.id, RunGroup.label, RunGroup.experiment_id, RunGroup.dataset_id, RunGroup.owner_id,
            RunGroup.monitor_metric, RunGroup.oof_score, RunGroup.created_at, Experiment.name.label("exp_name"),
            Experiment.tags.label("tags"), PseudoRound.teacher_kind, PseudoRound.teacher_id,
            pub.c.public, pub.c.n_sub, agg,
        )
        .join(agg, agg.c.gid == RunGroup.id)
        .join(Experiment, Experiment.id == RunGroup.experiment_id)
        .outerjoin(PseudoRound, PseudoRound.id == agg.c.pseudo_round_id)
        .outerjoin(pub, pub.c.sid == RunGroup.id)
        # a group of one run would repeat its run's row
        .where(agg.c.n_total > 1, agg.c.n_done >= 1)
    )
    val = sa.func.coalesce(RunGroup.oof_score, agg.c.monitor_mean)
    sort_expr = {
        "val": val,
        "public": pub.c.public,
        "gap": pub.c.public - val,
        "created_at": RunGroup.created_at,
        **{k: agg.c[f"{k}_mean"] for k in METRIC_KINDS},
    }[sort]
    q = q.order_by(sa.nulls_last(sort_expr.desc() if descending else sort_expr.asc()), RunGroup.id).limit(limit)
    rows = []
    for r in session.execute(q).mappings():
        metrics = {k: r[f"{k}_mean"] for k in METRIC_KINDS}
        std = {k: sample_std(r[f"{k}_n"], r[f"{k}_mean"], r[f"{k}_sq"]) for k in METRIC_KINDS}
        val = r["oof_score"] if r["oof_score"] is not None else r["monitor_mean"]
        if r["teacher_kind"] is not None:
            parent = f"{r['teacher_kind'].value}:{r['teacher_id']}"
        elif r["parent_run_id"] is not None:
            parent = f"run:{r['parent_run_id']}"
        else:
            parent = None
        rows.append(
            LeaderboardRow(
                kind=RowKind.GROUP, id=r["id"], name=f"{r['exp_name']} [{r['label']}]", dataset_id=r["dataset_id"],
                owner_id=r["owner_id"], arch=r["arch"], encoder=r["encoder"], tags=list(r["tags"] or []),
                monitor_metric=r["monitor_metric"], metrics=metrics, metrics_std=std, n_runs=r["n_done"],
                oof_score=r["oof_score"], val_score=val, public_score=r["public"], n_submissions=r["n_sub"] or 0,
                gap=_gap(r["public"], val), experiment_id=r["experiment_id"], group_id=r["id"], parent=parent,
                created_at=r["created_at"],
                validated_on="out-of-fold" if r["oof_score"] is not None else "mean of its runs",
            )
        )
    return rows


def _ensemble_rows(
    session: Session,
    *,
    dataset_id: int | None,
    owner_id: int | None,
    sort: str,
    descending: bool,
    limit: int,
) -> list[LeaderboardRow]:
    pub = _public_by(Submission.ensemble_id)
    metric_cols = [Ensemble.val_metrics[k].as_float().label(k) for k in METRIC_KINDS]
    q = sa.select(
        Ensemble.id, Ensemble.name, Ensemble.dataset_id, Ensemble.owner_id, Ensemble.monitor_metric,
        Ensemble.val_score, Ensemble.members, Ensemble.created_at, pub.c.public, pub.c.n_sub, *metric_cols,
    ).outerjoin(pub, pub.c.sid == Ensemble.id)
    if dataset_id is not None:
        q = q.where(Ensemble.dataset_id == dataset_id)
    if owner_id is not None:
        q = q.where(Ensemble.owner_id == owner_id)
    sort_expr = {
        "val": Ensemble.val_score,
        "public": pub.c.public,
        "gap": pub.c.public - Ensemble.val_score,
        "created_at": Ensemble.created_at,
        **{k: Ensemble.val_metrics[k].as_float() for k in METRIC_KINDS},
    }[sort]
    q = q.order_by(sa.nulls_last(sort_expr.desc() if descending else sort_expr.asc()), Ensemble.id).limit(limit)
    rows = []
    for r in session.execute(q).mappings():
        members = r["members"] or []
        rows.append(
            LeaderboardRow(
                kind=RowKind.ENSEMBLE, id=r["id"], name=r["name"], dataset_id=r["dataset_id"], owner_id=r["owner_id"],
                monitor_metric=r["monitor_metric"], metrics={k: r[k] for k in METRIC_KINDS}, n_runs=len(members),
                val_score=r["val_score"], public_score=r["public"], n_submissions=r["n_sub"] or 0,
                gap=_gap(r["public"], r["val_score"]),
                parent=", ".join(f"{m['kind']}:{m['id']}" for m in members) or None, created_at=r["created_at"],
                validated_on="members' images",
            )
        )
    return rows


def _source_vals(session: Session, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], float | None]:
    """The validation score of runs, groups and ensembles (three queries at most)."""
    by_kind: dict[str, set[int]] = defaultdict(set)
    for kind, i in keys:
        by_kind[kind].add(i)
    out: dict[tuple[str, int], float | None] = {}
    if by_kind["run"]:
        for i, v in session.execute(sa.select(Run.id, Run.monitor_value).where(Run.id.in_(by_kind["run"]))):
            out[("run", i)] = v
    if by_kind["group"]:
        mean = (
            sa.select(Run.group_id.label("gid"), sa.func.avg(Run.monitor_value).label("m"))
            .where(Run.group_id.in_(by_kind["group"]), Run.status == RunStatus.SUCCEEDED)
            .group_by(Run.group_id)
            .subquery()
        )
        for i, oof, m in session.execute(
            sa.select(RunGroup.id, RunGroup.oof_score, mean.c.m)
            .outerjoin(mean, mean.c.gid == RunGroup.id)
            .where(RunGroup.id.in_(by_kind["group"]))
        ):
            out[("group", i)] = oof if oof is not None else m
    if by_kind["ensemble"]:
        for i, v in session.execute(
            sa.select(Ensemble.id, Ensemble.val_score).where(Ensemble.id.in_(by_kind["ensemble"]))
        ):
            out[("ensemble", i)] = v
    return out


def _flag(session: Session, rows: list[LeaderboardRow]) -> list[LeaderboardRow]:
    """Set ``public_up_val_down`` on rows whose public score rose while validation fell.

    The reference is the row's parent (the run it was cloned or resumed from, or the pseudo-label
    teacher) when that has a public score, else the previous scored submission on the dataset.
    """
    scored = [r for r in rows if r.public_score is not None and r.val_score is not None]
    if not scored:
        return rows
    subs = session.execute(
        sa.select(
            Submission.id, Submission.run_id, Submission.group_id, Submission.ensemble_id, Submission.dataset_id,
            Submission.public_score, Submission.created_at,
        )
        .where(Submission.public_score.is_not(None))
        .order_by(Submission.created_at, Submission.id)
    ).all()
    best_public: dict[tuple[str, int], float] = {}
    best_sub: dict[tuple[str, int], Any] = {}
    by_dataset: dict[int | None, list[Any]] = defaultdict(list)
    for s in subs:
        key = source_key(s.run_id, s.group_id, s.ensemble_id)
        if key not in best_public or s.public_score > best_public[key]:
            best_public[key] = s.public_score
            best_sub[key] = s
        by_dataset[s.dataset_id].append((s, key))

    refs: dict[tuple[str, int], tuple[tuple[str, int], str]] = {}
    for row in scored:
        key = (RowKind.RUN.value if row.kind is RowKind.STUDENT else row.kind.value, row.id)
        parent = row.parent if row.kind is not RowKind.ENSEMBLE else None
        if parent is not None and ":" in parent:
            pkind, pid = parent.split(":", 1)
            pkey = (pkind, int(pid))
            if pkey in best_public:
                refs[key] = (pkey, f"parent {pkind}:{pid}")
                continue
        mine = best_sub.get(key)
        if mine is None:
            continue
        previous = None
        for s, skey in by_dataset[row.dataset_id]:
            if (s.created_at, s.id) >= (mine.created_at, mine.id):
                break
            if skey != key:
                previous = (s, skey)
        if previous is not None:
            s, skey = previous
            refs[key] = (skey, f"previous submission {s.id} ({skey[0]}:{skey[1]})")
    vals = _source_vals(session, {ref for ref, _ in refs.values()})
    out = []
    for row in rows:
        key = (RowKind.RUN.value if row.kind is RowKind.STUDENT else row.kind.value, row.id)
        if key in refs and row.public_score is not None and row.val_score is not None:
            ref, label = refs[key]
            ref_val = vals.get(ref)
            ref_public = best_public.get(ref)
            if ref_val is not None and ref_public is not None:
                flagged = row.public_score > ref_public and row.val_score < ref_val
                row = row.model_copy(update={"public_up_val_down": flagged, "flag_reference": label})
        out.append(row)
    return out


def _sort_value(row: LeaderboardRow, sort: str) -> Any:
    if sort == "val":
        return row.val_score
    if sort == "public":
        return row.public_score
    if sort == "gap":
        return row.gap
    if sort == "created_at":
        return row.created_at.timestamp()
    return row.metrics.get(sort)


def leaderboard(
    session: Session,
    *,
    dataset_id: int | None = None,
    owner_id: int | None = None,
    arch: str | None = None,
    tag: str | None = None,
    kinds: Sequence[RowKind | str] = _ALL_KINDS,
    sort: str = "val",
    descending: bool = True,
    limit: int = 200,
    offset: int = 0,
) -> list[LeaderboardRow]:
    """Finished runs, fold/seed groups, ensembles and pseudo-label students, best first.

    Args:
        dataset_id, owner_id, arch, tag: Filters (an architecture or tag filter leaves out
            ensembles, which mix architectures and carry no tags).
        kinds: Row kinds to include: ``run``, ``group``, ``ensemble``, ``student``.
        sort: ``val`` (each row's monitor value; a group's OOF score when set), a metric kind
            (``miou``, ``miou_per_image``, ``dice``, ``dice_per_image``, ``pixel_accuracy``),
            ``public``, ``gap`` or ``created_at``. Rows without the value come last.
        descending: Highest first.
        limit: At most this many rows.
        offset: Skip this many rows of the ranking first (the rows of later pages).

    Raises:
        InvalidInput: unknown sort key or row kind, a limit below 1 or a negative offset.
    """
    if sort not in SORT_KEYS:
        raise InvalidInput(f"unknown sort key {sort!r}; use one of {', '.join(SORT_KEYS)}")
    try:
        wanted = {RowKind(k).value for k in kinds}
    except ValueError:
        raise InvalidInput(f"unknown row kind in {list(kinds)!r}; use {', '.join(_ALL_KINDS)}") from None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInput(f"limit must be a positive integer, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInput(f"offset must be a non-negative integer, got {offset!r}")
    depth = offset + limit  # each kind's best `depth` rows hold every row of the page
    filters: list[Any] = []
    if dataset_id is not None:
        filters.append(Run.dataset_id == dataset_id)
    if owner_id is not None:
        filters.append(Run.owner_id == owner_id)
    if arch is not None:
        filters.append(Run.arch == arch)
    if tag is not None:
        filters.append(json_array_contains(session, Run.tags, tag))

    rows = _run_rows(session, kinds=wanted, filters=filters, sort=sort, descending=descending, limit=depth)
    # each kind is ranked and cut to `depth` by the database; the merge below keeps the best overall
    if "group" in wanted:
        rows += _group_rows(session, filters=filters, sort=sort, descending=descending, limit=depth)
    if "ensemble" in wanted and arch is None and tag is None:
        rows += _ensemble_rows(
            session, dataset_id=dataset_id, owner_id=owner_id, sort=sort, descending=descending, limit=depth
        )

    def key(row: LeaderboardRow) -> tuple[Any, ...]:
        v = _sort_value(row, sort)
        missing = v is None or (isinstance(v, float) and math.isnan(v))
        num = 0.0 if missing else (-v if descending else v)
        return (missing, num, _KIND_ORDER[row.kind], row.id)

    rows.sort(key=key)
    return _flag(session, rows[offset:depth])
