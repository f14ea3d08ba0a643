"""How well each validation metric kind tracks the public leaderboard score, per dataset."""

from __future__ import annotations

import math
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.models import METRIC_KINDS, Ensemble, Experiment, Run, RunGroup, RunStatus, Submission
from worker.errors import InvalidInput
from worker.schemas import CorrelationPoint, CorrelationReport, MetricCorrelation, RowKind
from worker.services._common import get_or_raise

__all__ = ["correlation", "source_key"]


def source_key(run_id: int | None, group_id: int | None, ensemble_id: int | None) -> tuple[str, int]:
    """``("run"|"group"|"ensemble", id)`` of a submission's source."""
    if run_id is not None:
        return ("run", run_id)
    if group_id is not None:
        return ("group", group_id)
    return ("ensemble", ensemble_id)  # type: ignore[return-value]  # a submission has exactly one source


def _stats(metric: str, points: list[CorrelationPoint]) -> MetricCorrelation:
    from scipy import stats

    n = len(points)
    x = [p.val for p in points]
    y = [p.public for p in points]
    pearson = pearson_p = spearman = spearman_p = slope = intercept = None
    if n >= 3 and len(set(x)) > 1 and len(set(y)) > 1:
        pr = stats.pearsonr(x, y)
        sr = stats.spearmanr(x, y)
        lr = stats.linregress(x, y)
        pearson, pearson_p = float(pr.statistic), float(pr.pvalue)
        spearman, spearman_p = float(sr.statistic), float(sr.pvalue)
        slope, intercept = float(lr.slope), float(lr.intercept)
    return MetricCorrelation(
        metric=metric, n=n, pearson=pearson, pearson_p=pearson_p, spearman=spearman, spearman_p=spearman_p,
        slope=slope, intercept=intercept, points=points,
    )


def correlation(
    session: Session, *, dataset_id: int, metrics: Sequence[str] = METRIC_KINDS
) -> CorrelationReport:
    """Pearson and Spearman correlation of each validation metric kind with the public score.

    One point per scored source (run, group or ensemble) on the dataset: its validation metric
    (a group's OOF metric when recorded, else the mean over its runs) against its best public
    score. With fewer than 3 points, or a constant axis, the statistics are None.

    Raises:
        NotFound: no such dataset.
        InvalidInput: an unknown metric kind.
    """
    from worker.db.models import Dataset

    get_or_raise(session, Dataset, dataset_id, "dataset")
    unknown = [m for m in metrics if m not in METRIC_KINDS]
    if unknown:
        raise InvalidInput(f"unknown metric kinds {unknown}; use {', '.join(METRIC_KINDS)}")
    best: dict[tuple[str, int], float] = {}
    for run_id, group_id, ens_id, public in session.execute(
        sa.select(Submission.run_id, Submission.group_id, Submission.ensemble_id, Submission.public_score).where(
            Submission.dataset_id == dataset_id, Submission.public_score.is_not(None)
        )
    ):
        key = source_key(run_id, group_id, ens_id)
        best[key] = max(public, best.get(key, -math.inf))

    values: dict[tuple[str, int], tuple[RowKind, str, dict[str, float | None]]] = {}
    run_ids = [i for k, i in best if k == "run"]
    group_ids = [i for k, i in best if k == "group"]
    ens_ids = [i for k, i in best if k == "ensemble"]
    if run_ids:
        q = sa.select(Run.id, Run.name, Run.pseudo_round_id, *[Run.best_metrics[m].as_float() for m in metrics])
        for r in session.execute(q.where(Run.id.in_(run_ids))):
            kind = RowKind.STUDENT if r[2] is not None else RowKind.RUN
            values[("run", r[0])] = (kind, r[1], dict(zip(metrics, r[3:], strict=True)))
    if group_ids:
        mean = (
            sa.select(
                Run.group_id.label("gid"), *[sa.func.avg(Run.best_metrics[m].as_float()).label(m) for m in metrics]
            )
            .where(Run.group_id.in_(group_ids), Run.status == RunStatus.SUCCEEDED)
            .group_by(Run.group_id)
            .subquery()
        )
        q = (
            sa.select(RunGroup.id, RunGroup.label, Experiment.name, RunGroup.oof_metrics, *[mean.c[m] for m in metrics])
            .join(Experiment, Experiment.id == RunGroup.experiment_id)
            .outerjoin(mean, mean.c.gid == RunGroup.id)
            .where(RunGroup.id.in_(group_ids))
        )
        for r in session.execute(q):
            oof = r[3] or {}
            vals = {
                m: (oof.get(m) if isinstance(oof.get(m), (int, float)) else r[4 + i]) for i, m in enumerate(metrics)
            }
            values[("group", r[0])] = (RowKind.GROUP, f"{r[2]} [{r[1]}]", vals)
    if ens_ids:
        q = sa.select(Ensemble.id, Ensemble.name, *[Ensemble.val_metrics[m].as_float() for m in metrics])
        for r in session.execute(q.where(Ensemble.id.in_(ens_ids))):
            values[("ensemble", r[0])] = (RowKind.ENSEMBLE, r[1], dict(zip(metrics, r[2:], strict=True)))

    report = {}
    for m in metrics:
        points = []
        for key in sorted(best):
            if key not in values:
                continue
            kind, name, vals = values[key]
            v = vals.get(m)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            points.append(CorrelationPoint(kind=kind, id=key[1], name=name, val=float(v), public=best[key]))
        report[m] = _stats(m, points)
    return CorrelationReport(dataset_id=dataset_id, metrics=report)
