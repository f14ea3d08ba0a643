"""Disk use per run, group, experiment and dataset: the sums match the files made in a temporary
artifact root (and in the S3 test server), ``segboard du`` prints them with a total, the run's
size and pin, and migration 0005's pin columns."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from worker.artifacts import Artifacts
from worker.db.models import Dataset, Ensemble, PseudoRound, Run, RunGroup, RunStatus, SourceKind, Submission
from worker.services import lifecycle
from worker.services.disk import disk_use, storage_of
from worker.services.ensembles import create_ensemble
from worker.services.experiments import create_experiment
from worker.services.submissions import create_submission

from .queue_fixtures import tiny_config

SOURCE = {"format": "coco", "root": "for-storage-tests"}  # under the dataset root; never read

# file sizes of a finished run's folder
RUN_FILES = {"checkpoints/best/model.safetensors": 3000, "checkpoints/best/config.json": 100,
             "checkpoints/last/model.safetensors": 3000, "checkpoints/last/config.json": 100,
             "predictions/val/manifest.json": 50, "predictions/val/shard-0.npy": 700}
TEST_FILES = {"predictions/test/manifest.json": 40, "predictions/test/shard-0.npy": 900}
STORE_FILES = {"manifest.json": 30, "shard-0.npy": 500}


def local_artifacts(tmp_path: Path) -> Artifacts:
    return Artifacts(str(tmp_path / "artifacts"), cache=tmp_path / "cache")


def write(folder: Path, files: dict[str, int]) -> int:
    """Make ``files`` (relative path -> size) under ``folder``; returns their total size."""
    for rel, size in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(b"x" * size)
    return sum(files.values())


def finish(session: Any, arts: Artifacts, run_id: int, *, test_store: bool = False) -> int:
    """Train run ``run_id`` as far as its files go: claimed, files written (and uploaded), succeeded.

    Returns:
        The bytes written.
    """
    folder = arts.local_dir("runs", str(run_id))
    size = write(folder, RUN_FILES) + (write(folder, TEST_FILES) if test_store else 0)
    token = lifecycle.claim_run(session, run_id=run_id, worker_name="box/cpu", device="cpu", lease_s=60)
    assert token is not None
    location = arts.push(folder)
    lifecycle.finish_run(session, token=token, best_metrics={"miou": 0.5}, monitor="miou",
                         checkpoint_dir=f"{location}/checkpoints/best", val_store=f"{location}/predictions/val",
                         dataset_fingerprint=None)
    session.expire_all()
    run = session.get(Run, run_id)
    run.artifact_dir = location
    if test_store:
        run.test_store = f"{location}/predictions/test"
    session.flush()
    return size


def store(arts: Artifacts, *parts: str) -> tuple[str, int]:
    """A small probability store folder under the root (uploaded when remote): its location and size."""
    folder = arts.local_dir(*parts)
    size = write(folder, STORE_FILES)
    return arts.push(folder), size


def world(session: Any, arts: Artifacts, actor: int | None = None) -> dict[str, Any]:
    """Two experiments (2 folds; 1 run), a group OOF store, an ensemble, submissions, a pseudo-label round."""
    folds = create_experiment(session, actor=actor, name="folds", config=tiny_config(SOURCE), n_folds=2)
    single = create_experiment(session, actor=actor, name="single", config=tiny_config(SOURCE))
    sizes: dict[tuple[str, int], int] = {}
    a, b = folds.run_ids
    c = single.run_ids[0]
    sizes[("run", a)] = finish(session, arts, a, test_store=True)
    sizes[("run", b)] = finish(session, arts, b)
    sizes[("run", c)] = finish(session, arts, c, test_store=True)
    group = folds.groups[0].id
    oof, sizes[("group", group)] = store(arts, "groups", str(group), "oof")
    session.get(RunGroup, group).oof_store = oof
    ens = create_ensemble(session, actor=actor, name="a+c", method="soft",
                          members=[{"kind": "run", "id": a}, {"kind": "run", "id": c}])
    test, sizes[("ensemble", ens.id)] = store(arts, "ensembles", str(ens.id), "test")
    session.get(Ensemble, ens.id).test_store = test
    sub = create_submission(session, actor=actor, run_id=c, file_path="written below")
    sub_folder = arts.local_dir("submissions", str(sub.id))
    sizes[("submission", sub.id)] = write(sub_folder, {"submission.csv": 120})
    session.get(Submission, sub.id).file_path = arts.push(sub_folder / "submission.csv")
    rnd = PseudoRound(name="round", teacher_kind=SourceKind.RUN, teacher_id=c, params={},
                      status=RunStatus.SUCCEEDED, created_by=actor)
    session.add(rnd)
    session.flush()
    sizes[("pseudo_round", rnd.id)] = write(arts.local_dir("pseudo", str(rnd.id)), {"masks/a.png": 64, "images.txt": 8})
    arts.push(arts.local_dir("pseudo", str(rnd.id)))
    other = write(arts.local_dir("weights"), {"resnet18/imagenet.safetensors": 2000})
    other += write(arts.local_dir("runs", "999"), {"checkpoints/last/model.safetensors": 10})  # an orphan
    if not arts.is_local:
        arts.push(arts.local_dir("weights"))
        arts.push(arts.local_dir("runs", "999"))
    session.flush()
    return {"folds": folds, "single": single, "runs": (a, b, c), "group": group, "ensemble": ens.id,
            "submission": sub.id, "round": rnd.id, "sizes": sizes, "other": other}


def on_disk(root: Path) -> int:
    """Every byte under a local root, the mirror state files aside."""
    return sum((Path(d) / f).stat().st_size for d, _, fs in os.walk(root) for f in fs
               if not f.startswith(".segboard-"))


def _rows(report: Any) -> dict[tuple[str, int | None], int]:
    return {(r.kind, r.id): r.bytes for r in report.rows}


def check_sums(session: Any, arts: Artifacts, w: dict[str, Any], total: int) -> None:
    sizes, (a, b, c) = w["sizes"], w["runs"]
    group, single_group = w["group"], w["single"].groups[0].id
    sub = sizes[("submission", w["submission"])]
    by_run = disk_use(session, by="run", artifacts=arts)
    rows = _rows(by_run)
    assert rows[("run", a)] == sizes[("run", a)] and rows[("run", b)] == sizes[("run", b)]
    assert rows[("run", c)] == sizes[("run", c)] + sub  # its submission counts with it
    assert rows[("group", None)] == sizes[("group", group)]
    assert rows[("ensemble", None)] == sizes[("ensemble", w["ensemble"])]
    assert rows[("pseudo_round", None)] == sizes[("pseudo_round", w["round"])]
    assert rows[("other", None)] == w["other"]
    assert by_run.total_bytes == total == sum(rows.values())
    assert [r.bytes for r in by_run.rows if r.kind == "run"] == sorted(
        (r.bytes for r in by_run.rows if r.kind == "run"), reverse=True)

    rows = _rows(disk_use(session, by="group", artifacts=arts))
    assert rows[("group", group)] == sizes[("run", a)] + sizes[("run", b)] + sizes[("group", group)]
    assert rows[("group", single_group)] == sizes[("run", c)] + sub
    rows = _rows(disk_use(session, by="experiment", artifacts=arts))
    assert rows[("experiment", w["folds"].id)] == sizes[("run", a)] + sizes[("run", b)] + sizes[("group", group)]
    assert rows[("experiment", w["single"].id)] == sizes[("run", c)] + sub
    assert sum(rows.values()) == total

    assert storage_of(session, kind="run", object_id=a, artifacts=arts).bytes == sizes[("run", a)]
    exp = storage_of(session, kind="experiment", object_id=w["folds"].id, artifacts=arts)
    assert (exp.bytes, exp.pinned) == (sizes[("run", a)] + sizes[("run", b)] + sizes[("group", group)], False)


def test_disk_use_sums_match_the_files_in_a_local_root(session: Any, tmp_path: Path) -> None:
    arts = local_artifacts(tmp_path)
    w = world(session, arts)
    check_sums(session, arts, w, on_disk(tmp_path / "artifacts"))

    session.add(Dataset(name="shapes", source=SOURCE, classes=["background", "a", "b"], report={}))
    session.flush()
    dataset_id = session.scalar(sa.select(Dataset.id))
    a, b, _ = w["runs"]
    session.execute(sa.update(Run).where(Run.id.in_([a, b])).values(dataset_id=dataset_id))
    session.execute(sa.update(RunGroup).where(RunGroup.id == w["group"]).values(dataset_id=dataset_id))
    rows = _rows(disk_use(session, by="dataset", artifacts=arts))
    sizes = w["sizes"]
    assert rows[("dataset", dataset_id)] == sizes[("run", a)] + sizes[("run", b)] + sizes[("group", w["group"])]
    assert sum(rows.values()) == on_disk(tmp_path / "artifacts")


def test_disk_use_of_an_s3_root_lists_the_bucket(session: Any, tmp_path: Path, s3_server: Any) -> None:
    root = f"s3://{s3_server.bucket()}/segboard"
    arts = Artifacts(root, cache=tmp_path / "cache", storage_options=s3_server.options)
    w = world(session, arts)
    listed = sum(size for _, size in arts.files(root))
    check_sums(session, arts, w, listed)
    # another machine, with an empty cache, measures the same from the bucket
    other = Artifacts(root, cache=tmp_path / "other-cache", storage_options=s3_server.options)
    assert disk_use(session, by="run", artifacts=other).total_bytes == listed


def test_unknown_by_is_refused_with_the_choices(session: Any, tmp_path: Path) -> None:
    from worker.errors import InvalidInput

    with pytest.raises(InvalidInput, match="run, group, experiment, dataset"):
        disk_use(session, by="member", artifacts=local_artifacts(tmp_path))


def test_du_command_prints_a_table_with_a_total(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from worker.cli import main
    from worker.db.session import session_scope

    from .queue_fixtures import make_settings, migrated

    settings = make_settings(tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'du.db'}", redis_url=None)
    for key, value in {"SEGBOARD_HOME": settings.home, "SEGBOARD_DATABASE_URL": settings.database_url,
                       "SEGBOARD_ARTIFACT_ROOT": settings.artifact_root}.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.delenv("SEGBOARD_REDIS_URL", raising=False)
    factory = migrated(settings)
    arts = Artifacts.from_settings(settings)
    with session_scope(factory) as s:
        exp = create_experiment(s, actor=None, name="big-one", config=tiny_config(SOURCE))
        size = finish(s, arts, exp.run_ids[0])
    assert main(["du", "--by", "experiment"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["kind", "id", "name"]
    assert "big-one" in lines[1] and lines[1].rstrip().endswith(f"{size / 1024:.1f} KiB")
    assert lines[-1].startswith("total") and lines[-1].rstrip().endswith(f"{size / 1024:.1f} KiB")


def test_migration_0005_adds_and_removes_the_pin_columns(sqlite_url: str) -> None:
    from worker.db import migrate

    def columns(table: str) -> set[str]:
        engine = sa.create_engine(sqlite_url)
        try:
            return {c["name"] for c in sa.inspect(engine).get_columns(table)}
        finally:
            engine.dispose()

    migrate.upgrade(sqlite_url, "0004")
    assert "pinned" not in columns("runs")
    migrate.upgrade(sqlite_url, "0005")
    assert all("pinned" in columns(t) for t in ("runs", "run_groups", "experiments"))
    migrate.downgrade(sqlite_url, "0004")
    assert not any("pinned" in columns(t) for t in ("runs", "run_groups", "experiments"))
