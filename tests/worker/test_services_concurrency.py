"""Many people submitting at once: 8 threads x 25 experiments, each thread with its own sessions."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from worker.db.models import AuditEvent, Experiment, Run, RunStatus
from worker.db.session import make_session_factory, session_scope
from worker.services import experiments, members

SUBMITTERS = 8
PER_SUBMITTER = 25


def test_concurrent_submitters_create_exactly_200_runs(pg_engine, config_dict):
    _submit_concurrently(pg_engine, config_dict)


def test_concurrent_submitters_on_embedded_sqlite(sqlite_engine, config_dict):
    """The embedded default: WAL and the busy timeout serialise the writers without errors."""
    _submit_concurrently(sqlite_engine, config_dict)


def _submit_concurrently(engine, config_dict) -> None:
    factory = make_session_factory(engine)
    with session_scope(factory) as s:
        actors = [members.create_member(s, actor=None, name=f"member-{i}").id for i in range(SUBMITTERS)]
    errors: list[BaseException] = []
    run_ids: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(SUBMITTERS)

    def submit(actor: int) -> None:
        try:
            start.wait(timeout=30)
            for i in range(PER_SUBMITTER):
                with session_scope(factory) as s:
                    exp = experiments.create_experiment(
                        s, actor=actor, name=f"m{actor}-{i}", config=config_dict, priority=i % 3
                    )
                with lock:
                    run_ids.extend(exp.run_ids)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=submit, args=(a,)) for a in actors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    total = SUBMITTERS * PER_SUBMITTER
    assert len(run_ids) == len(set(run_ids)) == total
    with factory() as s:
        assert s.scalar(sa.select(sa.func.count(Run.id))) == total
        assert s.scalar(sa.select(sa.func.count(Run.id)).where(Run.status == RunStatus.QUEUED)) == total
        assert s.scalar(sa.select(sa.func.count(Experiment.id))) == total
        assert s.scalar(
            sa.select(sa.func.count(AuditEvent.id)).where(AuditEvent.action == "experiment.create")
        ) == total
        per_actor = dict(s.execute(sa.select(Run.owner_id, sa.func.count()).group_by(Run.owner_id)).all())
        assert per_actor == {a: PER_SUBMITTER for a in actors}
