"""The steps of the demo build, each through the services, each finding what an earlier build made."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from worker.demo._build import ABLATION, ADMIN, BASELINE, ENSEMBLE, ROUND, DemoFailed, _Builder, _config

__all__ = ["run_steps"]


def _member(b: _Builder) -> int:
    from worker.errors import NotFound
    from worker.services import members

    try:
        return b.read(members.get_member_by_name, name=ADMIN).id
    except NotFound:
        created = b.submit(lambda s: members.create_member(s, actor=None, name=ADMIN, role="admin"))
        b.say(f"member {ADMIN} added (admin); the dashboard acts as {ADMIN}")
        return created.id


def _dataset(b: _Builder) -> int:
    from worker.errors import NotFound
    from worker.services import confinement, datasets

    assert b.data is not None
    data = b.data
    try:
        return b.read(datasets.get_dataset_by_name, name=data.name).id
    except NotFound:
        pass
    b.say(f"registering {data.label} as dataset {data.name}")
    ds = b.submit(lambda s: datasets.register_dataset(
        s, actor=b.actor, name=data.name, source=data.source, classes=data.classes, ignore_index=255,
        check_pixels=False, roots=confinement.data_roots(b.settings)))
    return ds.id


def _experiment(b: _Builder, name: str, *, grid: dict[str, Any] | None = None) -> Any:
    from worker.services import confinement, experiments

    assert b.data is not None
    for exp in b.read(experiments.list_experiments, dataset_id=b.dataset_id, limit=1000):
        if exp.name == name:
            return b.read(experiments.get_experiment, experiment_id=exp.id)
    config = _config(b.data, b.profile, name)
    exp = b.submit(lambda s: experiments.create_experiment(
        s, actor=b.actor, name=name, config=config, n_folds=b.profile.folds, seeds=[0], grid=grid,
        dataset_id=b.dataset_id, tags=["demo"], roots=confinement.data_roots(b.settings)),
        runs=lambda e: e.run_ids)
    what = f"an ablation of {grid['axis']} ({', '.join(map(str, grid['values']))})" if grid else "a baseline"
    b.say(f"experiment {name}: {what}, {b.profile.folds} folds x {b.profile.epochs} epoch(s) at "
          f"{b.data.image_size[0]}x{b.data.image_size[1]}; runs {', '.join(map(str, exp.run_ids))} queued")
    return exp


def _group_oof(b: _Builder, group_id: int) -> Any:
    from worker.db.models import RunStatus
    from worker.services import groups, runs

    def check(s: Any) -> Any:
        rows = runs.list_runs(s, group_id=group_id, limit=1000)
        failed = [r for r in rows if r.status in (RunStatus.FAILED, RunStatus.CANCELLED)]
        if failed:
            raise DemoFailed(f"run {failed[0].id} ({failed[0].name}) {failed[0].status.value}: "
                             f"{failed[0].error_message or 'no message'}")
        group = groups.get_group(s, group_id=group_id)
        return group if group.oof_score is not None else None

    group = b.wait(f"the out-of-fold score of group {group_id}", check)
    b.say(f"group {group.id} ({group.label}): out-of-fold {group.monitor_metric} {group.oof_score:.4f} over "
          f"{group.oof_metrics.get('num_images', '?')} images")
    return group


def _predicted(b: _Builder, *, group_id: int | None = None, run_id: int | None = None) -> None:
    """Queue the test prediction of a group or run (unless it has one, or one is queued) and wait for it."""
    from worker.db.models import RunStatus
    from worker.services import groups, jobs, runs

    if group_id is not None:
        store, target, what = b.read(groups.get_group, group_id=group_id).test_store, {"group_ids": [group_id]}, \
            f"group {group_id}"
    else:
        store, target, what = b.read(runs.get_run, run_id=run_id).test_store, {"run_ids": [run_id]}, f"run {run_id}"
    if store:
        return
    earlier = [j for j in b.read(jobs.list_jobs, kind="predict", limit=1000)
               if j.target == target and j.status not in (RunStatus.FAILED, RunStatus.CANCELLED)]
    if earlier:
        job = earlier[0]
    else:
        job = b.submit(lambda s: jobs.create_job(s, actor=b.actor, kind="predict", target=target,
                                                 params={"split": "test", "tta": None}),
                       jobs=lambda j: [j.id])
        b.say(f"test prediction of {what} queued (job {job.id})")
    b.job_done(job.id, f"the test prediction of {what}")
    b.say(f"test prediction of {what} stored")


def _public_score(b: _Builder, kind: str, object_id: int) -> float:
    """Score the test prediction against the kept-aside masks, as the competition site would."""
    import numpy as np
    from PIL import Image

    from segcore.oof import score_store
    from worker.services.probabilities import resolve_probabilities

    assert b.data is not None
    answers = b.data.answers
    found = b.read(resolve_probabilities, actor=b.actor, kind=kind, id=object_id, split="test",
                   artifacts=b.artifacts)
    metrics = score_store(found.reader, lambda stem: np.asarray(Image.open(Path(answers) / f"{stem}.png")),
                          ignore_index=255)
    return float(metrics["miou"])


def _submitted(b: _Builder, kind: str, object_id: int) -> None:
    """A submission of a run, group or ensemble, its file written by a job, and its public score entered."""
    from worker.db.models import RunStatus
    from worker.services import jobs, submissions

    source = {f"{kind}_id": object_id}
    subs = [x for x in b.read(submissions.list_submissions, **source)
            if x.status not in (RunStatus.FAILED, RunStatus.CANCELLED)]
    if subs and subs[0].public_score is not None:
        return
    if not subs:
        def create(s: Any) -> Any:
            sub = submissions.create_submission(s, actor=b.actor, format="csv_rle", note="demo", **source)
            return sub, jobs.create_job(s, actor=b.actor, kind="submission", target={"submission_id": sub.id},
                                        params={})

        sub, _ = b.submit(create, jobs=lambda r: [r[1].id])
        b.say(f"submission {sub.id} of {kind} {object_id} queued")
    else:
        sub = subs[0]

    def written(s: Any) -> Any:
        got = submissions.get_submission(s, submission_id=sub.id)
        if got.status in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise DemoFailed(f"submission {sub.id} {got.status.value}: {got.error_message or 'no message'}")
        return got if got.status is RunStatus.SUCCEEDED else None

    b.wait(f"the file of submission {sub.id}", written)
    score = _public_score(b, kind, object_id)
    b.submit(lambda s: submissions.record_public_score(s, actor=b.actor, submission_id=sub.id, score=score,
                                                       note="scored on the held-out test masks"))
    b.say(f"submission {sub.id} of {kind} {object_id} written; public mIoU {score:.4f} entered")


def _ensemble(b: _Builder, group_ids: list[int]) -> int:
    from worker.db.models import RunStatus
    from worker.services import ensembles

    found = [e for e in b.read(ensembles.list_ensembles, dataset_id=b.dataset_id) if e.name == ENSEMBLE]
    if found:
        ens_id = found[0].id
    else:
        members = [{"kind": "group", "id": g} for g in group_ids]
        saved = b.submit(lambda s: ensembles.save_candidate(
            s, actor=b.actor, name=ENSEMBLE, members=members, method="soft", note="demo",
            dataset_root=b.settings.dataset_root, artifacts=b.artifacts),
            jobs=lambda r: [r.job.id] if r.job is not None else [])
        ens_id = saved.ensemble.id
        b.say(f"ensemble {ens_id} ({ENSEMBLE}) of groups {', '.join(map(str, group_ids))} saved: "
              f"validation mIoU {saved.ensemble.val_score:.4f}; {saved.next_step}")

    def combined(s: Any) -> Any:
        ens = ensembles.get_ensemble(s, ensemble_id=ens_id)
        if ens.status in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise DemoFailed(f"ensemble {ens_id} {ens.status.value}: {ens.error_message or 'no message'}")
        return ens if ens.status is RunStatus.SUCCEEDED and ens.test_store else None

    b.wait(f"the test prediction of ensemble {ens_id}", combined)
    b.say(f"ensemble {ens_id}: members' test predictions combined")
    return ens_id


def _round(b: _Builder, ensemble_id: int) -> Any:
    from worker.db.models import RunStatus
    from worker.services import candidates, jobs, pseudo

    found = [r for r in b.read(pseudo.list_pseudo_rounds, dataset_id=b.dataset_id) if r.name == ROUND]
    if found:
        rnd = found[0]
    else:
        params = {"pixel_threshold": b.profile.pixel_threshold, "image_threshold": b.profile.pixel_threshold,
                  "max_low_confidence": 1.0}
        preview = b.read(candidates.preview_pseudo_round, params=params, samples=0, teacher_kind="ensemble",
                         teacher_id=ensemble_id, dataset_root=b.settings.dataset_root, artifacts=b.artifacts)
        report = {k: v for k, v in preview["report"].items() if k != "images"}
        report["kept_ids"] = [d["id"] for d in preview["report"].get("images", []) if d.get("kept")]

        def create(s: Any) -> Any:
            made = pseudo.create_pseudo_round(s, actor=b.actor, name=ROUND, teacher_kind="ensemble",
                                              teacher_id=ensemble_id, params=params, report=report)
            return made, jobs.create_job(s, actor=b.actor, kind="pseudo", target={"round_id": made.id},
                                         params=params)

        rnd, job = b.submit(create, jobs=lambda r: [r[1].id])
        b.say(f"pseudo-label round {rnd.id} taught by ensemble {ensemble_id} created: keeps "
              f"{len(report['kept_ids'])} test images; job {job.id} writes its dataset")

    def written(s: Any) -> Any:
        got = pseudo.get_pseudo_round(s, round_id=rnd.id)
        if got.status in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise DemoFailed(f"pseudo-label round {rnd.id} {got.status.value}: {got.error_message or 'no message'}")
        return got if got.dataset_id is not None and got.status is RunStatus.SUCCEEDED else None

    return b.wait(f"the pseudo-labelled dataset of round {rnd.id}", written)


def _student(b: _Builder, rnd: Any, baseline: Any) -> int:
    from worker.services import confinement, datasets, experiments, runs

    name = f"{BASELINE}-student-r{rnd.id}"
    for exp in b.read(experiments.list_experiments, dataset_id=b.dataset_id, limit=1000):
        if exp.name == name:
            return b.read(experiments.get_experiment, experiment_id=exp.id).run_ids[0]
    teacher_run = next(r for r in b.read(runs.list_runs, group_id=baseline.groups[0].id, order="oldest")
                       if r.fold == 0)
    pseudo_root = b.read(datasets.get_dataset, dataset_id=rnd.dataset_id).source["root"]
    cfg = copy.deepcopy(b.read(runs.get_run, run_id=teacher_run.id).config)
    cfg["name"] = name
    cfg["data"]["pseudo_labels"] = [pseudo_root]
    cfg["data"].pop("fingerprint", None)  # the same split as the teacher's fold 0, so the two compare
    exp = b.submit(lambda s: experiments.create_experiment(
        s, actor=b.actor, name=name, config=cfg, n_folds=1, seeds=[0], dataset_id=b.dataset_id,
        parent_run_id=teacher_run.id, pseudo_round_id=rnd.id, tags=["demo", "pseudo", f"round-{rnd.id}"],
        roots=confinement.data_roots(b.settings)), runs=lambda e: e.run_ids)
    b.say(f"student run {exp.run_ids[0]} queued: fold 0 of the baseline's split, with round {rnd.id}'s pseudo-labels")
    return exp.run_ids[0]


def _run_finished(b: _Builder, run_id: int) -> None:
    from worker.db.models import RunStatus
    from worker.services import runs

    def check(s: Any) -> Any:
        run = runs.get_run(s, run_id=run_id)
        if run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise DemoFailed(f"run {run_id} {run.status.value}: {run.error_message or 'no message'}")
        return run if run.status is RunStatus.SUCCEEDED else None

    b.wait(f"run {run_id}", check)


def _statistics(b: _Builder) -> None:
    """The job that counts every image of the dataset (its charts), queued as registering does."""
    from worker.db.models import RunStatus
    from worker.services import datasets, jobs

    if b.read(datasets.get_dataset, dataset_id=b.dataset_id).statistics:
        return
    earlier = [j for j in b.read(jobs.list_jobs, kind="dataset_import", limit=1000)
               if j.target == {"dataset_id": b.dataset_id} and j.status not in (RunStatus.FAILED, RunStatus.CANCELLED)]
    job = earlier[0] if earlier else b.submit(
        lambda s: jobs.create_job(s, actor=b.actor, kind="dataset_import", target={"dataset_id": b.dataset_id}),
        jobs=lambda j: [j.id])
    b.job_done(job.id, "the dataset's statistics")
    b.say("dataset statistics: every image counted")


def run_steps(b: _Builder) -> dict[str, Any]:
    """Every step in order; returns the ids of what was built."""
    b.actor = _member(b)
    b.dataset_id = _dataset(b)
    _statistics(b)
    baseline = _experiment(b, BASELINE)
    ablation = _experiment(b, ABLATION, grid={"axis": "model.arch", "values": ["FPN", "Linknet"]})
    group_ids = [g.id for g in baseline.groups] + [g.id for g in ablation.groups]
    for group_id in group_ids:
        _group_oof(b, group_id)
        _predicted(b, group_id=group_id)
        _submitted(b, "group", group_id)
    ensemble_id = _ensemble(b, group_ids)
    _submitted(b, "ensemble", ensemble_id)
    rnd = _round(b, ensemble_id)
    student = _student(b, rnd, baseline)
    _run_finished(b, student)
    _predicted(b, run_id=student)
    _submitted(b, "run", student)
    b.say("the demo workspace is complete: every page of the dashboard has content")
    return {"dataset": b.dataset_id, "member": b.actor, "runs": baseline.run_ids + ablation.run_ids + [student],
            "groups": group_ids, "ensemble": ensemble_id, "round": rnd.id, "student": student}
