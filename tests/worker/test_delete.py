"""Deleting a run, group or experiment with its artifacts: rows in the caller's transaction, files
after its commit, in a temporary artifact root and in the S3 test server; refused with the
dependants listed unless cascading; refused while queued, running, read by a job or pinned; owners
and admins only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsspec
import pytest
import sqlalchemy as sa

from worker.artifacts import Artifacts
from worker.db.models import AuditEvent, Ensemble, Experiment, PseudoRound, Run, RunGroup, Submission
from worker.errors import Conflict, PermissionDenied
from worker.services import deletion, jobs, lifecycle, members
from worker.services.disk import disk_use
from worker.services.experiments import create_experiment
from worker.services.retention import set_pinned

from .queue_fixtures import tiny_config
from .test_disk_use import SOURCE, finish, local_artifacts, on_disk, world


def _count(session: Any, model: Any, ids: list[int]) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(model).where(model.id.in_(ids))) or 0


def test_a_run_goes_with_its_folder_after_the_commit(session: Any, tmp_path: Path) -> None:
    arts = local_artifacts(tmp_path)
    w = world(session, arts)
    session.commit()
    a, b, c = w["runs"]
    folder = tmp_path / "artifacts" / "runs" / str(b)
    before = on_disk(tmp_path / "artifacts")
    plan = deletion.plan_delete(session, kind="run", object_id=b, artifacts=arts)
    assert plan.allowed and not plan.dependants and plan.bytes == w["sizes"][("run", b)]
    assert [(o.kind, o.id, o.why) for o in plan.objects] == [("run", b, "asked")]
    assert plan.locations == [str(folder)]

    done = deletion.delete(session, actor=None, kind="run", object_id=b, artifacts=arts)
    assert done.bytes == plan.bytes
    assert _count(session, Run, [b]) == 0
    assert folder.is_dir()  # not before the commit
    session.commit()
    assert not folder.exists()
    assert on_disk(tmp_path / "artifacts") == before - plan.bytes
    assert disk_use(session, by="run", artifacts=arts).total_bytes == before - plan.bytes
    event = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "run.delete")).one()
    assert event.object_id == b and event.detail["objects"] == {"run": [b]} and event.detail["bytes"] == plan.bytes


def test_a_rollback_keeps_rows_and_files(session: Any, tmp_path: Path) -> None:
    arts = local_artifacts(tmp_path)
    w = world(session, arts)
    session.commit()
    b = w["runs"][1]
    deletion.delete(session, actor=None, kind="run", object_id=b, artifacts=arts)
    session.rollback()
    session.commit()  # a later commit of the same session removes nothing
    assert _count(session, Run, [b]) == 1
    assert (tmp_path / "artifacts" / "runs" / str(b) / "checkpoints" / "best" / "model.safetensors").is_file()


def test_dependants_refuse_the_delete_unless_it_cascades(any_session: Any, tmp_path: Path) -> None:
    session = any_session
    arts = local_artifacts(tmp_path)
    w = world(session, arts)
    session.commit()
    a, b, c = w["runs"]
    root = tmp_path / "artifacts"
    plan = deletion.plan_delete(session, kind="experiment", object_id=w["single"].id, artifacts=arts)
    assert not plan.allowed
    assert {(d.kind, d.id, d.why) for d in plan.dependants} == {
        ("ensemble", w["ensemble"], "combines"), ("submission", w["submission"], "made from"),
        ("pseudo_round", w["round"], "taught by")}
    with pytest.raises(Conflict, match=rf"ensemble .*'a\+c' \(combines run {c}\).*delete with cascade"):
        deletion.delete(session, actor=None, kind="experiment", object_id=w["single"].id, artifacts=arts)
    session.rollback()
    assert (root / "runs" / str(c)).is_dir() and _count(session, Ensemble, [w["ensemble"]]) == 1

    done = deletion.delete(session, actor=None, kind="experiment", object_id=w["single"].id, cascade=True,
                           artifacts=arts)
    kinds = {(o.kind, o.id) for o in done.objects}
    assert kinds == {("experiment", w["single"].id), ("group", w["single"].groups[0].id), ("run", c),
                     ("ensemble", w["ensemble"]), ("submission", w["submission"]), ("pseudo_round", w["round"])}
    session.commit()
    for folder in (f"runs/{c}", f"ensembles/{w['ensemble']}", f"submissions/{w['submission']}",
                   f"pseudo/{w['round']}"):
        assert not (root / folder).exists(), folder
    assert (root / "runs" / str(a)).is_dir() and (root / "groups" / str(w["group"])).is_dir()
    assert _count(session, Experiment, [w["single"].id]) == 0
    assert _count(session, Ensemble, [w["ensemble"]]) + _count(session, Submission, [w["submission"]]) == 0
    assert _count(session, PseudoRound, [w["round"]]) == 0
    # what is left still adds up
    assert disk_use(session, by="experiment", artifacts=arts).total_bytes == on_disk(root)


def test_delete_removes_files_in_the_s3_test_server(session: Any, tmp_path: Path, s3_server: Any) -> None:
    root = f"s3://{s3_server.bucket()}/segboard"
    arts = Artifacts(root, cache=tmp_path / "cache", storage_options=s3_server.options)
    w = world(session, arts)
    session.commit()
    a, b, c = w["runs"]
    bucket = fsspec.filesystem("s3", **s3_server.options)
    base = root.removeprefix("s3://")
    assert bucket.exists(f"{base}/runs/{a}/checkpoints/best/model.safetensors")
    plan = deletion.delete(session, actor=None, kind="experiment", object_id=w["folds"].id, cascade=True,
                           artifacts=arts)
    assert {(o.kind, o.id) for o in plan.objects} >= {("run", a), ("run", b), ("group", w["group"]),
                                                      ("ensemble", w["ensemble"])}
    assert bucket.exists(f"{base}/runs/{a}/checkpoints/best/model.safetensors")  # not before the commit
    session.commit()
    bucket.invalidate_cache()
    for folder in (f"runs/{a}", f"runs/{b}", f"groups/{w['group']}", f"ensembles/{w['ensemble']}"):
        assert not bucket.find(f"{base}/{folder}"), folder
        assert not arts.mirror(f"{root}/{folder}").exists()  # this machine's copy went too
    assert bucket.exists(f"{base}/runs/{c}/checkpoints/best/model.safetensors")
    other = Artifacts(root, cache=tmp_path / "other-cache", storage_options=s3_server.options)
    assert disk_use(session, by="run", artifacts=other).total_bytes == sum(s for _, s in other.files(root))


def test_queued_running_read_by_a_job_or_pinned_is_refused(session: Any, tmp_path: Path) -> None:
    arts = local_artifacts(tmp_path)
    exp = create_experiment(session, actor=None, name="live", config=tiny_config(SOURCE), seeds=[0, 1, 2])
    queued, running, done = exp.run_ids
    lifecycle.claim_run(session, run_id=running, worker_name="box/cpu", device="cpu", lease_s=60)
    finish(session, arts, done)
    with pytest.raises(Conflict, match=f"run {queued} is queued: cancel it first"):
        deletion.delete(session, actor=None, kind="run", object_id=queued, artifacts=arts)
    with pytest.raises(Conflict, match=f"run {running} is running: cancel it first"):
        deletion.delete(session, actor=None, kind="run", object_id=running, artifacts=arts)
    with pytest.raises(Conflict, match="is running"):  # what is below an experiment counts
        deletion.delete(session, actor=None, kind="experiment", object_id=exp.id, artifacts=arts)
    job = jobs.create_job(session, actor=None, kind="predict", target={"run_ids": [done]})
    with pytest.raises(Conflict, match=f"job {job.id} .* reads run {done}"):
        deletion.delete(session, actor=None, kind="run", object_id=done, artifacts=arts)
    lifecycle.request_cancel_job(session, job_id=job.id, actor=None)
    set_pinned(session, actor=None, kind="group", object_id=exp.groups[0].id, pinned=True)
    with pytest.raises(Conflict, match=f"pinned \\(through group {exp.groups[0].id}\\)"):
        deletion.delete(session, actor=None, kind="run", object_id=done, artifacts=arts)
    set_pinned(session, actor=None, kind="group", object_id=exp.groups[0].id, pinned=False)
    deletion.delete(session, actor=None, kind="run", object_id=done, artifacts=arts)
    session.commit()
    assert not (tmp_path / "artifacts" / "runs" / str(done)).exists()
    assert _count(session, Run, [queued, running]) == 2


def test_viewers_and_other_members_are_refused(session: Any, tmp_path: Path) -> None:
    arts = local_artifacts(tmp_path)
    admin = members.create_member(session, actor=None, name="ada").id
    alice, bob, vic = (members.create_member(session, actor=admin, name=n, role=r).id
                       for n, r in (("alice", "member"), ("bob", "member"), ("vic", "viewer")))
    w = world(session, arts, actor=alice)
    session.commit()
    b = w["runs"][1]
    for actor in (bob, vic):
        with pytest.raises(PermissionDenied):
            deletion.delete(session, actor=actor, kind="run", object_id=b, artifacts=arts)
        with pytest.raises(PermissionDenied):
            set_pinned(session, actor=actor, kind="run", object_id=b, pinned=True)
    session.rollback()
    assert _count(session, Run, [b]) == 1
    # bob's ensemble of alice's run: alice's cascade would delete bob's ensemble, which she may not
    from worker.services.ensembles import create_ensemble

    create_ensemble(session, actor=bob, name="bob's", method="soft",
                    members=[{"kind": "run", "id": b}, {"kind": "run", "id": w["runs"][0]}])
    with pytest.raises(PermissionDenied, match="bob's"):
        deletion.delete(session, actor=alice, kind="run", object_id=b, cascade=True, artifacts=arts)
    assert set_pinned(session, actor=alice, kind="run", object_id=b, pinned=True) is True
    with pytest.raises(Conflict, match="pinned"):
        deletion.delete(session, actor=admin, kind="run", object_id=b, cascade=True, artifacts=arts)
    set_pinned(session, actor=admin, kind="run", object_id=b, pinned=False)
    deletion.delete(session, actor=admin, kind="run", object_id=b, cascade=True, artifacts=arts)
    session.commit()
    assert _count(session, Run, [b]) == 0 and _count(session, RunGroup, [w["group"]]) == 1
