"""The role rules of the service layer: who may queue, change, cancel and administer what.

Every caller (web app, CLI, jobs, HTTP API) goes through these functions, so each rule is tested
here once, on the services themselves, with real rows in a real database.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from worker.db.models import AuditEvent, MemberRole, Run, RunStatus
from worker.errors import Conflict, PermissionDenied
from worker.services import (
    datasets,
    ensembles,
    experiments,
    groups,
    jobs,
    lifecycle,
    members,
    pseudo,
    runs,
    submissions,
    workers,
)


@pytest.fixture
def team(session) -> dict[str, int]:
    """An admin (the first member), two members and a viewer."""
    admin = members.create_member(session, actor=None, name="ada")
    out = {"admin": admin.id}
    for name, role in (("alice", "member"), ("bob", "member"), ("vic", "viewer")):
        out[name] = members.create_member(session, actor=admin.id, name=name, role=role).id
    return out


def _experiment(session, actor: int, config: dict[str, Any], **kw: Any) -> Any:
    return experiments.create_experiment(session, actor=actor, config=config, **kw)


def test_the_first_member_is_an_admin_and_only_admins_add_members(session, team):
    assert members.get_member(session, member_id=team["admin"]).role is MemberRole.ADMIN
    assert members.get_member(session, member_id=team["alice"]).role is MemberRole.MEMBER
    with pytest.raises(PermissionDenied, match="only admins can add members"):
        members.create_member(session, actor=team["alice"], name="mallory")
    with pytest.raises(PermissionDenied, match="only admins can change roles"):
        members.set_member_role(session, actor=team["alice"], member_id=team["alice"], role="admin")
    members.set_member_role(session, actor=team["admin"], member_id=team["vic"], role="member")
    assert members.get_member(session, member_id=team["vic"]).role is MemberRole.MEMBER


def test_the_last_admin_cannot_be_demoted(session, team):
    with pytest.raises(Conflict, match="only admin"):
        members.set_member_role(session, actor=team["admin"], member_id=team["admin"], role="member")
    members.set_member_role(session, actor=team["admin"], member_id=team["bob"], role="admin")
    members.set_member_role(session, actor=team["bob"], member_id=team["admin"], role="member")


def test_viewers_write_nothing(session, team, config_dict, seed):
    vic = team["vic"]
    ds = seed.add_dataset(session)
    refused = [
        lambda: _experiment(session, vic, config_dict),
        lambda: datasets.register_dataset(session, actor=vic, name="x", source={"format": "mask_folder", "root": "x"},
                                          classes=["a", "b"]),
        lambda: ensembles.create_ensemble(session, actor=vic, name="e", method="mean",
                                          members=[{"kind": "run", "id": 1}, {"kind": "run", "id": 2}]),
        lambda: pseudo.create_pseudo_round(session, actor=vic, name="p", teacher_kind="run", teacher_id=1),
        lambda: jobs.create_job(session, actor=vic, kind="predict", target={"run_ids": [1]}),
        lambda: submissions.create_submission(session, actor=vic, run_id=1),
        lambda: groups.refresh_group_metrics(session, actor=vic, group_id=1),
    ]
    for call in refused:
        with pytest.raises(PermissionDenied, match="viewers cannot"):
            call()
    assert ds  # the dataset row was there; nothing else was written
    assert session.scalar(sa.select(sa.func.count(Run.id))) == 0


def test_members_change_only_their_own_runs(session, team, config_dict):
    exp = _experiment(session, team["alice"], config_dict)
    run_id = exp.run_ids[0]
    for actor in (team["bob"], team["vic"]):
        with pytest.raises(PermissionDenied):
            lifecycle.request_cancel(session, run_id=run_id, actor=actor)
        with pytest.raises(PermissionDenied):
            lifecycle.set_priority(session, run_id=run_id, priority=0, actor=actor)
        with pytest.raises(PermissionDenied):
            runs.set_run_tags(session, actor=actor, run_id=run_id, tags=["mine"])
        with pytest.raises(PermissionDenied):
            experiments.delete_experiment(session, actor=actor, experiment_id=exp.id)
    assert session.get(Run, run_id).status is RunStatus.QUEUED
    with pytest.raises(PermissionDenied, match="it is alice's; only its owner or an admin can"):
        lifecycle.request_cancel(session, run_id=run_id, actor=team["bob"])

    runs.set_run_tags(session, actor=team["alice"], run_id=run_id, tags=["mine"])
    assert lifecycle.request_cancel(session, run_id=run_id, actor=team["alice"]) is RunStatus.CANCELLED
    with pytest.raises(PermissionDenied):
        lifecycle.requeue(session, run_id=run_id, actor=team["bob"])
    lifecycle.requeue(session, run_id=run_id, actor=team["admin"])  # admins may act on any run
    assert lifecycle.request_cancel(session, run_id=run_id, actor=team["admin"]) is RunStatus.CANCELLED

    events = session.execute(
        sa.select(AuditEvent.action, AuditEvent.actor_id).where(AuditEvent.object_kind == "run")
        .order_by(AuditEvent.id)
    ).all()
    assert [tuple(e) for e in events] == [
        ("run.set_tags", team["alice"]), ("run.cancel", team["alice"]),
        ("run.requeue", team["admin"]), ("run.cancel", team["admin"]),
    ]


def test_only_the_owner_enters_a_submissions_public_score(session, team, config_dict, seed):
    exp = _experiment(session, team["alice"], config_dict)
    seed.finish(session, exp.run_ids[0], seed.metrics(0.5))
    sub = submissions.create_submission(session, actor=team["alice"], run_id=exp.run_ids[0])
    with pytest.raises(PermissionDenied):
        submissions.record_public_score(session, actor=team["bob"], submission_id=sub.id, score=0.9)
    assert submissions.record_public_score(session, actor=team["alice"], submission_id=sub.id,
                                           score=0.61).public_score == 0.61
    # anyone's finished run may be used: bob submits alice's run himself
    assert submissions.create_submission(session, actor=team["bob"], run_id=exp.run_ids[0]).id != sub.id


def test_what_jobs_record_is_refused_to_members(session, team):
    alice = team["alice"]
    for call in (
        lambda: workers.register_worker(session, actor=alice, name="gpu-1", devices=["cuda:0"]),
        lambda: workers.mark_worker_offline(session, actor=alice, name="gpu-1"),
        lambda: datasets.set_dataset_statistics(session, actor=alice, dataset_id=1, statistics={}),
        lambda: groups.set_group_oof(session, actor=alice, group_id=1, oof_store="x"),
        lambda: submissions.set_submission_file(session, actor=alice, submission_id=1, file_path="x"),
    ):
        with pytest.raises(PermissionDenied, match="only admins can"):
            call()


def test_members_set_priorities_up_to_the_cap(session, team, config_dict, monkeypatch):
    monkeypatch.setenv("SEGBOARD_MEMBER_MAX_PRIORITY", "5")
    with pytest.raises(PermissionDenied, match="members may set priorities up to 5, not 7"):
        _experiment(session, team["alice"], config_dict, priority=7)
    exp = _experiment(session, team["alice"], config_dict, priority=5)
    run_id = exp.run_ids[0]
    with pytest.raises(PermissionDenied, match="up to 5, not 9"):
        lifecycle.set_priority(session, run_id=run_id, priority=9, actor=team["alice"])
    lifecycle.set_priority(session, run_id=run_id, priority=1, actor=team["alice"])  # lowering is fine
    lifecycle.set_priority(session, run_id=run_id, priority=9, actor=team["admin"])
    # an admin's raise stands; the owner may lower it again but not raise it back
    lifecycle.set_priority(session, run_id=run_id, priority=4, actor=team["alice"])
    with pytest.raises(PermissionDenied):
        lifecycle.set_priority(session, run_id=run_id, priority=6, actor=team["alice"])
    assert _experiment(session, team["admin"], config_dict, priority=9).priority == 9


def test_a_member_cannot_queue_past_the_active_run_limit(session, team, config_dict, monkeypatch, seed):
    monkeypatch.setenv("SEGBOARD_MAX_ACTIVE_RUNS_PER_MEMBER", "3")
    alice = team["alice"]
    _experiment(session, alice, config_dict, seeds=(0, 1))
    with pytest.raises(PermissionDenied, match="4 queued or running runs; the limit per member is 3"):
        _experiment(session, alice, config_dict, seeds=(0, 1))
    one = _experiment(session, alice, config_dict)
    with pytest.raises(PermissionDenied, match="limit per member is 3"):
        _experiment(session, alice, config_dict)
    _experiment(session, team["bob"], config_dict, seeds=(0, 1, 2))  # the limit is per member
    _experiment(session, team["admin"], config_dict, seeds=(0, 1, 2, 3))  # admins are exempt

    seed.finish(session, one.run_ids[0], seed.metrics(0.4), status=RunStatus.FAILED)
    _experiment(session, alice, config_dict)  # a finished run frees its place
    # ... and requeueing a failed run takes one again
    failed = session.scalars(sa.select(Run).where(Run.owner_id == alice, Run.status == RunStatus.FAILED)).one()
    with pytest.raises(PermissionDenied, match="limit per member is 3"):
        lifecycle.requeue(session, run_id=failed.id, actor=alice)
