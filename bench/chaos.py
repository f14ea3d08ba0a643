"""Chaos: a scripted workflow against a live ``segboard up`` while its components are SIGKILLed.

The workflow, in rounds until every kill is done: submit k-fold runs of a tiny config (CPU, 64 px
synthetic data), wait for them, save an ensemble of the fold runs (its members' test prediction
job, then the ensemble job), make a submission of it (the submission job) and enter a public
score. Meanwhile a chaos thread SIGKILLs a random component N times, each after a random pause:

- ``training``: the worker's pool child while it trains a run (the reaper requeues the run when
  its lease expires; it resumes from its last checkpoint);
- ``worker``: the worker's main process (``segboard up`` restarts it and requeues its run at once);
- ``redis``: the embedded Redis (restarted on its port; the reaper republishes lost messages);
- ``webapp``: the Streamlit server (restarted; ``/_stcore/health`` answers again).

``up``'s reaper is a thread of ``up``, not a process: it cannot be SIGKILLed on its own (``up``
restarts the thread if it ever ends), so it is not among the targets.

After each kill the thread waits for recovery (the component is back and the work it held moves
again: the killed run claimed anew or finished, a queued run claimed after a Redis kill) and
records the time. At the end it checks every run: lost = not succeeded (failed, cancelled, or not
finished within the drain time), epochs missing = epochs of a succeeded run absent from
``epoch_metrics`` or from its ``metrics.jsonl``.

Prints runs submitted / finished / lost, epochs missing, workflow steps and errors, per-kill
recovery times and the worst; the last line is one JSON object.

Usage: python bench/chaos.py [--kills 20] [--folds 3] [--epochs 15] [--seed 0] [--no-webapp]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _child(pid: int, needle: str) -> int | None:
    return next((c for c in _children(pid) if needle in _cmdline(c)), None)


def _wait(predicate: Any, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return True
        time.sleep(interval)
    return False


class Platform:
    """A ``segboard up`` started here, and read access to its database."""

    def __init__(self, home: Path, data: Path, webapp: bool) -> None:
        from worker.db.session import make_engine, make_session_factory
        from worker.queue.embedded import free_port
        from worker.settings import get_settings

        self.home, self.webapp = home, webapp
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SEGBOARD_")}
        self.env.update({
            "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "SEGBOARD_HOME": str(home),
            "SEGBOARD_DATASET_ROOT": str(data), "SEGBOARD_HEARTBEAT_S": "0.5", "SEGBOARD_LEASE_S": "4",
            "SEGBOARD_REAPER_INTERVAL_S": "0.5", "SEGBOARD_WORKER_NAME": "chaos",
            # the harness kills the same run's worker again and again on purpose; the rule that fails a
            # run after repeated losses (usually out of memory) is tested in the suite, not here
            "SEGBOARD_MAX_WORKERS_LOST": "100",
        })
        self.log = home / "up.log"
        home.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "worker.cli", "up", "--port", str(self.port)]
        if not webapp:
            cmd.append("--no-webapp")
        with open(self.log, "w") as out:
            self.up = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        if not _wait(lambda: "SegBoard is up" in self.log.read_text(), 120):
            raise RuntimeError("segboard up did not start: " + self.log.read_text()[-2000:])
        self.settings = get_settings(home=home, dataset_root=str(data),
                                     database_url=f"sqlite:///{home / 'segboard.db'}")
        self.factory = make_session_factory(make_engine(self.settings))
        self.dataset_id: int | None = None

    def register(self, source: Any) -> None:
        from worker.db.session import session_scope
        from worker.services.datasets import register_dataset

        with session_scope(self.factory) as s:
            self.dataset_id = register_dataset(s, actor=None, name="chaos", source=source,
                                               classes=["background", "a", "b"],
                                               dataset_root=str(self.settings.dataset_root)).id

    def redis_port(self) -> int:
        state = json.loads((self.home / "embedded.json").read_text())
        return int(state["redis_url"].rsplit(":", 1)[1].split("/")[0])

    def healthy_web(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_stcore/health", timeout=2) as r:
            return bool(r.status == 200)

    def stop(self) -> None:
        if self.up.poll() is None:
            self.up.send_signal(signal.SIGINT)
            try:
                self.up.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.up.pid, signal.SIGKILL)
        self.factory.kw["bind"].dispose()


# ------------------------------------------------------------------ the workflow


def _wait_runs(p: Platform, run_ids: list[int], timeout: float) -> bool:
    from worker.db.models import Run
    from worker.db.session import session_scope

    def done() -> bool:
        with session_scope(p.factory) as s:
            return all(s.get(Run, i).status.is_terminal for i in run_ids)

    return _wait(done, timeout, 1.0)


def _wait_job(p: Platform, job_id: int, timeout: float) -> str:
    from worker.db.models import Job
    from worker.db.session import session_scope

    def status() -> Any:
        with session_scope(p.factory) as s:
            return s.get(Job, job_id).status

    _wait(lambda: status().is_terminal, timeout, 0.5)
    return str(status().value)


def workflow_round(p: Platform, config: Path, folds: int, stats: dict[str, Any], timeout: float) -> None:
    import yaml

    from worker.artifacts import Artifacts
    from worker.db.models import Run
    from worker.db.session import session_scope
    from worker.services import jobs, submissions
    from worker.services.ensembles import save_candidate
    from worker.services.experiments import create_experiment

    # the CLI's submit, with the registered dataset (an ensemble needs its members' dataset);
    # the reaper publishes the new runs within a pass
    # two k-fold groups of the same config (seeds 0 and 1): their out-of-fold stores cover the same
    # images, so they ensemble
    cfg = yaml.safe_load(config.read_text())
    with session_scope(p.factory) as s:
        run_ids = [i for seed in (0, 1) for i in create_experiment(
            s, actor=None, config=cfg, n_folds=folds, seeds=[seed], dataset_id=p.dataset_id).run_ids]
        group_ids = sorted({s.get(Run, i).group_id for i in run_ids})
    stats["runs_submitted"] += len(run_ids)
    if not _wait_runs(p, run_ids, timeout):
        stats["errors"].append(f"runs {run_ids} not finished within {timeout:.0f} s")
        return
    with session_scope(p.factory) as s:
        ok = [i for i in run_ids if s.get(Run, i).status.value == "succeeded"]
    if len(ok) < len(run_ids):
        stats["errors"].append(f"runs {sorted(set(run_ids) - set(ok))} did not succeed; no ensemble this round")
        return
    with session_scope(p.factory) as s:
        saved = save_candidate(s, actor=None, name=f"chaos {run_ids[0]}", method="soft",
                               members=[{"kind": "group", "id": g, "weight": 1.0} for g in group_ids],
                               dataset_root=str(p.settings.dataset_root), artifacts=Artifacts.from_settings(p.settings))
        ens_id, predict = saved.ensemble.id, saved.job.id if saved.job else None
    for kind, job_id in (("predict", predict), ("ensemble", None), ("submission", None)):
        if kind == "ensemble":
            with session_scope(p.factory) as s:
                job_id = jobs.create_job(s, actor=None, kind="ensemble", target={"ensemble_id": ens_id}).id
        if kind == "submission":
            with session_scope(p.factory) as s:
                sub_id = submissions.create_submission(s, actor=None, ensemble_id=ens_id, format="csv_rle").id
                job_id = jobs.create_job(s, actor=None, kind="submission", target={"submission_id": sub_id}).id
        status = _wait_job(p, int(job_id), timeout) if job_id is not None else "succeeded"
        stats["steps"][f"{kind} {status}"] = stats["steps"].get(f"{kind} {status}", 0) + 1
        if status != "succeeded":
            stats["errors"].append(f"{kind} job {job_id} {status}")
            return
    with session_scope(p.factory) as s:
        submissions.record_public_score(s, actor=None, submission_id=sub_id, score=round(random.random(), 4))
    stats["steps"]["score entered"] = stats["steps"].get("score entered", 0) + 1


# ------------------------------------------------------------------ chaos


def _running_claims(p: Platform) -> dict[int, Any]:
    from worker.db.models import Run, RunStatus
    from worker.db.session import session_scope

    with session_scope(p.factory) as s:
        rows = s.execute(sa.select(Run.id, Run.claimed_at).where(Run.status == RunStatus.RUNNING)).all()
    return {i: c for i, c in rows}


def _moved(p: Platform, before: dict[int, Any]) -> bool:
    """Every run that was running at the kill is claimed anew, or ended."""
    from worker.db.models import Run
    from worker.db.session import session_scope

    with session_scope(p.factory) as s:
        for run_id, claimed in before.items():
            run = s.get(Run, run_id)
            if not (run.status.is_terminal or (run.status.value == "running" and run.claimed_at != claimed)):
                return False
    return True


def _queue_moves(p: Platform, since: float) -> bool:
    from worker.db.models import Run, RunStatus
    from worker.db.session import session_scope

    with session_scope(p.factory) as s:
        if s.scalar(sa.select(Run.id).where(Run.status == RunStatus.QUEUED).limit(1)) is None:
            return True
        newest = s.scalar(sa.select(sa.func.max(Run.claimed_at)))
    return newest is not None and newest.timestamp() > since


def kill_one(p: Platform, target: str, timeout: float) -> tuple[str, float | None]:
    """SIGKILL one component; returns (what was killed, seconds to recovery or None)."""
    import redis

    worker = _child(p.up.pid, "worker.cli worker")
    claims = _running_claims(p)
    if target == "training":
        pool = _children(worker) if worker else []
        if not pool or not claims:
            return "training (nothing training)", 0.0
        pid = pool[0]
    elif target == "worker":
        pid = worker
    elif target == "redis":
        pid = _child(p.up.pid, "redis-server")
    else:
        pid = _child(p.up.pid, "streamlit")
    if pid is None:
        return f"{target} (not found)", 0.0
    t0, wall = time.monotonic(), time.time()
    os.kill(pid, signal.SIGKILL)
    if target in ("training", "worker"):
        ok = _wait(lambda: _moved(p, claims) and _child(p.up.pid, "worker.cli worker") is not None, timeout)
    elif target == "redis":
        port = p.redis_port()
        ok = _wait(lambda: redis.Redis(port=port, socket_timeout=1).ping() and _queue_moves(p, wall), timeout)
    else:
        ok = _wait(lambda: _child(p.up.pid, "streamlit") not in (None, pid) and p.healthy_web(), timeout)
    return target, (time.monotonic() - t0) if ok else None


def epochs_missing(p: Platform, epochs: int) -> tuple[int, int, int]:
    """(runs submitted, runs succeeded, epochs missing over the succeeded runs)."""
    from segcore.io import read_jsonl
    from worker.db.models import EpochMetric, Run
    from worker.db.session import session_scope

    missing = 0
    with session_scope(p.factory) as s:
        runs = list(s.scalars(sa.select(Run)))
        ok = [r for r in runs if r.status.value == "succeeded"]
        for run in ok:
            in_db = set(s.scalars(sa.select(EpochMetric.epoch).where(EpochMetric.run_id == run.id)))
            path = Path(run.artifact_dir or "") / "metrics.jsonl"
            in_file = {int(r["epoch"]) for r in read_jsonl(path)} if path.is_file() else set()
            wanted = set(range(1, epochs + 1))
            missing += len(wanted - in_db) + len(wanted - in_file)
    return len(runs), len(ok), missing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pause", type=float, nargs=2, default=(3.0, 12.0), help="seconds between kills (min max)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds a recovery or a step may take")
    ap.add_argument("--no-webapp", action="store_true")
    args = ap.parse_args()
    random.seed(args.seed)
    import yaml

    from segcore.data.synthetic import make_synthetic_coco

    tmp = Path(tempfile.mkdtemp(prefix="segboard-chaos-"))
    data = tmp / "data"
    source = make_synthetic_coco(data / "coco", num_images=12, num_classes=2, size=64, seed=0, num_test_images=2)
    config = tmp / "exp.yaml"
    config.write_text(yaml.safe_dump({
        "name": "chaos",
        "data": {"source": source.model_dump(mode="json"), "classes": ["background", "a", "b"], "image_size": [64, 64]},
        "model": {"arch": "Unet", "encoder": "resnet18", "encoder_weights": None},
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "training": {"epochs": args.epochs, "batch_size": 4, "device": "cpu", "num_workers": 0, "precision": "fp32"},
    }))
    p = Platform(tmp / "home", data, webapp=not args.no_webapp)
    p.register(source)
    stats: dict[str, Any] = {"runs_submitted": 0, "steps": {}, "errors": []}
    kills: list[tuple[str, float | None]] = []
    targets = ["training", "worker", "redis"] + ([] if args.no_webapp else ["webapp"])

    def chaos() -> None:
        while len(kills) < args.kills:
            time.sleep(random.uniform(*args.pause))
            what, took = kill_one(p, random.choice(targets), args.timeout)
            while "(" in what:  # nothing of that kind to kill right now: pick again a moment later
                time.sleep(0.5)
                what, took = kill_one(p, random.choice(targets), args.timeout)
            kills.append((what, took))
            print(f"kill {len(kills):2d}: {what:32s} recovered in "
                  + (f"{took:.1f} s" if took is not None else "NEVER"), flush=True)

    thread = threading.Thread(target=chaos, daemon=True)
    t_start = time.monotonic()
    try:
        thread.start()
        rounds = 0
        while thread.is_alive() or rounds == 0:
            rounds += 1
            workflow_round(p, config, args.folds, stats, args.timeout)
        thread.join()
        up_alive = p.up.poll() is None
        submitted, finished, missing = epochs_missing(p, args.epochs)
    finally:
        p.stop()
    recoveries = [t for _, t in kills if t is not None]
    never = sum(t is None for _, t in kills)
    real = kills
    result = {
        "kills": len(real), "kills_by_target": {t: sum(k[0] == t for k in real) for t in targets},
        "runs_submitted": submitted, "runs_finished": finished, "runs_lost": submitted - finished,
        "epochs_missing": missing, "worst_recovery_s": round(max(recoveries, default=0.0), 1),
        "median_recovery_s": round(sorted(recoveries)[len(recoveries) // 2], 1) if recoveries else None,
        "never_recovered": never, "up_survived": up_alive, "rounds": rounds, "steps": stats["steps"],
        "errors": stats["errors"], "wall_s": round(time.monotonic() - t_start, 1),
    }
    print(f"runs submitted {submitted}, finished {finished}, lost {submitted - finished}; epochs missing {missing}; "
          f"worst recovery {result['worst_recovery_s']} s over {len(real)} kills; up survived: {up_alive}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
