"""Notifications: hooks, the outbox written with the status change, the sender against a real HTTP server."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from worker.db import migrate
from worker.db.base import utcnow
from worker.db.models import (
    AuditEvent,
    DeliveryStatus,
    Ensemble,
    EnsembleMethod,
    MemberRole,
    NotificationDelivery,
    Run,
    RunStatus,
)
from worker.db.session import make_engine, make_session_factory, session_scope
from worker.errors import InvalidInput, PermissionDenied
from worker.services import jobs, lifecycle, members, notifications
from worker.services.experiments import create_experiment
from worker.services.submissions import create_submission

from .queue_fixtures import make_settings, tiny_config, wait_for

SOURCE = {"format": "coco", "root": "for-notification-tests"}  # under the dataset root; never read
PUBLIC = "https://segboard.example.org"
SECRET = "T0SECRET/B0SECRET/xoxSecretToken42"


# ------------------------------------------------------------------ a webhook endpoint


class _Endpoint(ThreadingHTTPServer):
    """Records every POST; answers with the queued status codes, then ``default``."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.codes: list[int] = []
        self.default = 200

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{path.lstrip('/')}"

    def received(self) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return list(self.requests)


class _Handler(BaseHTTPRequestHandler):
    server: _Endpoint

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"null")
        with self.server.lock:
            self.server.requests.append((self.path, body))
            code = self.server.codes.pop(0) if self.server.codes else self.server.default
        # an error page that echoes the request path, as some proxies do: the sender must mask it
        reply = (b"ok" if code < 400 else f"no route for {self.path}".encode())
        self.send_response(code)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass


@pytest.fixture
def endpoint() -> Iterator[_Endpoint]:
    server = _Endpoint()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# ------------------------------------------------------------------ database, members, runs


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    return make_settings(tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'n.db'}", redis_url=None,
                         public_url=PUBLIC, notify_max_attempts=3, notify_backoff_s=30.0, notify_timeout_s=3.0)


@pytest.fixture
def factory(any_engine: sa.Engine) -> Any:
    """SQLite, then PostgreSQL."""
    return make_session_factory(any_engine)


@pytest.fixture
def sqlite_factory(sqlite_engine: sa.Engine) -> Any:
    return make_session_factory(sqlite_engine)


@pytest.fixture
def team(factory: Any) -> dict[str, int]:
    return _team(factory)


def _team(factory: Any) -> dict[str, int]:
    with session_scope(factory) as s:
        return {name: members.create_member(s, actor=None, name=name, role=role).id
                for name, role in (("root", MemberRole.ADMIN), ("ada", MemberRole.MEMBER),
                                   ("bob", MemberRole.MEMBER), ("val", MemberRole.VIEWER))}


def _experiment(factory: Any, actor: int, *, seeds: tuple[int, ...] = (0,)) -> tuple[int, list[int]]:
    with session_scope(factory) as s:
        exp = create_experiment(s, actor=actor, config=tiny_config(SOURCE), seeds=seeds)
        return exp.id, list(exp.run_ids)


def _claim(factory: Any, run_id: int) -> Any:
    with session_scope(factory) as s:
        return lifecycle.claim_run(s, run_id=run_id, worker_name="w1", device="cpu", lease_s=60)


def _finish(factory: Any, run_id: int, miou: float = 0.8123) -> None:
    token = _claim(factory, run_id)
    with session_scope(factory) as s:
        assert lifecycle.finish_run(s, token=token, best_metrics={"miou": miou}, monitor="miou", checkpoint_dir=None,
                                    val_store=None, dataset_fingerprint=None)


def _fail(factory: Any, run_id: int, error: str) -> None:
    token = _claim(factory, run_id)
    with session_scope(factory) as s:
        assert lifecycle.fail_run(s, token=token, error_message=error)


def _hook(factory: Any, actor: int | None, url: str, fmt: str, **scope: Any) -> int:
    with session_scope(factory) as s:
        return notifications.add_hook(s, actor=actor, url=url, payload_format=fmt, **scope).id


def _deliveries(factory: Any) -> list[Any]:
    with session_scope(factory) as s:
        return list(reversed(notifications.list_deliveries(s, actor=None, limit=1000)))


def _status(factory: Any, run_id: int) -> RunStatus:
    with session_scope(factory) as s:
        return s.get(Run, run_id).status


# ------------------------------------------------------------------ tests


