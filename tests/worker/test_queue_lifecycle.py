"""Run state transitions on SQLite and PostgreSQL: claims are atomic, tokens fence, the reaper recovers."""

from __future__ import annotations

import datetime as dt
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from worker.db.base import utcnow
from worker.db.models import AuditEvent, EpochMetric, Run, RunLog, RunStatus
from worker.db.session import session_scope
from worker.errors import Conflict, NotFound
from worker.services import lifecycle
from worker.services.experiments import create_experiment
from worker.services.lifecycle import LeaseState

from .queue_fixtures import make_settings, migrated, q_pg_url, tiny_config, wait_for  # noqa: F401

SOURCE = {"format": "coco", "root": "for-state-tests"}  # under the dataset root; never read


@pytest.fixture(params=["sqlite", "postgresql"])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'q.db'}"
    else:
        url = request.getfixturevalue("q_pg_url")
    settings = make_settings(tmp_path, database_url=url, redis_url=None)
    f = migrated(settings)
    yield f
    if request.param == "postgresql":  # the database is shared by the session: leave it empty
        with session_scope(f) as s:
            for table in ("run_logs", "epoch_metrics", "runs", "run_groups", "experiments", "jobs", "audit_events",
                          "worker_nodes"):
                s.execute(sa.text(f"DELETE FROM {table}"))
    f.kw["bind"].dispose()


def _submit(factory: Any, n: int = 1, priority: int = 0) -> list[int]:
    with session_scope(factory) as s:
        exp = create_experiment(s, actor=None, config=tiny_config(SOURCE), seeds=list(range(n)), priority=priority)
    return list(exp.run_ids)


def _run(factory: Any, run_id: int) -> Run:
    with session_scope(factory) as s:
        run = s.get(Run, run_id)
        assert run is not None
        return run


def test_claim_is_atomic_across_threads(factory: Any) -> None:
    (run_id,) = _submit(factory)
    winners: list[str] = []
    barrier = threading.Barrier(6)

    def attempt(i: int) -> None:
        barrier.wait()
        with session_scope(factory) as s:
            if lifecycle.claim_run(s, run_id=run_id, worker_name=f"w{i}", device="cpu", lease_s=30):
                winners.append(f"w{i}")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    run = _run(factory, run_id)
    assert run.status is RunStatus.RUNNING and run.worker_name == winners[0]
    with session_scope(factory) as s:
        claims = s.scalars(sa.select(RunLog.message).where(RunLog.run_id == run_id, RunLog.message.like("claimed by%")))
        assert len(list(claims)) == 1


def test_second_delivery_of_finished_or_cancelled_run_is_noop(factory: Any) -> None:
    a, b = _submit(factory, n=2)
    with session_scope(factory) as s:
        token = lifecycle.claim_run(s, run_id=a, worker_name="w", device="cpu", lease_s=30)
    with session_scope(factory) as s:
        assert lifecycle.finish_run(s, token=token, best_metrics={"miou": 0.5}, monitor="miou", checkpoint_dir="/c",
                                    val_store="/v", dataset_fingerprint="f")
    with session_scope(factory) as s:
        assert lifecycle.request_cancel(s, run_id=b) is RunStatus.CANCELLED
    with session_scope(factory) as s:
        assert lifecycle.claim_run(s, run_id=a, worker_name="w2", device="cpu", lease_s=30) is None
        assert lifecycle.claim_run(s, run_id=b, worker_name="w2", device="cpu", lease_s=30) is None
    assert _run(factory, a).status is RunStatus.SUCCEEDED and _run(factory, a).monitor_value == 0.5
    assert _run(factory, b).status is RunStatus.CANCELLED


