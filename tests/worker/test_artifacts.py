"""The artifact root as a local folder and as an s3:// URL (moto's S3 server, real s3fs clients).

Two ``Artifacts`` with different caches stand for two machines sharing one bucket.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fsspec
import pytest

from worker.artifacts import ArtifactError, Artifacts, is_url, local_path



@pytest.fixture
def root(s3_server: Any) -> str:
    return f"s3://{s3_server.bucket()}/segboard"


def _machine(tmp_path: Path, name: str, root: str, s3_server: Any) -> Artifacts:
    return Artifacts(root, cache=tmp_path / name / "cache", storage_options=s3_server.options)


def _remote(s3_server: Any) -> Any:
    return fsspec.filesystem("s3", **s3_server.options)


def _record_uploads(fs: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The remote paths s3fs uploads to, in the order the uploads start."""
    uploads: list[str] = []
    put_file = fs._put_file

    async def recording(lpath: str, rpath: str, **kwargs: Any) -> Any:
        uploads.append(rpath)
        return await put_file(lpath, rpath, **kwargs)

    monkeypatch.setattr(fs, "_put_file", recording)
    return uploads


def _folder(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and not p.name.startswith(".segboard-")}


def _write_run(folder: Path) -> None:
    (folder / "checkpoints" / "last").mkdir(parents=True)
    (folder / "checkpoints" / "last" / "model.safetensors").write_bytes(b"w" * 5000)
    (folder / "checkpoints" / "last" / "config.json").write_text('{"epoch": 1}')
    (folder / "val_store").mkdir()
    (folder / "val_store" / "shard-0.npy").write_bytes(b"p" * 300)
    (folder / "val_store" / "manifest.json").write_text('{"entries": 1}')


def test_a_folder_pushed_on_one_machine_is_fetched_whole_on_another(tmp_path: Path, root: str, s3_server: Any) -> None:
    a, b = _machine(tmp_path, "a", root, s3_server), _machine(tmp_path, "b", root, s3_server)
    a.check()
    work = a.local_dir("runs", "7")
    _write_run(work)
    location = a.push(work)
    assert location == f"{root}/runs/7" and is_url(location)
    assert a.fetch(location) == work  # the writer's own copy is the mirror: nothing to download

    copy = b.fetch(location)
    assert copy != work and copy.is_relative_to(tmp_path / "b" / "cache")
    assert _folder(copy) == _folder(work)
    assert b.fetch(f"{location}/checkpoints/last") == copy / "checkpoints" / "last"
    assert b.files(location) == [("checkpoints/last/config.json", 12), ("checkpoints/last/model.safetensors", 5000),
                                 ("val_store/manifest.json", 14), ("val_store/shard-0.npy", 300)]
    assert b.exists(f"{location}/val_store") and not b.exists(f"{root}/runs/8")


