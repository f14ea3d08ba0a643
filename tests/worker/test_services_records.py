"""Members, datasets, runs (read side), groups, submissions, ensembles, pseudo rounds, workers, jobs, audit."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from segcore.data.synthetic import make_synthetic_coco
from worker.db.base import utcnow
from worker.db.models import AuditEvent, Dataset, EpochMetric, LogLevel, Run, RunGroup, RunLog, RunStatus, WorkerNode
from worker.errors import Conflict, InvalidInput, NotFound
from worker.services import (
    audit,
    datasets,
    ensembles,
    experiments,
    groups,
    jobs,
    members,
    pseudo,
    runs,
    submissions,
    workers,
)

# ------------------------------------------------------------------ members


def test_members_create_list_roles_and_conflicts(any_session):
    admin = members.create_member(any_session, actor=None, name="ann", email="ann@example.org", role="admin")
    bob = members.create_member(any_session, actor=admin.id, name=" bob ")
    assert bob.name == "bob" and bob.role.value == "member"
    assert [m.name for m in members.list_members(any_session)] == ["ann", "bob"]
    assert members.get_member_by_name(any_session, name="ann").id == admin.id
    assert members.set_member_role(any_session, actor=admin.id, member_id=bob.id, role="viewer").role.value == "viewer"
    with pytest.raises(Conflict, match="exists already"):
        members.create_member(any_session, actor=None, name="ann")
    with pytest.raises(Conflict, match="email"):
        members.create_member(any_session, actor=None, name="cat", email="ann@example.org")
    with pytest.raises(InvalidInput, match="role"):
        members.create_member(any_session, actor=None, name="dan", role="owner")
    with pytest.raises(InvalidInput, match="email"):
        members.create_member(any_session, actor=None, name="eve", email="nope")
    with pytest.raises(NotFound, match="member 99"):
        members.get_member(any_session, member_id=99)
    events = audit.list_events(any_session, object_kind="member")
    assert [e.action for e in events] == ["member.set_role", "member.create", "member.create"]
    assert events[0].actor_id == admin.id and events[0].detail == {"old": "member", "new": "viewer"}


# ------------------------------------------------------------------ datasets


def test_register_a_valid_dataset_with_report_and_fingerprint(any_session, tmp_path):
    source = make_synthetic_coco(tmp_path / "shapes", num_images=6, num_classes=2, size=32, num_test_images=2)
    me = members.create_member(any_session, actor=None, name="ann").id
    ds = datasets.register_dataset(any_session, actor=me, name="shapes", source=source, check_pixels=False)
    assert ds.classes[0] == "background" and len(ds.classes) == 3
    assert ds.report["ok"] is True and ds.report["num_images"] == 6 and ds.report["num_test_images"] == 2
    assert ds.fingerprint and len(ds.fingerprint) >= 16
    assert ds.source["format"] == "coco" and ds.created_by == me
    assert datasets.get_dataset_by_name(any_session, name="shapes").id == ds.id
    stats = datasets.set_dataset_statistics(any_session, actor=me, dataset_id=ds.id, statistics={"pixels": [1, 2]})
    assert stats.statistics == {"pixels": [1, 2]}
    assert [e.action for e in audit.list_events(any_session, object_kind="dataset")] == [
        "dataset.set_statistics", "dataset.register",
    ]
    with pytest.raises(Conflict, match="registered already"):
        datasets.register_dataset(any_session, actor=me, name="shapes", source=source)


def test_an_invalid_dataset_is_refused_with_its_problems_and_nothing_registered(session, tmp_path):
    source = make_synthetic_coco(tmp_path / "shapes", num_images=4, num_classes=2, size=32, num_test_images=0)
    (tmp_path / "shapes" / "images" / "img_0001.png").unlink()
    with pytest.raises(InvalidInput, match=r"(?s)not registered.*img_0001"):
        datasets.register_dataset(session, actor=None, name="broken", source=source)
    with pytest.raises(InvalidInput, match="dataset folder does not exist"):
        datasets.register_dataset(session, actor=None, name="gone",
                                  source={"format": "mask_folder", "root": str(tmp_path / "missing")},
                                  classes=["bg", "fg"])
    with pytest.raises(InvalidInput, match="format"):
        datasets.register_dataset(session, actor=None, name="odd", source={"format": "tiff", "root": "/x"})
    session.flush()
    assert session.scalar(sa.select(sa.func.count(Dataset.id))) == 0
    assert session.scalar(sa.select(sa.func.count(AuditEvent.id))) == 0


# ------------------------------------------------------------------ runs (read side) and groups


@pytest.fixture
def cv(any_session, config_dict, seed):
    me = members.create_member(any_session, actor=None, name="ann").id
    exp = experiments.create_experiment(any_session, actor=me, config=config_dict, n_folds=2, seeds=(0, 1),
                                        tags=["a"])
    return me, exp


def test_run_lists_filters_detail_and_counts(any_session, cv, seed):
    me, exp = cv
    a, b, c, d = exp.run_ids
    seed.finish(any_session, a, seed.metrics(0.5))
    seed.finish(any_session, b, seed.metrics(0.7))
    any_session.get(Run, c).status = RunStatus.RUNNING
    any_session.get(Run, d).priority = 9
    any_session.flush()
    assert [r.id for r in runs.list_runs(any_session)] == [d, c, b, a]
    assert [r.id for r in runs.list_runs(any_session, status="succeeded", order="best")] == [b, a]
    assert [r.id for r in runs.list_runs(any_session, status=["queued", "running"], order="queue")] == [d, c]
    assert runs.count_runs(any_session, tag="a") == 4 and runs.count_runs(any_session, tag="b") == 0
    assert runs.count_runs(any_session, experiment_id=exp.id, status=RunStatus.SUCCEEDED) == 2
    assert runs.count_runs(any_session, search="fold1") == 2
    detail = runs.get_run(any_session, run_id=b)
    assert detail.best_metrics["miou"] == 0.7 and detail.config["training"]["seed"] == 1
    with pytest.raises(InvalidInput, match="status"):
        runs.list_runs(any_session, status="done")
    with pytest.raises(InvalidInput, match="order"):
        runs.list_runs(any_session, order="random")
    with pytest.raises(NotFound, match="run 999"):
        runs.get_run(any_session, run_id=999)
    tagged = runs.set_run_tags(any_session, actor=me, run_id=a, tags=["x", " x", "y", ""])
    assert tagged.tags == ["x", "y"]


def test_epoch_metrics_and_log_tail(any_session, cv):
    _, exp = cv
    run_id = exp.run_ids[0]
    any_session.add_all([EpochMetric(run_id=run_id, epoch=e, train_loss=1 / e, lr=1e-3, val={"miou": e / 10})
                         for e in (2, 1, 3)])
    any_session.add_all([RunLog(run_id=run_id, level=LogLevel.INFO, message=f"line {i}") for i in range(5)])
    any_session.flush()
    assert [m.epoch for m in runs.epoch_metrics(any_session, run_id=run_id)] == [1, 2, 3]
    assert [m.epoch for m in runs.epoch_metrics(any_session, run_id=run_id, since_epoch=2)] == [3]
    first = runs.run_logs(any_session, run_id=run_id, limit=2)
    rest = runs.run_logs(any_session, run_id=run_id, after_id=first[-1].id)
    assert [line.message for line in first + rest] == [f"line {i}" for i in range(5)]


def test_queue_summary_counts_runs_jobs_and_online_workers(any_session, cv):
    _, exp = cv
    any_session.get(Run, exp.run_ids[0]).status = RunStatus.RUNNING
    jobs.create_job(any_session, actor=None, kind="predict", target={"run_ids": exp.run_ids[:1]})
    workers.register_worker(any_session, name="gpu-box-1", hostname="box1", devices=["cuda:0"])
    workers.register_worker(any_session, name="gpu-box-2", hostname="box2", devices=["cuda:0"])
    any_session.execute(sa.update(WorkerNode).where(WorkerNode.name == "gpu-box-2")
                        .values(last_seen_at=utcnow() - dt.timedelta(hours=1)))
    summary = runs.queue_summary(any_session)
    assert summary.runs_by_status["running"] == 1 and summary.runs_by_status["queued"] == 3
    assert summary.jobs_by_status["queued"] == 1 and summary.workers_online == 1
    assert [r.id for r in summary.running] == exp.run_ids[:1] and len(summary.queued) == 3


def test_config_diff_against_the_parent(any_session, cv, config_dict):
    _, exp = cv
    parent = exp.run_ids[0]
    config_dict["training"]["epochs"] = 9
    config_dict["augmentation"] = {"preset": "strong"}
    clone = experiments.create_experiment(any_session, actor=None, config=config_dict, parent_run_id=parent).run_ids[0]
    diff = {c.path: (c.old, c.new) for c in runs.config_diff(any_session, run_id=clone)}
    assert diff["training.epochs"] == (3, 9) and diff["augmentation.preset"] == ("basic", "strong")
    assert diff["data.split.kind"] == ("kfold", "holdout")
    assert runs.config_diff(any_session, run_id=parent) == []


def test_group_statistics_and_oof(any_session, cv, seed):
    me, exp = cv
    gid = exp.groups[0].id
    for run_id, miou in zip(exp.run_ids, (0.5, 0.6, 0.7, 0.8), strict=True):
        seed.finish(any_session, run_id, seed.metrics(miou))
    g = groups.get_group(any_session, group_id=gid)
    assert g.metrics["miou"].n == 4 and g.metrics["miou"].mean == pytest.approx(0.65)
    assert g.metrics["miou"].std == pytest.approx(0.1290994, rel=1e-5)
    g = groups.set_group_oof(any_session, actor=me, group_id=gid, oof_store="/s/oof", test_store="/s/test",
                             oof_metrics=seed.metrics(0.66))
    assert g.oof_score == pytest.approx(0.66) and g.oof_store == "/s/oof" and g.test_store == "/s/test"
    stored = groups.refresh_group_metrics(any_session, actor=me, group_id=gid)
    assert stored.status_counts == {"succeeded": 4}
    assert [x.id for x in groups.list_groups(any_session, experiment_id=exp.id)] == [gid]
    with pytest.raises(InvalidInput, match="oof_metrics"):
        groups.set_group_oof(any_session, actor=me, group_id=gid, oof_metrics={"miou": "high"})


# ------------------------------------------------------------------ submissions


def test_submissions_and_public_scores(any_session, cv):
    me, exp = cv
    run_id = exp.run_ids[0]
    sub = submissions.create_submission(any_session, actor=me, run_id=run_id, tta={"flips": ["h"]}, note="first")
    assert sub.public_score is None and sub.file_path is None
    sub = submissions.set_submission_file(any_session, actor=me, submission_id=sub.id, file_path="/a/sub.csv")
    scored = submissions.record_public_score(any_session, actor=me, submission_id=sub.id, score="0.8123 ", note="LB")
    assert scored.public_score == pytest.approx(0.8123) and scored.score_entered_by == me
    # the score's note is its own: the submission keeps the note it was made with
    assert scored.score_entered_at is not None and scored.score_note == "LB" and scored.note == "first"
    second = submissions.create_submission(any_session, actor=me, run_id=run_id)
    submissions.record_public_score(any_session, actor=me, submission_id=second.id, score=0.8)
    assert len(submissions.list_submissions(any_session, run_id=run_id)) == 2
    assert len(submissions.list_submissions(any_session, run_id=run_id, scored_only=True)) == 2
    group_sub = submissions.create_submission(any_session, actor=me, group_id=exp.groups[0].id)
    assert group_sub.group_id == exp.groups[0].id
    events = audit.list_events(any_session, object_kind="submission", action="submission.record_public_score")
    assert events[-1].detail == {"old": None, "new": pytest.approx(0.8123)}


@pytest.mark.parametrize("score", ["good", "", None, True, float("nan"), float("inf"), [0.8]])
def test_a_public_score_must_be_a_number(session, config_dict, score):
    run_id = experiments.create_experiment(session, actor=None, config=config_dict).run_ids[0]
    sub = submissions.create_submission(session, actor=None, run_id=run_id)
    with pytest.raises(InvalidInput, match="public score must be a"):
        submissions.record_public_score(session, actor=None, submission_id=sub.id, score=score)
    assert submissions.get_submission(session, submission_id=sub.id).public_score is None


@pytest.mark.parametrize(("score", "shown"), [(-5, "got -5"), (1e308, "got 1e+308"), (81.23, "type 0.8123, not 81.23")])
def test_a_public_score_is_bounded_by_its_metrics_range(session, config_dict, score, shown):
    run_id = experiments.create_experiment(session, actor=None, config=config_dict).run_ids[0]
    sub = submissions.create_submission(session, actor=None, run_id=run_id)
    with pytest.raises(InvalidInput, match="between 0 and 1") as err:
        submissions.record_public_score(session, actor=None, submission_id=sub.id, score=score)
    assert shown in str(err.value) and len(str(err.value)) < 200
    assert submissions.get_submission(session, submission_id=sub.id).public_score is None
    for edge in (0, 1, "0.0", "1"):
        assert submissions.record_public_score(session, actor=None, submission_id=sub.id, score=edge).public_score in (0, 1)


def test_a_submission_has_one_source(session, config_dict):
    run_id = experiments.create_experiment(session, actor=None, config=config_dict).run_ids[0]
    with pytest.raises(InvalidInput, match="exactly one"):
        submissions.create_submission(session, actor=None)
    with pytest.raises(InvalidInput, match="exactly one"):
        submissions.create_submission(session, actor=None, run_id=run_id, ensemble_id=1)
    with pytest.raises(NotFound, match="ensemble 7"):
        submissions.create_submission(session, actor=None, ensemble_id=7)
    with pytest.raises(NotFound, match="submission 7"):
        submissions.record_public_score(session, actor=None, submission_id=7, score=0.5)


# ------------------------------------------------------------------ ensembles and pseudo-label rounds


def test_ensembles_with_lineage(any_session, cv, seed):
    me, exp = cv
    ds = seed.add_dataset(any_session)
    for run_id in exp.run_ids:
        any_session.get(Run, run_id).dataset_id = ds
    any_session.flush()
    a, b = exp.run_ids[:2]
    ens = ensembles.create_ensemble(
        any_session, actor=me, name="a+b", method="weighted",
        members=[{"kind": "run", "id": a, "weight": 0.3}, {"kind": "run", "id": b, "weight": 0.7}],
        tta={"flips": ["h"]}, val_metrics=seed.metrics(0.75), member_scores=[0.7, 0.72],
    )
    assert ens.val_score == pytest.approx(0.75) and ens.dataset_id == ds and ens.members[1].weight == 0.7
    nested = ensembles.create_ensemble(any_session, actor=me, name="nested", method="soft",
                                       members=[{"kind": "ensemble", "id": ens.id}, {"kind": "run", "id": a}])
    assert nested.val_score is None and nested.dataset_id == ds
    done = ensembles.set_ensemble_result(any_session, actor=me, ensemble_id=nested.id, status="succeeded",
                                         test_store="/e/test", val_metrics=seed.metrics(0.76))
    assert done.val_score == pytest.approx(0.76) and done.test_store == "/e/test"
    assert [e.id for e in ensembles.list_ensembles(any_session, dataset_id=ds)] == [nested.id, ens.id]
    with pytest.raises(InvalidInput, match="at least two"):
        ensembles.create_ensemble(any_session, actor=me, name="one", method="soft", members=[{"kind": "run", "id": a}])
    with pytest.raises(InvalidInput, match="method"):
        ensembles.create_ensemble(any_session, actor=me, name="x", method="median",
                                  members=[{"kind": "run", "id": a}, {"kind": "run", "id": b}])
    with pytest.raises(InvalidInput, match="twice"):
        ensembles.create_ensemble(any_session, actor=me, name="x", method="soft",
                                  members=[{"kind": "run", "id": a}, {"kind": "run", "id": a}])
    with pytest.raises(NotFound, match="group 404"):
        ensembles.create_ensemble(any_session, actor=me, name="x", method="soft",
                                  members=[{"kind": "run", "id": a}, {"kind": "group", "id": 404}])
    other = seed.add_dataset(any_session, name="other")
    any_session.get(Run, b).dataset_id = other
    any_session.flush()
    with pytest.raises(InvalidInput, match="different datasets"):
        ensembles.create_ensemble(any_session, actor=me, name="x", method="soft",
                                  members=[{"kind": "run", "id": a}, {"kind": "run", "id": b}])


def test_pseudo_rounds_students_and_lineage(any_session, cv, config_dict, seed):
    me, exp = cv
    teacher = exp.run_ids[0]
    r1 = pseudo.create_pseudo_round(any_session, actor=me, name="r1", teacher_kind="run", teacher_id=teacher,
                                    params={"pixel_threshold": 0.95, "image_threshold": 0.6, "limit": 100},
                                    report={"images_kept": 40})
    assert r1.params["pixel_threshold"] == 0.95 and r1.status is RunStatus.QUEUED and r1.student_run_ids == []
    produced = seed.add_dataset(any_session, name="pseudo-r1")
    r1 = pseudo.set_pseudo_round_result(any_session, actor=me, round_id=r1.id, status="succeeded",
                                        report={"images_kept": 38}, dataset_id=produced)
    assert r1.dataset_id == produced and r1.report == {"images_kept": 38}
    students = experiments.create_experiment(any_session, actor=me, config=config_dict, seeds=(0, 1),
                                             pseudo_round_id=r1.id).run_ids
    seed.finish(any_session, students[0], seed.metrics(0.8))
    sub = submissions.create_submission(any_session, actor=me, run_id=students[0])
    submissions.record_public_score(any_session, actor=me, submission_id=sub.id, score=0.77)
    r2 = pseudo.create_pseudo_round(any_session, actor=me, name="r2", teacher_kind="run", teacher_id=students[0],
                                    parent_round_id=r1.id)
    got = pseudo.get_pseudo_round(any_session, round_id=r1.id)
    assert got.student_run_ids == students and got.best_student_val == pytest.approx(0.8)
    assert got.best_student_public == pytest.approx(0.77)
    assert [r.id for r in pseudo.lineage(any_session, round_id=r2.id)] == [r1.id, r2.id]
    assert [r.name for r in pseudo.list_pseudo_rounds(any_session)] == ["r1", "r2"]
    with pytest.raises(InvalidInput, match="teacher kind"):
        pseudo.create_pseudo_round(any_session, actor=me, name="x", teacher_kind="model", teacher_id=1)
    with pytest.raises(InvalidInput, match="thresholds"):
        pseudo.create_pseudo_round(any_session, actor=me, name="x", teacher_kind="run", teacher_id=teacher,
                                   params={"pixel_threshold": 1.5})
    with pytest.raises(NotFound, match="ensemble 5"):
        pseudo.create_pseudo_round(any_session, actor=me, name="x", teacher_kind="ensemble", teacher_id=5)



def test_a_student_is_compared_with_its_teacher_only_on_the_teachers_images(any_session, cv, config_dict, seed):
    me, exp = cv  # 2 folds x 2 seeds
    teacher = exp.run_ids[0]  # fold 0
    produced = seed.add_dataset(any_session, name="pseudo")

    def round_of(name: str, kind: str, teacher_id: int) -> int:
        rnd = pseudo.create_pseudo_round(any_session, actor=me, name=name, teacher_kind=kind, teacher_id=teacher_id)
        pseudo.set_pseudo_round_result(any_session, actor=me, round_id=rnd.id, status="succeeded", dataset_id=produced)
        return rnd.id

    def seen(round_id: int) -> tuple:
        r = pseudo.get_pseudo_round(any_session, round_id=round_id)
        return r.best_student_val, r.student_validated_on, r.teacher_validated_on, r.comparable_with_teacher

    # a hold-out student of a fold run: other images, not comparable
    r1 = round_of("holdout", "run", teacher)
    student = experiments.create_experiment(any_session, actor=me, name="s1", config=config_dict,
                                            pseudo_round_id=r1).run_ids[0]
    seed.finish(any_session, student, seed.metrics(0.9))
    assert seen(r1) == (pytest.approx(0.9), "hold-out", "fold 1 of 2", False)
    # a student with the teacher's folds is compared at the teacher's fold, even when another fold scores higher
    r2 = round_of("kfold", "run", teacher)
    fold0, fold1 = experiments.create_experiment(any_session, actor=me, name="s2", config=config_dict, n_folds=2,
                                                 pseudo_round_id=r2).run_ids
    seed.finish(any_session, fold0, seed.metrics(0.75))
    seed.finish(any_session, fold1, seed.metrics(0.95))
    assert seen(r2) == (pytest.approx(0.75), "fold 1 of 2", "fold 1 of 2", True)
    # a group teacher: the student groups' out-of-fold score, on the same folds
    r3 = round_of("group", "group", exp.groups[0].id)
    students = experiments.create_experiment(any_session, actor=me, name="s3", config=config_dict, n_folds=2,
                                             pseudo_round_id=r3)
    any_session.get(RunGroup, students.groups[0].id).oof_score = 0.81
    any_session.flush()
    assert seen(r3) == (pytest.approx(0.81), "out-of-fold (2 folds)", "out-of-fold (2 folds)", True)

# ------------------------------------------------------------------ workers, jobs, audit


def test_workers_register_heartbeat_and_go_stale(any_session, cv):
    _, exp = cv
    w = workers.register_worker(any_session, name="box-1", hostname="box1", devices=["cuda:0", "cuda:1"])
    assert w.status.value == "idle" and w.devices == ["cuda:0", "cuda:1"]
    busy = workers.touch_worker(any_session, name="box-1", current_run_id=exp.run_ids[0])
    assert busy.status.value == "busy" and busy.current_run_id == exp.run_ids[0]
    again = workers.register_worker(any_session, name="box-1", hostname="box1", devices=["cuda:0"])
    assert again.id == w.id and again.current_run_id is None
    any_session.execute(sa.update(WorkerNode).values(last_seen_at=utcnow() - dt.timedelta(minutes=5)))
    assert workers.list_workers(any_session)[0].status.value == "offline"
    assert workers.mark_worker_offline(any_session, name="box-1").status.value == "offline"
    with pytest.raises(NotFound, match="register_worker"):
        workers.touch_worker(any_session, name="ghost")


def test_jobs_create_and_list(any_session, cv):
    me, exp = cv
    job = jobs.create_job(any_session, actor=me, kind="submission", target={"run_id": exp.run_ids[0]},
                          params={"format": "csv_rle"}, priority=3)
    assert job.status is RunStatus.QUEUED and job.queued_at is not None and job.priority == 3
    assert [j.id for j in jobs.list_jobs(any_session, status="queued", kind="submission")] == [job.id]
    assert jobs.get_job(any_session, job_id=job.id).params == {"format": "csv_rle"}
    with pytest.raises(InvalidInput, match="job kind"):
        jobs.create_job(any_session, actor=me, kind="train", target={"run_id": 1})
    with pytest.raises(InvalidInput, match="target"):
        jobs.create_job(any_session, actor=me, kind="predict", target={})


def test_every_write_leaves_an_audit_event_naming_the_actor(session, config_dict, seed):
    me = members.create_member(session, actor=None, name="ann").id
    exp = experiments.create_experiment(session, actor=me, config=config_dict, n_folds=2)
    for run_id in exp.run_ids:
        seed.finish(session, run_id, seed.metrics(0.6))
    sub = submissions.create_submission(session, actor=me, run_id=exp.run_ids[0])
    submissions.record_public_score(session, actor=me, submission_id=sub.id, score=0.6)
    ens = ensembles.create_ensemble(session, actor=me, name="e", method="soft",
                                    members=[{"kind": "run", "id": i} for i in exp.run_ids])
    pseudo.create_pseudo_round(session, actor=me, name="p", teacher_kind="ensemble", teacher_id=ens.id)
    groups.set_group_oof(session, actor=me, group_id=exp.groups[0].id, oof_metrics={"miou": 0.6})
    jobs.create_job(session, actor=me, kind="ensemble", target={"ensemble_id": ens.id})
    runs.set_run_tags(session, actor=me, run_id=exp.run_ids[0], tags=["t"])
    actions = [e.action for e in audit.list_events(session, actor_id=me)]
    assert actions == [
        "run.set_tags", "job.create", "group.set_oof", "pseudo.create", "ensemble.create",
        "submission.record_public_score", "submission.create", "experiment.create",
    ]