def test_a_finished_run_posts_one_slack_and_one_discord_payload(factory: Any, team: dict[str, int],
                                                               endpoint: _Endpoint, settings: Any) -> None:
    ada = team["ada"]
    exp_id, (run_id,) = _experiment(factory, ada)
    _hook(factory, ada, endpoint.url(f"slack/{SECRET}"), "slack")  # all of ada's objects
    _hook(factory, ada, endpoint.url(f"discord/{SECRET}"), "discord", experiment_id=exp_id)
    _hook(factory, team["bob"], endpoint.url("bob"), "slack")  # bob's objects: not this run
    _finish(factory, run_id)
    assert endpoint.received() == []  # the status change posts nothing itself
    report = notifications.send_pending(factory, settings=settings)
    assert (report.sent, report.retrying, report.gave_up) == (2, 0, 0)
    got = dict(endpoint.received())
    assert set(got) == {f"/slack/{SECRET}", f"/discord/{SECRET}"}
    slack, discord = got[f"/slack/{SECRET}"], got[f"/discord/{SECRET}"]
    assert set(slack) == {"text"} and set(discord) == {"content", "allowed_mentions"}
    for text in (slack["text"], discord["content"]):
        assert f'run {run_id} "' in text and "succeeded" in text and "miou 0.8123" in text
        assert text.endswith(f"\n{PUBLIC}/run?run={run_id}")
    assert discord["allowed_mentions"] == {"parse": []}
    assert notifications.send_pending(factory, settings=settings).delivery_ids == []  # sent once
    assert len(endpoint.received()) == 2
    assert all(d.status is DeliveryStatus.SENT and d.attempts == 1 for d in _deliveries(factory))


def test_a_failed_group_names_the_first_line_of_the_error(factory: Any, team: dict[str, int], endpoint: _Endpoint,
                                                          settings: Any) -> None:
    ada = team["ada"]
    exp_id, (first, second) = _experiment(factory, ada, seeds=(0, 1))
    _hook(factory, None, endpoint.url("exp"), "discord", experiment_id=exp_id)  # the system (an admin) adds it
    _finish(factory, first)
    assert [d.object_kind for d in _deliveries(factory)] == ["run"]  # the group has a run still queued
    _fail(factory, second, "CUDA out of memory: lower training.batch_size\nTraceback (most recent call last):")
    rows = _deliveries(factory)
    assert [(d.object_kind, d.event) for d in rows] == [("run", "succeeded"), ("run", "failed"), ("group", "failed")]
    assert rows[1].text.endswith("failed: CUDA out of memory: lower training.batch_size")
    assert "1 of 2 runs failed" in rows[2].text
    assert notifications.send_pending(factory, settings=settings).sent == 3
    assert [p for p, _ in endpoint.received()] == ["/exp"] * 3


def test_a_failing_endpoint_is_retried_with_backoff_then_given_up(sqlite_factory: Any, endpoint: _Endpoint,
                                                                  settings: Any) -> None:
    factory = sqlite_factory
    ada = _team(factory)["ada"]
    _, (run_id,) = _experiment(factory, ada)
    hook_id = _hook(factory, ada, endpoint.url(f"hook/{SECRET}"), "slack")
    endpoint.default = 500
    _finish(factory, run_id)
    t0 = utcnow() + dt.timedelta(seconds=1)
    at = (0, 29, 30, 149, 150, 10_000)  # waits of 30 s, then 120 s (backoff 30 s x 4^(n-1))
    attempted = [notifications.send_pending(factory, settings=settings, now=t0 + dt.timedelta(seconds=s)).delivery_ids
                 for s in at]
    assert [len(a) for a in attempted] == [1, 0, 1, 0, 1, 0]
    assert len(endpoint.received()) == 3  # notify_max_attempts
    (row,) = _deliveries(factory)
    assert row.status is DeliveryStatus.FAILED and row.attempts == 3 and row.hook_id == hook_id
    assert row.last_error.startswith("HTTP 500") and "gave up after 3 attempt(s)" in row.last_error
    assert SECRET not in row.last_error and "•••" in row.last_error  # the echoed path is masked
    assert _status(factory, run_id) is RunStatus.SUCCEEDED  # the run never noticed
    assert [notifications.backoff_s(n, base_s=30) for n in (1, 2, 3)] == [30, 120, 480]


