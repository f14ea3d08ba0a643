"""The artifact inventory and ``segboard doctor``: stale leases, unknown folders, missing or corrupt
artifacts and dead writers' temp leftovers are reported, and ``--fix`` repairs what it can."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segcore.inference.store import ProbabilityStore
from worker.cli import main
from worker.db.base import utcnow
from worker.db.models import Ensemble, EnsembleMethod, Run, RunStatus
from worker.db.session import session_scope
from worker.services import doctor, lifecycle
from worker.services.experiments import create_experiment
from worker.services.inventory import inventory
from worker.services.submissions import create_submission

from .queue_fixtures import make_settings, migrated, tiny_config

SOURCE = {"format": "coco", "root": "for-doctor-tests"}  # under the dataset root; never read


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _store(path: Path) -> Path:
    with ProbabilityStore.create(path, classes=["bg", "fg"], task="multiclass") as w:
        for image_id in ("a", "b"):
            p = np.zeros((2, 8, 8), np.float32)
            p[0] = 1.0
            w.write(image_id, p)
    return path


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    settings = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'd.db'}", redis_url=None)
    factory = migrated(settings)
    root = Path(str(settings.artifact_root))
    with session_scope(factory) as s:
        first, second = create_experiment(s, actor=None, config=tiny_config(SOURCE), seeds=[0, 1]).run_ids
    t0 = utcnow() - dt.timedelta(minutes=5)
    with session_scope(factory) as s:
        lifecycle.claim_run(s, run_id=first, worker_name="gone/cpu", device="cpu", lease_s=1, now=t0)
        run = s.get(Run, first)
        run.artifact_dir = str(root / "runs" / str(first))
        run.checkpoint_dir = str(root / "runs" / str(first) / "checkpoints" / "best")
        run.val_store = str(_store(root / "runs" / str(first) / "predictions" / "val"))
        s.get(Run, second).test_store = str(root / "runs" / str(second) / "predictions" / "test")  # never written
        members = [{"kind": "run", "id": first, "weight": 1.0}, {"kind": "run", "id": second, "weight": 1.0}]
        ens = Ensemble(name="e", method=EnsembleMethod.SOFT, status=RunStatus.SUCCEEDED, members=members)
        s.add(ens)
        s.flush()
        sub = create_submission(s, actor=None, ensemble_id=ens.id, file_path=str(root / "submissions" / "1" / "s.csv"))
    store = root / "runs" / str(first) / "predictions" / "val"
    entry = json.loads((store / "manifest.json").read_text())["entries"][0]["file"]
    (store / entry).write_bytes((store / entry).read_bytes()[:-8] + b"\0" * 8)  # a flipped tail: checksum fails
    checkpoints = root / "runs" / str(first) / "checkpoints"
    dead = _dead_pid()
    (checkpoints / f".best.old-{dead}").mkdir(parents=True)  # set aside by a writer killed mid-swap
    (checkpoints / f".best.old-{dead}" / "model.safetensors").write_bytes(b"weights")
    (checkpoints / f".last.tmp-{dead}-x1y2").mkdir()
    (root / "runs" / str(first) / f".metrics.jsonl.tmp-{dead}-abc").write_text("{")
    (checkpoints / f".last.tmp-{os.getpid()}-live").mkdir()  # a writer still running: left alone
    (root / "runs" / "999" / "checkpoints").mkdir(parents=True)
    (root / "submissions" / "1").mkdir(parents=True)
    (root / "submissions" / "1" / "s.csv").write_text("id,rle\n")
    return {"factory": factory, "root": root, "settings": settings, "runs": (first, second), "ensemble": ens.id,
            "submission": sub.id, "dead": dead}


def test_inventory_knows_what_each_object_owns_and_who_references_it(world: dict[str, Any]) -> None:
    first, second = world["runs"]
    with session_scope(world["factory"]) as s:
        inv = inventory(s)
    assert [a.role for a in inv.owned_by("run", first)] == ["folder", "checkpoint", "val_store"]
    assert [a.role for a in inv.owned_by("run", second)] == ["test_store"]
    assert [a.role for a in inv.owned_by("submission", world["submission"])] == ["file"]
    refs = [(r.referrer_kind, r.referrer_id, r.why) for r in inv.references_to("run", first)]
    assert refs == [("ensemble", world["ensemble"], "member")]
    assert [(r.referrer_kind, r.why) for r in inv.references_to("ensemble", world["ensemble"])] == [
        ("submission", "source")]
    assert inv.known("run", first) and not inv.known("run", 999)


def test_doctor_reports_then_fixes(world: dict[str, Any]) -> None:
    first, second = world["runs"]
    root, dead = world["root"], world["dead"]
    with session_scope(world["factory"]) as s:
        report = doctor.examine(s, artifact_root=str(root))
    found = {(f.problem.value, f.subject) for f in report.findings}
    checkpoints = root / "runs" / str(first) / "checkpoints"
    assert found == {
        ("stale_lease", f"run {first}"),
        ("corrupt", str(root / "runs" / str(first) / "predictions" / "val")),
        ("missing", str(checkpoints / "best")),
        ("missing", str(root / "runs" / str(second) / "predictions" / "test")),
        ("unknown", str(root / "runs" / "999")),
        ("temp_leftover", str(checkpoints / f".best.old-{dead}")),
        ("temp_leftover", str(checkpoints / f".last.tmp-{dead}-x1y2")),
        ("temp_leftover", str(root / "runs" / str(first) / f".metrics.jsonl.tmp-{dead}-abc")),
    }
    with session_scope(world["factory"]) as s:
        fixed = doctor.repair(s, artifact_root=str(root))
    assert {f.problem.value for f in fixed.fixed} == {"stale_lease", "unknown", "temp_leftover"}
    # what is left cannot be repaired here: a missing test store and a store that fails its checksums
    assert {(f.problem.value, f.subject) for f in fixed.findings} == {
        ("corrupt", str(root / "runs" / str(first) / "predictions" / "val")),
        ("missing", str(root / "runs" / str(second) / "predictions" / "test")),
    }
    assert (checkpoints / "best" / "model.safetensors").read_bytes() == b"weights"  # put back
    assert (checkpoints / f".last.tmp-{os.getpid()}-live").is_dir()
    assert not (root / "runs" / "999").exists() and list((root / ".doctor-orphans").glob("*/runs/999"))
    with session_scope(world["factory"]) as s:
        run = s.get(Run, first)
        assert (run.status, run.attempt, run.lost_count) == (RunStatus.QUEUED, 1, 1)


def test_segboard_doctor_prints_json_and_exits_1_while_problems_are_left(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = world["settings"]
    monkeypatch.setenv("SEGBOARD_HOME", str(settings.home))
    monkeypatch.setenv("SEGBOARD_ARTIFACT_ROOT", str(world["root"]))
    assert main(["doctor", "--json", "--database-url", str(settings.database_url)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert not out["healthy"] and {f["problem"] for f in out["findings"]} >= {"stale_lease", "unknown"}
    assert main(["doctor", "--fix", "--database-url", str(settings.database_url)]) == 1
    text = capsys.readouterr().out
    assert "fixed  stale_lease" in text and "2 problem(s) left" in text


def test_doctor_on_an_object_store_root(tmp_path: Path, s3_server: Any) -> None:
    """A remote root: unknown folders and missing locations reported; uploaded temp leftovers deleted by --fix."""
    from worker.artifacts import Artifacts

    root = f"s3://{s3_server.bucket()}/segboard"
    settings = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'd.db'}", redis_url=None,
                             artifact_root=root, storage_options=s3_server.options)
    factory = migrated(settings)
    arts = Artifacts.from_settings(settings)
    with session_scope(factory) as s:
        first, second = create_experiment(s, actor=None, config=tiny_config(SOURCE), seeds=[0, 1]).run_ids
    store = _store(arts.local_dir("runs", str(first), "predictions", "val"))
    leftover = arts.local_dir("runs", str(first), "checkpoints", f".last.tmp-{_dead_pid()}-q9")
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"half a checkpoint")  # uploaded by an interrupted push
    arts.push(arts.local_dir("runs", str(first)))
    unknown = arts.local_dir("runs", "77", "checkpoints")
    unknown.mkdir(parents=True)
    (unknown / "config.json").write_text("{}")
    arts.push(arts.local_dir("runs", "77"))
    with session_scope(factory) as s:
        s.get(Run, first).val_store = arts.location(store)
        s.get(Run, second).test_store = f"{root}/runs/{second}/predictions/test"  # never uploaded

    with session_scope(factory) as s:
        report = doctor.examine(s, artifact_root=root, artifacts=arts)
    found = {(f.problem.value, f.subject) for f in report.findings}
    assert found == {
        ("missing", f"{root}/runs/{second}/predictions/test"),
        ("unknown", f"{root}/runs/77"),
        ("temp_leftover", f"{root}/runs/{first}/checkpoints/{leftover.name}/model.safetensors"),
    }
    assert report.skipped and "checksums" in report.skipped[0]
    with session_scope(factory) as s:
        fixed = doctor.repair(s, artifact_root=root, artifacts=arts)
    assert [f.problem.value for f in fixed.fixed] == ["temp_leftover"]
    assert {f.problem.value for f in fixed.findings} == {"missing", "unknown"}
    assert not any(".last.tmp-" in rel for rel, _ in arts.files(root))
    assert arts.exists(f"{root}/runs/{first}/predictions/val")  # the store itself is untouched