def test_token_fences_a_worker_that_lost_its_lease(factory: Any) -> None:
    (run_id,) = _submit(factory)
    t0 = utcnow()
    with session_scope(factory) as s:
        old = lifecycle.claim_run(s, run_id=run_id, worker_name="old", device="cpu", lease_s=1, now=t0)
    later = t0 + dt.timedelta(seconds=5)
    with session_scope(factory) as s:
        assert lifecycle.reap(s, now=later) == [run_id]
    with session_scope(factory) as s:
        new = lifecycle.claim_run(s, run_id=run_id, worker_name="new", device="cpu", lease_s=30, now=later)
        assert new is not None
    with session_scope(factory) as s:
        assert lifecycle.heartbeat(s, token=old, lease_s=30) is LeaseState.LOST
        assert not lifecycle.record_epoch(s, token=old, epoch=1, epochs=2, train_loss=1.0, lr=0.1, images_per_s=1.0,
                                          eta_s=1.0, val={"miou": 0.1}, is_best=True, monitor="miou")
        assert not lifecycle.finish_run(s, token=old, best_metrics={}, monitor="miou", checkpoint_dir=None,
                                        val_store=None, dataset_fingerprint=None)
        assert not lifecycle.fail_run(s, token=old, error_message="x")
        assert lifecycle.heartbeat(s, token=new, lease_s=30) is LeaseState.HELD
    run = _run(factory, run_id)
    assert run.status is RunStatus.RUNNING and run.worker_name == "new"


def test_epoch_progress_and_repeated_epoch(factory: Any) -> None:
    (run_id,) = _submit(factory)
    with session_scope(factory) as s:
        token = lifecycle.claim_run(s, run_id=run_id, worker_name="w", device="cpu", lease_s=30)
    for loss in (2.0, 1.5):  # a resumed run reports epoch 1 again: the row is replaced
        with session_scope(factory) as s:
            assert lifecycle.record_epoch(s, token=token, epoch=1, epochs=3, train_loss=loss, lr=1e-3,
                                          images_per_s=10.0, eta_s=float("nan"),
                                          val={"miou": 0.25, "per_class": {"iou": [0.5, float("nan")]}},
                                          is_best=True, monitor="miou")
    with session_scope(factory) as s:
        rows = s.scalars(sa.select(EpochMetric).where(EpochMetric.run_id == run_id)).all()
        assert [(r.epoch, r.train_loss) for r in rows] == [(1, 1.5)]
        assert rows[0].val["per_class"]["iou"] == [0.5, None]
    run = _run(factory, run_id)
    assert (run.current_epoch, run.total_epochs, run.monitor_value, run.eta_s) == (1, 3, 0.25, None)


def test_cancel_running_then_requeue(factory: Any) -> None:
    (run_id,) = _submit(factory)
    with session_scope(factory) as s:
        token = lifecycle.claim_run(s, run_id=run_id, worker_name="w", device="cpu", lease_s=30)
    with session_scope(factory) as s:
        assert lifecycle.request_cancel(s, run_id=run_id) is RunStatus.RUNNING
    with session_scope(factory) as s:
        assert lifecycle.heartbeat(s, token=token, lease_s=30) is LeaseState.CANCEL_REQUESTED
        assert lifecycle.mark_cancelled(s, token=token)
    with session_scope(factory) as s:
        lifecycle.requeue(s, run_id=run_id)
    run = _run(factory, run_id)
    assert run.status is RunStatus.QUEUED and run.attempt == 1 and not run.cancel_requested
    with session_scope(factory) as s:
        actions = s.scalars(sa.select(AuditEvent.action).where(AuditEvent.object_kind == "run",
                                                               AuditEvent.object_id == run_id).order_by(AuditEvent.id))
        assert list(actions)[-2:] == ["run.cancel", "run.requeue"]
    with session_scope(factory) as s:
        with pytest.raises(Conflict, match="only failed or cancelled"):
            lifecycle.requeue(s, run_id=run_id)
        with pytest.raises(NotFound, match="run 999999 does not exist"):
            lifecycle.request_cancel(s, run_id=999999)


def test_reaper_never_requeues_a_cancelled_run(factory: Any) -> None:
    (run_id,) = _submit(factory)
    t0 = utcnow()
    with session_scope(factory) as s:
        lifecycle.claim_run(s, run_id=run_id, worker_name="w", device="cpu", lease_s=1, now=t0)
    with session_scope(factory) as s:
        lifecycle.request_cancel(s, run_id=run_id)
    with session_scope(factory) as s:
        assert lifecycle.reap(s, now=t0 + dt.timedelta(seconds=10)) == []
    assert _run(factory, run_id).status is RunStatus.CANCELLED