def test_a_500_then_200_is_delivered_on_the_retry(sqlite_factory: Any, endpoint: _Endpoint, settings: Any) -> None:
    factory = sqlite_factory
    ada = _team(factory)["ada"]
    _, (run_id,) = _experiment(factory, ada)
    _hook(factory, ada, endpoint.url("flaky"), "discord")
    endpoint.codes = [500]
    _fail(factory, run_id, "the dataset folder is gone")
    t0 = utcnow() + dt.timedelta(seconds=1)
    first = notifications.send_pending(factory, settings=settings, now=t0)
    assert (first.sent, first.retrying) == (0, 1)
    (row,) = _deliveries(factory)
    assert row.status is DeliveryStatus.PENDING and row.next_attempt_at == t0 + dt.timedelta(seconds=30)
    second = notifications.send_pending(factory, settings=settings, now=t0 + dt.timedelta(seconds=30))
    assert second.sent == 1
    (row,) = _deliveries(factory)
    assert row.status is DeliveryStatus.SENT and row.attempts == 2 and row.last_error is None
    for _, body in endpoint.received():
        assert body["content"].startswith(f'SegBoard: run {run_id} "') and \
            body["content"].endswith(f"failed: the dataset folder is gone\n{PUBLIC}/run?run={run_id}")
    assert len(endpoint.received()) == 2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_or_unrecordable_hook_never_fails_the_run(sqlite_factory: Any, sqlite_engine: sa.Engine,
                                                                  settings: Any) -> None:
    factory = sqlite_factory
    ada = _team(factory)["ada"]
    _, (first, second) = _experiment(factory, ada, seeds=(0, 1))
    _hook(factory, ada, f"http://127.0.0.1:{_closed_port()}/{SECRET}", "slack")
    _finish(factory, first)
    assert _status(factory, first) is RunStatus.SUCCEEDED
    report = notifications.send_pending(factory, settings=settings)
    assert report.retrying == 1
    (row,) = _deliveries(factory)
    assert row.last_error and "ConnectError" in row.last_error and SECRET not in row.last_error
    with sqlite_engine.begin() as conn:  # recording itself fails now: the run still ends
        conn.exec_driver_sql("DROP TABLE notification_deliveries")
    _finish(factory, second)
    assert _status(factory, second) is RunStatus.SUCCEEDED