def test_fetch_downloads_only_what_changed_and_push_only_uploads_what_changed(
    tmp_path: Path, root: str, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = _machine(tmp_path, "a", root, s3_server), _machine(tmp_path, "b", root, s3_server)
    work = a.local_dir("runs", "1")
    _write_run(work)
    location = a.push(work)
    copy = b.fetch(location)
    weights = copy / "checkpoints" / "last" / "model.safetensors"
    before = weights.stat().st_mtime_ns

    uploads = _record_uploads(a._filesystem(location)[0], monkeypatch)
    (work / "checkpoints" / "last" / "config.json").write_text('{"epoch": 2}')
    a.push(work)
    assert [u.rsplit("/", 3)[-3:] for u in uploads] == [["checkpoints", "last", "config.json"]]

    b.fetch(location)
    assert json.loads((copy / "checkpoints" / "last" / "config.json").read_text()) == {"epoch": 2}
    assert weights.stat().st_mtime_ns == before  # unchanged remote file: not downloaded again


def test_a_store_manifest_is_uploaded_after_its_shards(
    tmp_path: Path, root: str, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _machine(tmp_path, "a", root, s3_server)
    store = a.local_dir("ensembles", "2", "test")
    store.mkdir(parents=True)
    for name in ("manifest.json", "a.npy", "z.npy"):
        (store / name).write_bytes(b"x")
    uploads = _record_uploads(a._filesystem(root)[0], monkeypatch)
    a.push(store)
    names = [u.rsplit("/", 1)[1] for u in uploads]
    assert sorted(names[:2]) == ["a.npy", "z.npy"] and names[2:] == ["manifest.json"]


def test_files_deleted_locally_are_deleted_remotely_on_the_next_push(tmp_path: Path, root: str, s3_server: Any) -> None:
    a, b = _machine(tmp_path, "a", root, s3_server), _machine(tmp_path, "b", root, s3_server)
    work = a.local_dir("runs", "3")
    _write_run(work)
    location = a.push(work)
    (work / "val_store" / "shard-0.npy").unlink()
    a.push(work)
    assert [rel for rel, _ in b.files(location)] == [
        "checkpoints/last/config.json", "checkpoints/last/model.safetensors", "val_store/manifest.json"]
    assert not _remote(s3_server).exists(f"{root.removeprefix('s3://')}/runs/3/val_store/shard-0.npy")


def test_a_single_file_round_trips(tmp_path: Path, root: str, s3_server: Any) -> None:
    a, b = _machine(tmp_path, "a", root, s3_server), _machine(tmp_path, "b", root, s3_server)
    out = a.local_dir("submissions", "4", "submission.csv")
    out.parent.mkdir(parents=True)
    out.write_text("image_id,PredictionString\n")
    location = a.push(out)
    assert location == f"{root}/submissions/4/submission.csv"
    assert b.fetch(location).read_text() == "image_id,PredictionString\n"
    assert local_path(b, location) == b.fetch(location)


def test_missing_artifacts_and_unreachable_storage_are_explained(tmp_path: Path, root: str, s3_server: Any) -> None:
    a = _machine(tmp_path, "a", root, s3_server)
    with pytest.raises(ArtifactError, match=r"nothing is stored at s3://.*/runs/99; it was deleted"):
        a.fetch(f"{root}/runs/99")
    with pytest.raises(ArtifactError, match=r"not inside the local mirror"):
        a.location(tmp_path / "elsewhere")
    with pytest.raises(ArtifactError, match=r"pass the artifact settings"):
        local_path(None, f"{root}/runs/1")

    # a bucket that does not exist: the worker refuses to start, naming the root and the settings to check
    broken = Artifacts("s3://no-such-bucket-here/x", cache=tmp_path / "c", storage_options=s3_server.options)
    with pytest.raises(ArtifactError, match=r"cannot reach the artifact root s3://no-such-bucket-here/x .*"
                                            r"SEGBOARD_STORAGE_OPTIONS"):
        broken.check()
    with pytest.raises(ArtifactError, match=r"s3://b/x .*no_such_option.*SEGBOARD_STORAGE_OPTIONS"):
        Artifacts("s3://b/x", cache=tmp_path / "c", storage_options={"no_such_option": 1}).check()


def test_a_local_root_passes_paths_through(tmp_path: Path) -> None:
    arts = Artifacts(str(tmp_path / "artifacts"), cache=tmp_path / "cache")
    arts.check()
    folder = arts.local_dir("runs", "1")
    folder.mkdir(parents=True)
    (folder / "x.txt").write_text("x")
    assert arts.is_local and folder == tmp_path / "artifacts" / "runs" / "1"
    assert arts.push(folder) == str(folder) and arts.fetch(str(folder)) == folder
    assert arts.fetch("runs/1") == folder  # a relative location is relative to the root
    assert arts.files(str(folder)) == [("x.txt", 1)] and arts.files(str(tmp_path / "none")) == []
    assert not (tmp_path / "cache").exists()


def test_a_dataset_under_a_remote_dataset_root_is_mirrored_and_opens(tmp_path: Path, s3_server: Any) -> None:
    from segcore.data.formats import open_dataset
    from segcore.data.synthetic import make_synthetic_mask_folder

    bucket = s3_server.bucket()
    source = make_synthetic_mask_folder(tmp_path / "shapes", num_images=4, num_classes=3, size=32, seed=0)
    _remote(s3_server).put(str(tmp_path / "shapes"), f"{bucket}/datasets/shapes", recursive=True)
    arts = Artifacts(str(tmp_path / "artifacts"), cache=tmp_path / "cache", storage_options=s3_server.options)

    relative = source.model_copy(update={"root": "shapes"})
    local, root = arts.local_source(relative, f"s3://{bucket}/datasets")
    assert root is None and Path(local.root) == tmp_path / "cache" / "s3" / bucket / "datasets" / "shapes"
    ds = open_dataset(local, classes=["bg", "a", "b"])
    assert len(ds.ids) == 4
    assert ds.fingerprint() == open_dataset(source, classes=["bg", "a", "b"]).fingerprint()
    # a local source is left alone
    assert arts.local_source(source, str(tmp_path)) == (source, str(tmp_path))


def test_storage_options_come_from_the_environment_as_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.settings import get_settings

    monkeypatch.setenv("SEGBOARD_STORAGE_OPTIONS", '{"endpoint_url": "http://minio:9000"}')
    monkeypatch.setenv("SEGBOARD_ARTIFACT_ROOT", "s3://team/segboard")
    s = get_settings(home=tmp_path)
    arts = Artifacts.from_settings(s)
    assert s.storage_options == {"endpoint_url": "http://minio:9000"} and not s.artifact_root_is_local
    assert arts.cache == tmp_path / "artifact-cache" and not arts.is_local
    assert arts.local_dir("runs", "5") == tmp_path / "artifact-cache" / "s3" / "team" / "segboard" / "runs" / "5"


def test_the_cli_validates_a_dataset_in_a_bucket(tmp_path: Path, s3_server: Any, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from segcore.data.synthetic import make_synthetic_mask_folder
    from worker.cli import main

    bucket = s3_server.bucket()
    make_synthetic_mask_folder(tmp_path / "shapes", num_images=3, num_classes=3, size=32, seed=0)
    _remote(s3_server).put(str(tmp_path / "shapes"), f"{bucket}/data/", recursive=True)
    monkeypatch.setenv("SEGBOARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SEGBOARD_STORAGE_OPTIONS", json.dumps(s3_server.options))
    assert main(["dataset", "validate", f"s3://{bucket}/data/shapes", "--format", "mask_folder",
                 "--classes", "bg,a,b", "--option", "ignore_value=255"]) == 0
    assert "3 images" in capsys.readouterr().out
    assert main(["dataset", "validate", f"s3://{bucket}/data/none", "--format", "mask_folder"]) == 2
    assert f"nothing is stored at s3://{bucket}/data/none" in capsys.readouterr().err