def test_publication_and_stale_messages(factory: Any) -> None:
    low, = _submit(factory, priority=1)
    high, = _submit(factory, priority=7)
    t0 = utcnow()
    with session_scope(factory) as s:
        assert [o.object_id for o in lifecycle.pending_publication(s)] == [high, low]
        out = lifecycle.publish_queued(s, now=t0)
        assert [(o.object_id, o.priority) for o in out] == [(high, 7), (low, 1)]
    with session_scope(factory) as s:
        assert lifecycle.pending_publication(s) == []
        assert lifecycle.reap(s, now=t0 + dt.timedelta(seconds=1), republish_after_s=30) == []
        assert lifecycle.reap(s, now=t0 + dt.timedelta(seconds=31), republish_after_s=30) == [high, low]
        assert lifecycle.set_priority(s, run_id=low, priority=9) is True
    with session_scope(factory) as s:
        assert [o.object_id for o in lifecycle.pending_publication(s)] == [low]


def test_devices_and_per_child_binding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--gpus 0,1` gives two pool children, the second bound to GPU 1 and registered as such."""
    from worker.queue.celery_app import make_celery
    from worker.db.models import WorkerNode
    from worker.execution.process import _make_context, parse_devices

    assert parse_devices(None) == parse_devices("cpu") == ["cpu"]
    assert parse_devices("0, 1") == ["cuda:0", "cuda:1"]
    for bad in ("0,0", "gpu1", "1,-2"):
        with pytest.raises(ValueError, match="--gpus"):
            parse_devices(bad)
    settings = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'd.db'}", redis_url="redis://127.0.0.1:1/0",
                             worker_name="box")
    factory = migrated(settings)
    app = make_celery(settings)
    app.conf.segboard_devices = parse_devices("0,1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # restored after the test
    ctx = _make_context(app, 1)
    try:
        assert (ctx.worker_name, ctx.device, ctx.fit_device) == ("box/cuda:1", "cuda:1", "cuda")
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
        with session_scope(factory) as s:
            node = s.scalar(sa.select(WorkerNode).where(WorkerNode.name == "box/cuda:1"))
            assert node.devices == ["cuda:1"] and node.status.value == "idle"
    finally:
        for t in threading.enumerate():
            if t.name == "worker-node-heartbeat" and getattr(t, "ctx", None) is ctx:
                t.stopped.set()
        ctx.factory.kw["bind"].dispose()


def test_ddp_worker_binds_one_child_to_all_its_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--gpus 0,2 --ddp` gives one pool child that sees both GPUs and passes them to fit as devices."""
    from worker.queue.celery_app import make_celery
    from worker.execution.process import _make_context, parse_devices

    assert parse_devices("0,2", ddp=True) == ["cuda:0,2"]
    for bad in (None, "cpu", "1"):
        with pytest.raises(ValueError, match="--ddp"):
            parse_devices(bad, ddp=True)
    settings = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'd.db'}", redis_url="redis://127.0.0.1:1/0",
                             worker_name="box")
    migrated(settings)
    app = make_celery(settings)
    app.conf.segboard_devices = parse_devices("0,2", ddp=True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # restored after the test
    ctx = _make_context(app, 0)
    try:
        assert (ctx.worker_name, ctx.fit_device, ctx.fit_devices) == ("box/cuda:0,2", "cuda", [0, 1])
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,2"
    finally:
        for t in threading.enumerate():
            if t.name == "worker-node-heartbeat" and getattr(t, "ctx", None) is ctx:
                t.stopped.set()
        ctx.factory.kw["bind"].dispose()


def test_a_run_that_keeps_killing_its_worker_fails_with_the_reason(factory: Any) -> None:
    (run_id,) = _submit(factory)
    t = utcnow()
    for i in range(lifecycle.MAX_WORKERS_LOST):
        with session_scope(factory) as s:
            assert lifecycle.claim_run(s, run_id=run_id, worker_name=f"w{i}", device="cpu", lease_s=1, now=t)
        t += dt.timedelta(seconds=5)
        with session_scope(factory) as s:
            lifecycle.reap(s, now=t)
    run = _run(factory, run_id)
    assert run.status is RunStatus.FAILED
    assert f"died {lifecycle.MAX_WORKERS_LOST} times" in run.error_message and "batch_size" in run.error_message
    with session_scope(factory) as s:  # a person's requeue gives it a fresh allowance
        lifecycle.requeue(s, run_id=run_id)
    with session_scope(factory) as s:
        assert lifecycle.claim_run(s, run_id=run_id, worker_name="w", device="cpu", lease_s=1, now=t)
    with session_scope(factory) as s:
        assert lifecycle.reap(s, now=t + dt.timedelta(seconds=5)) == [run_id]


def test_a_training_stuck_after_a_cancel_is_ended(tmp_path: Path) -> None:
    """The heartbeat thread marks the run cancelled and ends the process when no step comes."""
    from worker.execution.context import LeaseKeeper, WorkerContext

    settings = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 's.db'}", redis_url=None,
                             heartbeat_s=0.2, lease_s=1.0)
    factory = migrated(settings)
    (run_id,) = _submit(factory)
    ended = threading.Event()
    ctx = WorkerContext.create(settings, worker_name="w/cpu", device="cpu")
    ctx.on_stuck = ended.set
    with session_scope(ctx.factory) as s:
        token = lifecycle.claim_run(s, run_id=run_id, worker_name="w/cpu", device="cpu", lease_s=1.0)
    keeper = LeaseKeeper(ctx, token, stop_grace_s=0.5)
    claimed = _run(factory, run_id).heartbeat_at
    keeper.start()
    # heartbeats for longer than the grace period, without a cancel: the run goes on
    wait_for(lambda: (_run(factory, run_id).heartbeat_at - claimed).total_seconds() > 0.6, timeout=10,
             what="heartbeats past the grace period")
    assert not ended.is_set() and _run(factory, run_id).status is RunStatus.RUNNING
    with session_scope(factory) as s:
        lifecycle.request_cancel(s, run_id=run_id)
    assert ended.wait(10), "the stuck training was not ended"
    run = _run(factory, run_id)
    assert run.status is RunStatus.CANCELLED
    with session_scope(factory) as s:
        last = s.scalars(sa.select(RunLog.message).where(RunLog.run_id == run_id).order_by(RunLog.id.desc())).first()
    assert "did not reach its next step within 0.5 s" in last
    keeper.stop()
    ctx.factory.kw["bind"].dispose()


def test_a_resumed_training_drops_the_epochs_it_will_run_again(factory: Any) -> None:
    """Epochs stored past the last checkpoint (a crash with checkpoint_every > 1) go when training restarts."""
    (run_id,) = _submit(factory)
    with session_scope(factory) as s:
        token = lifecycle.claim_run(s, run_id=run_id, worker_name="w", device="cpu", lease_s=60)
    for epoch in (1, 2, 3):
        with session_scope(factory) as s:
            assert lifecycle.record_epoch(s, token=token, epoch=epoch, epochs=5, train_loss=1.0, lr=0.1,
                                          images_per_s=1.0, eta_s=1.0, val=None, is_best=False)
    with session_scope(factory) as s:
        assert lifecycle.start_training(s, token=token, start_epoch=2, total_epochs=5)
    with session_scope(factory) as s:
        assert list(s.scalars(sa.select(EpochMetric.epoch).where(EpochMetric.run_id == run_id))) == [1]
        assert s.get(Run, run_id).current_epoch == 1


def test_the_allowance_of_lost_workers_is_a_setting(factory: Any) -> None:
    """Preemptible machines: with max_lost 5 the third loss requeues, the fifth fails."""
    (run_id,) = _submit(factory)
    t = utcnow()
    for i in range(5):
        assert _run(factory, run_id).status is RunStatus.QUEUED, i
        with session_scope(factory) as s:
            assert lifecycle.claim_run(s, run_id=run_id, worker_name=f"w{i}", device="cpu", lease_s=1, now=t)
        t += dt.timedelta(seconds=5)
        with session_scope(factory) as s:
            lifecycle.reap(s, now=t, max_lost=5)
    run = _run(factory, run_id)
    assert run.status is RunStatus.FAILED and "died 5 times" in run.error_message and run.lost_count == 5