def test_the_url_never_appears_in_reads_events_errors_or_logs(sqlite_factory: Any, endpoint: _Endpoint,
                                                              settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    factory = sqlite_factory
    ada = _team(factory)["ada"]
    _, (run_id,) = _experiment(factory, ada)
    url = endpoint.url(f"services/{SECRET}?token=querysecret")
    caplog.set_level(logging.DEBUG)
    with session_scope(factory) as s:
        added = notifications.add_hook(s, actor=ada, url=url, payload_format="slack", name="team channel")
    assert added.url_display == f"http://127.0.0.1:{endpoint.server_address[1]}/•••"
    endpoint.default = 404
    _finish(factory, run_id)
    report = notifications.send_pending(factory, settings=settings)
    assert report.gave_up == 1  # a 404 is not retried
    with session_scope(factory) as s:
        texts = [h.model_dump_json() for h in notifications.list_hooks(s, actor=ada)]
        texts += [notifications.get_hook(s, actor=ada, hook_id=added.id).model_dump_json()]
        texts += [d.model_dump_json() for d in notifications.list_deliveries(s, actor=ada)]
        texts += [json.dumps(e.detail) for e in s.scalars(sa.select(AuditEvent))]
    texts += [r.getMessage() for r in caplog.records]
    (row,) = _deliveries(factory)
    assert "HTTP 404" in row.last_error and "not retried" in row.last_error
    for text in texts:
        assert SECRET not in text and "querysecret" not in text, text
    with session_scope(factory) as s:
        with pytest.raises(InvalidInput) as bad:
            notifications.add_hook(s, actor=ada, url=f"ftp://example.org/{SECRET}", payload_format="slack")
    assert SECRET not in str(bad.value)


def test_the_delivery_is_written_in_the_status_change_transaction(factory: Any, team: dict[str, int]) -> None:
    ada = team["ada"]
    _, (run_id,) = _experiment(factory, ada)
    _hook(factory, ada, "https://hooks.example.org/x", "slack")
    token = _claim(factory, run_id)

    def count(s: Any) -> int:
        return int(s.scalar(sa.select(sa.func.count(NotificationDelivery.id))))

    with factory() as s:  # rolled back: no status change, no delivery
        assert lifecycle.finish_run(s, token=token, best_metrics={"miou": 0.5}, monitor="miou", checkpoint_dir=None,
                                    val_store=None, dataset_fingerprint=None)
        assert count(s) == 1
        s.rollback()
    with session_scope(factory) as s:
        assert count(s) == 0 and s.get(Run, run_id).status is RunStatus.RUNNING
    with session_scope(factory) as s:
        lifecycle.finish_run(s, token=token, best_metrics={"miou": 0.5}, monitor="miou", checkpoint_dir=None,
                             val_store=None, dataset_fingerprint=None)
    with session_scope(factory) as s:
        assert count(s) == 1 and s.get(Run, run_id).status is RunStatus.SUCCEEDED


def test_only_owners_and_admins_configure_hooks(factory: Any, team: dict[str, int]) -> None:
    ada, bob, val, root = team["ada"], team["bob"], team["val"], team["root"]
    exp_id, _ = _experiment(factory, ada)
    url = "https://hooks.example.org/abc"
    with session_scope(factory) as s:
        with pytest.raises(PermissionDenied, match="only its owner or an admin"):
            notifications.add_hook(s, actor=bob, url=url, payload_format="slack", experiment_id=exp_id)
        with pytest.raises(PermissionDenied):
            notifications.add_hook(s, actor=bob, url=url, payload_format="slack", member_id=ada)
        with pytest.raises(PermissionDenied, match="viewers cannot"):
            notifications.add_hook(s, actor=val, url=url, payload_format="slack")
    mine = _hook(factory, ada, url, "slack", experiment_id=exp_id)
    _hook(factory, root, url, "discord", experiment_id=exp_id)  # an admin may
    with session_scope(factory) as s:
        assert notifications.list_hooks(s, actor=bob) == []
        assert len(notifications.list_hooks(s, actor=ada, experiment_id=exp_id)) == 2
        with pytest.raises(PermissionDenied):
            notifications.remove_hook(s, actor=bob, hook_id=mine)
        with pytest.raises(PermissionDenied):
            notifications.queue_test(s, actor=bob, hook_id=mine)
    with session_scope(factory) as s:
        notifications.set_hook_enabled(s, actor=ada, hook_id=mine, enabled=False)
        notifications.remove_hook(s, actor=ada, hook_id=mine)
        assert [h.payload_format.value for h in notifications.list_hooks(s, actor=root)] == ["discord"]


def test_ensembles_rounds_and_submissions_notify_through_their_jobs(sqlite_factory: Any) -> None:
    factory = sqlite_factory
    ada = _team(factory)["ada"]
    _, (run_id,) = _experiment(factory, ada)
    _hook(factory, ada, "https://hooks.example.org/ada", "slack")
    _finish(factory, run_id)
    with session_scope(factory) as s:
        ens = Ensemble(name="blend", method=EnsembleMethod.SOFT, members=[], status=RunStatus.QUEUED, owner_id=ada,
                       val_score=0.9, monitor_metric="miou")
        s.add(ens)
        s.flush()
        sub = create_submission(s, actor=ada, run_id=run_id)
        ids = {"ensemble": (ens.id, jobs.create_job(s, actor=ada, kind="ensemble", target={"ensemble_id": ens.id}).id),
               "submission": (sub.id, jobs.create_job(s, actor=ada, kind="submission",
                                                      target={"submission_id": sub.id}).id)}
    tokens = {}
    with session_scope(factory) as s:
        for kind, (_, job_id) in ids.items():
            tokens[kind] = lifecycle.claim_job(s, job_id=job_id, worker_name="w", device="cpu", lease_s=30)
    with session_scope(factory) as s:
        lifecycle.finish_job(s, token=tokens["ensemble"], result={})
        lifecycle.fail_job(s, token=tokens["submission"], error_message="no test predictions: predict first")
    rows = [d for d in _deliveries(factory) if d.object_kind != "run"]
    assert [(d.object_kind, d.object_id, d.event) for d in rows] == [
        ("ensemble", ids["ensemble"][0], "succeeded"), ("submission", ids["submission"][0], "failed")]
    assert "miou 0.9000" in rows[0].text and rows[0].page == f"ensemble-builder?ensemble={ids['ensemble'][0]}"
    assert f"of run {run_id}" in rows[1].text and "no test predictions" in rows[1].text


def test_notify_records_a_sweep_event_for_the_owner(sqlite_factory: Any) -> None:
    factory = sqlite_factory
    ada = _team(factory)["ada"]
    _hook(factory, ada, "https://hooks.example.org/ada", "discord")
    _hook(factory, ada, "https://hooks.example.org/failures", "slack", events=["failed"])  # not this one
    with session_scope(factory) as s:
        n = notifications.notify(s, event="succeeded", object_kind="sweep", object_id=4, owner_id=ada,
                                 experiment_id=None, title='sweep 4 "lr x encoder"', detail="best miou 0.8100",
                                 page="sweeps?sweep=4")
    assert n == 1
    (row,) = _deliveries(factory)
    assert row.text == 'SegBoard: sweep 4 "lr x encoder" succeeded: best miou 0.8100' and row.page == "sweeps?sweep=4"


def test_the_reaper_loop_delivers(sqlite_factory: Any, endpoint: _Endpoint, settings: Any) -> None:
    from worker.queue.celery_app import make_celery
    from worker.queue.reaper import Reaper

    factory = sqlite_factory
    ada = _team(factory)["ada"]
    hook_id = _hook(factory, ada, endpoint.url("reaper"), "slack")
    with session_scope(factory) as s:
        notifications.queue_test(s, actor=ada, hook_id=hook_id)
    reaper = Reaper(make_celery(settings, broker_url="redis://127.0.0.1:1/0"), factory, settings)
    thread = reaper.start_thread()
    try:
        wait_for(endpoint.received, timeout=30, what="the reaper to post the test message")
    finally:
        reaper.stop()
        thread.join(timeout=30)
    assert "test message for notification hook" in endpoint.received()[0][1]["text"]


def test_cli_add_list_test_and_send_pending(sqlite_factory: Any, sqlite_engine: sa.Engine, endpoint: _Endpoint,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from worker.cli import main

    _team(sqlite_factory)
    monkeypatch.setenv("SEGBOARD_DATABASE_URL", str(sqlite_engine.url))
    monkeypatch.delenv("SEGBOARD_AUTH", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(endpoint.url(f"cli/{SECRET}") + "\n"))
    assert main(["notify", "add", "--format", "slack", "--url-stdin", "--member", "ada", "--name", "lab"]) == 0
    assert main(["notify", "list"]) == 0
    assert main(["notify", "test", "1"]) == 0
    assert main(["notify", "send-pending"]) == 0
    out = capsys.readouterr().out
    assert "added notification hook 1" in out and "test message" in out and "delivered" in out
    assert "sent 0, to retry 0, given up 0" in out and SECRET not in out
    assert [p for p, _ in endpoint.received()] == [f"/cli/{SECRET}"]
    endpoint.default = 500
    assert main(["notify", "test", "1"]) == 2
    err = capsys.readouterr().err
    assert "HTTP 500" in err and "retries it" in err and SECRET not in err


def test_the_migration_upgrades_from_0005_and_downgrades(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url, "0005")
    engine = make_engine(sqlite_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO members (name, role, created_at) VALUES ('ada', 'member', '2026-01-01')")
        migrate.upgrade(engine, "0006")
        names = set(sa.inspect(engine).get_table_names())
        assert {"notification_hooks", "notification_deliveries"} <= names
        with session_scope(make_session_factory(engine)) as s:
            hook = notifications.add_hook(s, actor=None, url="https://hooks.example.org/x", payload_format="slack",
                                          member_id=1)
            notifications.queue_test(s, actor=None, hook_id=hook.id)
        migrate.downgrade(engine, "0005")
        names = set(sa.inspect(engine).get_table_names())
        assert not {"notification_hooks", "notification_deliveries"} & names and "members" in names
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT name FROM members").scalars().all() == ["ada"]
        migrate.upgrade(engine, "0006")
    finally:
        engine.dispose()


def test_payload_formats_and_masking() -> None:
    slack = notifications.payload(notifications._sender.PayloadFormat.SLACK, "run <1> & co", "https://x/run?run=1")
    assert slack == {"text": "run &lt;1&gt; &amp; co\nhttps://x/run?run=1"}
    assert notifications.mask_url("https://user:pw@hooks.slack.com:8443/services/a/b") == \
        "https://hooks.slack.com:8443/•••"
    assert notifications.scrub("POST https://h.example/a/SECRETPATH failed", "https://h.example/a/SECRETPATH") == \
        "POST ••• failed"
    assert notifications.first_line("\n  boom  \nTraceback") == "boom"
