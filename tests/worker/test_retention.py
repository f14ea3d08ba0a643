"""The retention policy: ``gc --dry-run`` changes nothing and the real run frees exactly what it listed;
pins protect; nothing in use is removed (running runs, what a queued job reads, test stores an
ensemble, round or submission was made from, best checkpoints); admins only."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import fsspec
import pytest
import sqlalchemy as sa

from worker.artifacts import Artifacts
from worker.db.base import utcnow
from worker.db.models import AuditEvent, Run
from worker.errors import PermissionDenied
from worker.services import jobs, lifecycle, members
from worker.services.disk import format_bytes
from worker.services.experiments import create_experiment
from worker.services.retention import RetentionPolicy, plan_gc, run_gc, set_pinned

from .queue_fixtures import tiny_config
from .test_disk_use import SOURCE, TEST_FILES, finish, local_artifacts, on_disk, world, write

POLICY = RetentionPolicy(drop_last_checkpoint=True, test_store_days=30)
LATER = utcnow() + dt.timedelta(days=31)  # every store written now is 31 days old then


def _listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def _extra_runs(session: Any, arts: Artifacts) -> dict[str, int]:
    """Three more finished runs with test stores nothing uses: one plain, one pinned, one in a pinned experiment."""
    plain = create_experiment(session, actor=None, name="plain", config=tiny_config(SOURCE)).run_ids[0]
    pinned = create_experiment(session, actor=None, name="pinned", config=tiny_config(SOURCE)).run_ids[0]
    covered = create_experiment(session, actor=None, name="covered", config=tiny_config(SOURCE))
    for run_id in (plain, pinned, covered.run_ids[0]):
        finish(session, arts, run_id, test_store=True)
    set_pinned(session, actor=None, kind="run", object_id=pinned, pinned=True)
    set_pinned(session, actor=None, kind="experiment", object_id=covered.id, pinned=True)
    return {"plain": plain, "pinned": pinned, "covered": covered.run_ids[0]}


def test_dry_run_changes_nothing_then_gc_frees_exactly_what_it_listed(session: Any, tmp_path: Path) -> None:
    arts = local_artifacts(tmp_path)
    w = world(session, arts)
    extra = _extra_runs(session, arts)
    session.commit()
    a, b, c = w["runs"]
    root = tmp_path / "artifacts"
    before = _listing(root)

    dry = plan_gc(session, artifacts=arts, policy=POLICY, now=LATER)
    got = {(i.kind, i.id, i.what) for i in dry.items}
    assert got == {("run", a, "last_checkpoint"), ("run", b, "last_checkpoint"), ("run", c, "last_checkpoint"),
                   ("run", extra["plain"], "last_checkpoint"), ("run", extra["plain"], "test_store")}
    assert dry.bytes == 3100 * 4 + sum(TEST_FILES.values())
    kept = "\n".join(dry.kept)
    assert f"run {extra['pinned']} last checkpoint" in kept and f"run {extra['covered']} test store" in kept
    assert f"run {a} test store" in kept and f"ensemble {w['ensemble']} uses it" in kept  # a member's store
    assert f"run {c} test store" in kept
    session.commit()
    assert _listing(root) == before and session.get(Run, extra["plain"]).test_store is not None
    assert not session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "storage.gc")).all()

    done = run_gc(session, actor=None, artifacts=arts, policy=POLICY, now=LATER)
    assert done.applied and done.items == dry.items and done.bytes == dry.bytes
    assert session.get(Run, extra["plain"]).test_store is None
    session.commit()
    after = _listing(root)
    assert set(before) - set(after) == {f"runs/{r}/{f}" for r in (a, b, c, extra["plain"])
                                        for f in ("checkpoints/last/model.safetensors", "checkpoints/last/config.json")
                                        } | {f"runs/{extra['plain']}/{f}" for f in TEST_FILES}
    assert sum(before.values()) - sum(after.values()) == dry.bytes
    for run_id in (a, b, c, *extra.values()):  # best checkpoints and validation stores stay
        assert (root / "runs" / str(run_id) / "checkpoints" / "best" / "model.safetensors").is_file()
        assert (root / "runs" / str(run_id) / "predictions" / "val" / "manifest.json").is_file()
    event = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "storage.gc")).one()
    assert event.detail["bytes"] == dry.bytes and len(event.detail["items"]) == len(dry.items)
    assert not plan_gc(session, artifacts=arts, policy=POLICY, now=LATER).items  # nothing left to do


def test_nothing_in_use_is_removed(session: Any, tmp_path: Path) -> None:
    arts = local_artifacts(tmp_path)
    exp = create_experiment(session, actor=None, name="live", config=tiny_config(SOURCE), seeds=[0, 1, 2])
    running, read, young = exp.run_ids
    lifecycle.claim_run(session, run_id=running, worker_name="box/cpu", device="cpu", lease_s=60)
    write(arts.local_dir("runs", str(running)), {"checkpoints/last/model.safetensors": 3000})
    session.get(Run, running).artifact_dir = str(arts.local_dir("runs", str(running)))
    finish(session, arts, read, test_store=True)
    finish(session, arts, young, test_store=True)
    job = jobs.create_job(session, actor=None, kind="ensemble", target={"ensemble_id": 999})  # reads nothing of ours
    reader = jobs.create_job(session, actor=None, kind="predict", target={"group_ids": [exp.groups[0].id]})
    session.commit()
    plan = plan_gc(session, artifacts=arts, policy=POLICY, now=LATER)
    assert plan.items == []
    kept = "\n".join(plan.kept)
    assert f"run {read} last checkpoint" in kept and f"job {reader.id} reads it" in kept
    assert f"run {young} test store" in kept
    assert all("best" not in i.location for i in plan.items)
    # the young store is fine before its time, and the running run is never listed at all
    lifecycle.request_cancel_job(session, job_id=reader.id, actor=None)
    lifecycle.request_cancel_job(session, job_id=job.id, actor=None)
    items = plan_gc(session, artifacts=arts, policy=POLICY, now=utcnow()).items
    assert {(i.id, i.what) for i in items} == {(read, "last_checkpoint"), (young, "last_checkpoint")}
    assert running not in {i.id for i in items}


def test_gc_is_for_admins(session: Any, tmp_path: Path) -> None:
    arts = local_artifacts(tmp_path)
    admin = members.create_member(session, actor=None, name="ada").id
    for name, role in (("alice", "member"), ("vic", "viewer")):
        actor = members.create_member(session, actor=admin, name=name, role=role).id
        with pytest.raises(PermissionDenied, match="only admins"):
            run_gc(session, actor=actor, artifacts=arts, policy=POLICY)
    assert run_gc(session, actor=admin, artifacts=arts, policy=POLICY).applied


def test_test_store_age_on_an_s3_root(session: Any, tmp_path: Path, s3_server: Any) -> None:
    root = f"s3://{s3_server.bucket()}/segboard"
    arts = Artifacts(root, cache=tmp_path / "cache", storage_options=s3_server.options)
    run_id = create_experiment(session, actor=None, name="s3", config=tiny_config(SOURCE)).run_ids[0]
    finish(session, arts, run_id, test_store=True)
    session.commit()
    assert {i.what for i in plan_gc(session, artifacts=arts, policy=POLICY).items} == {"last_checkpoint"}
    plan = run_gc(session, actor=None, artifacts=arts, policy=POLICY, now=LATER)
    assert {i.what for i in plan.items} == {"last_checkpoint", "test_store"}
    session.commit()
    fsspec.filesystem("s3", **s3_server.options).invalidate_cache()
    left = {rel for rel, _ in arts.files(f"{root}/runs/{run_id}")}
    assert left == {"checkpoints/best/model.safetensors", "checkpoints/best/config.json",
                    "predictions/val/manifest.json", "predictions/val/shard-0.npy"}


def test_gc_command_dry_run_then_for_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from worker.cli import main
    from worker.db.session import session_scope

    from .queue_fixtures import make_settings, migrated

    settings = make_settings(tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'gc.db'}", redis_url=None)
    for key, value in {"SEGBOARD_HOME": settings.home, "SEGBOARD_DATABASE_URL": settings.database_url,
                       "SEGBOARD_ARTIFACT_ROOT": settings.artifact_root,
                       "SEGBOARD_RETENTION_TEST_STORE_DAYS": "30"}.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.delenv("SEGBOARD_REDIS_URL", raising=False)
    factory = migrated(settings)
    arts = Artifacts.from_settings(settings)
    with session_scope(factory) as s:
        run_id = create_experiment(s, actor=None, name="gc", config=tiny_config(SOURCE)).run_ids[0]
        finish(s, arts, run_id, test_store=True)
    manifest = arts.local_dir("runs", str(run_id), "predictions", "test", "manifest.json")
    old = (utcnow() - dt.timedelta(days=40)).timestamp()
    os.utime(manifest, (old, old))
    root = Path(str(settings.artifact_root))
    before = on_disk(root)

    assert main(["gc", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would remove run {run_id} last checkpoint" in out and f"would remove run {run_id} test store" in out
    freed = format_bytes(3100 + sum(TEST_FILES.values()))
    assert f"would free {freed} in 2 item(s)" in out and on_disk(root) == before
    assert main(["gc"]) == 0
    out = capsys.readouterr().out
    assert f"freed {freed} in 2 item(s)" in out
    assert before - on_disk(root) == 3100 + sum(TEST_FILES.values())
