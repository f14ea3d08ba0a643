"""Statuses with one owner: jobs settle their ensembles, rounds and submissions; counters are columns."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from worker.db import migrate
from worker.db.base import utcnow
from worker.db.models import Ensemble, EnsembleMethod, LogLevel, PseudoRound, Run, RunLog, RunStatus, SourceKind
from worker.db.session import make_engine, session_scope
from worker.services import jobs, lifecycle
from worker.services.ensembles import get_ensemble
from worker.services.experiments import create_experiment
from worker.services.pseudo import get_pseudo_round
from worker.services.submissions import create_submission, get_submission

from .queue_fixtures import make_settings, migrated, tiny_config

SOURCE = {"format": "coco", "root": "for-status-tests"}  # under the dataset root; never read


@pytest.fixture
def factory(tmp_path: Path) -> Any:
    f = migrated(make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 's.db'}", redis_url=None))
    yield f
    f.kw["bind"].dispose()


def _run_id(factory: Any) -> int:
    with session_scope(factory) as s:
        return create_experiment(s, actor=None, config=tiny_config(SOURCE)).run_ids[0]


def _owners(factory: Any) -> tuple[int, int, int]:
    run_id = _run_id(factory)
    with session_scope(factory) as s:
        ens = Ensemble(name="e", method=EnsembleMethod.SOFT, members=[], status=RunStatus.QUEUED)
        rnd = PseudoRound(name="p", teacher_kind=SourceKind.RUN, teacher_id=run_id, params={})
        s.add_all([ens, rnd])
        s.flush()
        sub = create_submission(s, actor=None, run_id=run_id)
        return ens.id, rnd.id, sub.id


def _job(factory: Any, kind: str, target: dict[str, Any]) -> int:
    with session_scope(factory) as s:
        return jobs.create_job(s, actor=None, kind=kind, target=target).id


def _statuses(factory: Any, ens: int, rnd: int, sub: int) -> list[tuple[RunStatus, str | None]]:
    with session_scope(factory) as s:
        reads = [get_ensemble(s, ensemble_id=ens), get_pseudo_round(s, round_id=rnd),
                 get_submission(s, submission_id=sub)]
    return [(r.status, r.error_message) for r in reads]


def test_a_failed_job_fails_its_ensemble_round_and_submission(factory: Any) -> None:
    ens, rnd, sub = _owners(factory)
    assert [st for st, _ in _statuses(factory, ens, rnd, sub)] == [RunStatus.QUEUED] * 3
    ids = [_job(factory, "ensemble", {"ensemble_id": ens}), _job(factory, "pseudo", {"round_id": rnd}),
           _job(factory, "submission", {"submission_id": sub})]
    tokens = []
    with session_scope(factory) as s:
        for job_id in ids:
            tokens.append(lifecycle.claim_job(s, job_id=job_id, worker_name="w", device="cpu", lease_s=30))
    assert [st for st, _ in _statuses(factory, ens, rnd, sub)] == [RunStatus.RUNNING] * 3
    with session_scope(factory) as s:
        for token in tokens:
            lifecycle.fail_job(s, token=token, error_message="out of disk: free space under the artifact root")
    for status, error in _statuses(factory, ens, rnd, sub):
        assert status is RunStatus.FAILED
        assert error is not None and "failed: out of disk" in error
    with session_scope(factory) as s:  # a person's requeue puts them back in the queue, error cleared
        lifecycle.requeue_job(s, job_id=ids[0])
    assert _statuses(factory, ens, rnd, sub)[0] == (RunStatus.QUEUED, None)
    with session_scope(factory) as s:
        token = lifecycle.claim_job(s, job_id=ids[0], worker_name="w", device="cpu", lease_s=30)
    with session_scope(factory) as s:
        lifecycle.finish_job(s, token=token, result={})
    assert _statuses(factory, ens, rnd, sub)[0] == (RunStatus.SUCCEEDED, None)


def test_a_cancelled_or_reaped_job_ends_its_owner_and_a_failed_member_prediction_fails_the_ensemble(
    factory: Any,
) -> None:
    ens, rnd, sub = _owners(factory)
    predict = _job(factory, "predict", {"run_ids": [1], "ensemble_id": ens})
    pseudo = _job(factory, "pseudo", {"round_id": rnd})
    submission = _job(factory, "submission", {"submission_id": sub})
    t = utcnow()
    with session_scope(factory) as s:
        lifecycle.request_cancel_job(s, job_id=pseudo)
        for i in range(lifecycle.MAX_WORKERS_LOST):
            lifecycle.claim_job(s, job_id=submission, worker_name=f"w{i}", device="cpu", lease_s=1, now=t)
            t += dt.timedelta(seconds=5)
            lifecycle.reap_jobs(s, now=t)
        token = lifecycle.claim_job(s, job_id=predict, worker_name="w", device="cpu", lease_s=30)
    assert _statuses(factory, ens, rnd, sub)[0][0] is RunStatus.QUEUED  # a running prediction leaves it queued
    with session_scope(factory) as s:
        lifecycle.fail_job(s, token=token, error_message="CUDA out of memory")
    (es, ee), (rs, re_), (ss, se) = _statuses(factory, ens, rnd, sub)
    assert es is RunStatus.FAILED and "CUDA out of memory" in ee
    assert rs is RunStatus.CANCELLED and "cancelled" in re_
    assert ss is RunStatus.FAILED and f"died {lifecycle.MAX_WORKERS_LOST} times" in se


def test_attempt_counts_every_requeue_and_release_and_lost_count_is_a_column(factory: Any) -> None:
    run_id = _run_id(factory)
    t = utcnow()
    with session_scope(factory) as s:  # a log line that merely looks like the reaper's counts for nothing
        s.add(RunLog(run_id=run_id, level=LogLevel.INFO, message="requeued: worker said hello", ts=t))
        s.add(RunLog(run_id=run_id, level=LogLevel.INFO, message="requeued: worker said hello again", ts=t))
    with session_scope(factory) as s:
        lifecycle.claim_run(s, run_id=run_id, worker_name="w1", device="cpu", lease_s=1, now=t)
    with session_scope(factory) as s:
        assert lifecycle.reap(s, now=t + dt.timedelta(seconds=5)) == [run_id]
    with session_scope(factory) as s:
        run = s.get(Run, run_id)
        assert run.status is RunStatus.QUEUED and (run.attempt, run.lost_count) == (1, 1)
        token = lifecycle.claim_run(s, run_id=run_id, worker_name="w2", device="cpu", lease_s=30)
    with session_scope(factory) as s:
        assert lifecycle.release(s, token=token, reason="worker shutting down")
    with session_scope(factory) as s:
        run = s.get(Run, run_id)
        assert (run.attempt, run.lost_count) == (2, 1)
        token = lifecycle.claim_run(s, run_id=run_id, worker_name="w3", device="cpu", lease_s=30)
        lifecycle.fail_run(s, token=token, error_message="boom")
    with session_scope(factory) as s:
        lifecycle.requeue(s, run_id=run_id)
    with session_scope(factory) as s:
        run = s.get(Run, run_id)
        assert (run.status, run.attempt, run.lost_count) == (RunStatus.QUEUED, 3, 0)


def test_a_dead_worker_s_run_is_requeued_at_once(factory: Any) -> None:
    run_id = _run_id(factory)
    with session_scope(factory) as s:
        lifecycle.claim_run(s, run_id=run_id, worker_name="box/cpu", device="cpu", lease_s=3600)
    with session_scope(factory) as s:  # the lease is far from expiring: only the supervisor's word counts
        assert lifecycle.reap(s) == []
        out = lifecycle.requeue_dead_worker(s, worker_names=["box/cpu"], reason="exited with code -9")
        assert [o.object_id for o in out] == [run_id]
    with session_scope(factory) as s:
        run = s.get(Run, run_id)
        assert (run.status, run.attempt, run.lost_count, run.worker_name) == (RunStatus.QUEUED, 1, 1, None)
        assert run.published_at is None  # the reaper's next pass publishes it
        assert lifecycle.requeue_dead_worker(s, worker_names=["box/cpu"]) == []


def _upgrade_with_data(url: str) -> None:
    migrate.upgrade(url, "0001")
    engine = make_engine(url)
    now = utcnow()
    try:
        with engine.begin() as c:
            c.execute(sa.text("INSERT INTO experiments (id, name, config, expansion, priority, tags, note, created_at)"
                              " VALUES (1, 'x', '{}', '{}', 0, '[]', '', :t)"), {"t": now})
            c.execute(sa.text(
                "INSERT INTO runs (id, experiment_id, name, config, arch, encoder, seed, monitor_metric, tags, "
                "status, priority, cancel_requested, attempt, created_at) VALUES "
                "(1, 1, 'r', '{}', 'unet', 'resnet18', 0, 'miou', '[]', 'queued', 0, false, 0, :t)"), {"t": now})
            for message in ("requeued: worker a stopped sending heartbeats", "requeued; it resumes",
                            "requeued: worker b stopped sending heartbeats", "claimed by c",
                            "requeued: worker c stopped sending heartbeats"):
                c.execute(sa.text("INSERT INTO run_logs (run_id, ts, level, message) VALUES (1, :t, 'info', :m)"),
                          {"t": now, "m": message})
            c.execute(sa.text("INSERT INTO ensembles (id, name, method, members, monitor_metric, status, note, "
                              "created_at) VALUES (1, 'e', 'soft', '[]', 'miou', 'queued', '', :t)"), {"t": now})
            c.execute(sa.text(
                "INSERT INTO jobs (id, kind, target, params, status, priority, cancel_requested, attempt, "
                "error_message, created_at) VALUES (1, 'ensemble', :target, '{}', 'failed', 0, false, 0, "
                "'a member store is missing', :t)"), {"t": now, "target": '{"ensemble_id": 1}'})
        migrate.upgrade(url)
        assert migrate.current(url) == migrate.head()
        assert migrate.schema_differences(url) == []
        with engine.connect() as c:
            assert c.execute(sa.text("SELECT lost_count, attempt FROM runs")).one() == (2, 0)
            status, error = c.execute(sa.text("SELECT status, error_message FROM ensembles")).one()
            assert status == "failed" and "a member store is missing" in error
        migrate.downgrade(url, "0001")
        assert migrate.current(url) == "0001"
    finally:
        engine.dispose()


def test_upgrade_from_0001_carries_the_counts_and_failed_jobs_over_on_sqlite(tmp_path: Path) -> None:
    _upgrade_with_data(f"sqlite:///{tmp_path / 'm.db'}")


def test_upgrade_from_0001_carries_the_counts_and_failed_jobs_over_on_postgresql(pg_database: Any) -> None:
    _upgrade_with_data(pg_database("up2"))
