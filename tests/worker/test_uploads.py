"""Uploads: each step in its own transaction, the per-member quota, the limit on uploads in progress,
viewers refused, and a failed upload that leaves no files behind."""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from worker.db.models import Dataset, Member, MemberRole, Upload, UploadStatus
from worker.db.session import make_session_factory, session_scope
from worker.errors import Conflict, PermissionDenied
from worker.services import uploads

T0 = dt.datetime(2027, 3, 1, 9, 0, tzinfo=dt.timezone.utc)
KIB = 1024
QUOTA_GB = 4 * KIB / 1024**3  # a 4 KiB quota


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The folder uploads are unpacked into (the database lives next to it)."""
    return tmp_path / "uploads"


@pytest.fixture
def factory(any_engine: sa.Engine) -> Any:
    return make_session_factory(any_engine)


@pytest.fixture
def team(factory: Any) -> dict[str, int]:
    with session_scope(factory) as s:
        members = {name: Member(name=name, role=role) for name, role in
                   (("bob", MemberRole.MEMBER), ("cy", MemberRole.MEMBER), ("vic", MemberRole.VIEWER))}
        s.add_all(members.values())
        s.flush()
        return {name: m.id for name, m in members.items()}


def _begin(factory: Any, actor: int | None, *, now: dt.datetime = T0, filename: str = "data.zip",
           max_concurrent: int = 2, quota_gb: float = QUOTA_GB) -> Any:
    with session_scope(factory) as s:
        return uploads.begin_upload(s, actor=actor, filename=filename, quota_gb=quota_gb,
                                    max_concurrent=max_concurrent, now=now)


def _upload_as_dataset(factory: Any, actor: int, data: bytes, dest: Path, *, now: dt.datetime = T0) -> tuple[Any, int]:
    """The whole path of a successful upload: begin, extract outside any session, register, finish."""
    began = _begin(factory, actor, now=now)
    folder = uploads.extract_upload(upload=began, data=data, dest=dest)
    with session_scope(factory) as s:
        ds = Dataset(name=dest.name, source={"format": "coco", "root": str(folder)}, classes=[], report={})
        s.add(ds)
        s.flush()
        done = uploads.finish_upload(s, actor=actor, upload_id=began.id, dataset_id=ds.id,
                                     unpacked=uploads.unpacked_bytes(folder), now=now)
    return done, ds.id


def _rows(factory: Any) -> list[tuple[int, UploadStatus, int]]:
    with session_scope(factory) as s:
        return [(u.id, u.status, u.bytes) for u in s.scalars(sa.select(Upload).order_by(Upload.id))]


def test_viewers_cannot_upload(factory: Any, team: dict[str, int]) -> None:
    with pytest.raises(PermissionDenied, match="viewers cannot upload datasets"):
        _begin(factory, team["vic"])
    assert _rows(factory) == []


def test_the_quota_counts_done_uploads_whose_dataset_still_exists(factory: Any, team: dict[str, int],
                                                                  root: Path) -> None:
    bob = team["bob"]
    first, dataset_id = _upload_as_dataset(factory, bob, _zip({"a.bin": b"x" * 3 * KIB}), root / "one")
    assert (first.status, first.bytes, first.dataset_id) == (UploadStatus.DONE, 3 * KIB, dataset_id)
    # 1 KiB left: a 2 KiB archive is refused while it unpacks, and leaves nothing
    began = _begin(factory, bob)
    assert began.bytes == KIB and began.filename == "data.zip"
    with pytest.raises(uploads.ArchiveError, match="left of your upload quota"):
        uploads.extract_upload(upload=began, data=_zip({"b.bin": b"y" * 2 * KIB}), dest=root / "two")
    with session_scope(factory) as s:
        uploads.fail_upload(s, actor=bob, upload_id=began.id, reason="over quota")
    assert not (root / "two").exists() and sorted(p.name for p in root.iterdir()) == ["one"]
    # another member's quota is their own
    other, _ = _upload_as_dataset(factory, team["cy"], _zip({"c.bin": b"z" * 3 * KIB}), root / "three")
    assert other.status is UploadStatus.DONE
    # a quota used up refuses the next upload before anything is sent
    _upload_as_dataset(factory, bob, _zip({"d.bin": b"w" * KIB}), root / "four")
    with pytest.raises(PermissionDenied, match="upload quota"):
        _begin(factory, bob)
    # deleting the dataset gives its bytes back
    with session_scope(factory) as s:
        s.execute(sa.delete(Dataset).where(Dataset.id == dataset_id))
    assert _begin(factory, bob).bytes == 3 * KIB
    assert [status for _, status, _ in _rows(factory)] == [UploadStatus.DONE, UploadStatus.FAILED, UploadStatus.DONE,
                                                           UploadStatus.DONE, UploadStatus.ACTIVE]


def test_uploads_in_progress_are_limited(factory: Any, team: dict[str, int]) -> None:
    bob = team["bob"]
    minute = dt.timedelta(minutes=1)
    first, second = (_begin(factory, bob, now=T0 + i * minute, quota_gb=100) for i in range(2))
    assert first.bytes == second.bytes == 4 * 1024**3  # each may unpack the archive limit
    with pytest.raises(PermissionDenied, match="2 upload.*may have 2 at once"):
        _begin(factory, bob, now=T0 + 2 * minute, quota_gb=100)
    assert _begin(factory, team["cy"], now=T0 + 2 * minute, quota_gb=100).status is UploadStatus.ACTIVE
    # an upload in progress for more than an hour is abandoned: the first no longer counts, the second does
    late = T0 + 60.5 * minute
    assert _begin(factory, bob, now=late, quota_gb=100).status is UploadStatus.ACTIVE
    with pytest.raises(PermissionDenied, match="may have 2 at once"):
        _begin(factory, bob, now=late, quota_gb=100)


def test_uploads_in_progress_reserve_their_share_of_the_quota(factory: Any, team: dict[str, int]) -> None:
    bob = team["bob"]
    first = _begin(factory, bob)
    assert first.bytes == 4 * KIB  # the whole quota is left, so the first upload may use all of it
    with pytest.raises(PermissionDenied, match="upload quota"):
        _begin(factory, bob)
    with session_scope(factory) as s:
        uploads.fail_upload(s, actor=bob, upload_id=first.id, reason="cancelled")
    assert _begin(factory, bob).bytes == 4 * KIB
    # the system (single-user mode, jobs) has no quota, only the archive limit
    assert _begin(factory, None).bytes == uploads.ArchiveLimits().max_total_bytes


def test_a_failed_extraction_leaves_no_files_and_marks_the_row_failed(factory: Any, team: dict[str, int],
                                                                      root: Path) -> None:
    bob = team["bob"]
    for data in (_zip({"../../escape.txt": b"x"}), b"not a zip at all", _zip({})):
        began = _begin(factory, bob, max_concurrent=10)
        with pytest.raises(uploads.ArchiveError):
            uploads.extract_upload(upload=began, data=data, dest=root / "ds")
        with session_scope(factory) as s:
            failed = uploads.fail_upload(s, actor=bob, upload_id=began.id, reason="unsafe")
        assert (failed.status, failed.bytes) == (UploadStatus.FAILED, 0) and failed.finished_at is not None
    assert list(root.iterdir()) == [] and not (root.parent / "escape.txt").exists()
    with session_scope(factory) as s, pytest.raises(Conflict, match="not in progress"):
        uploads.finish_upload(s, actor=bob, upload_id=began.id, dataset_id=1, unpacked=0)
    with pytest.raises(Conflict, match="not in progress"):
        uploads.extract_upload(upload=failed, data=_zip({"a": b"x"}), dest=root / "again")


def test_only_the_uploader_or_an_admin_ends_an_upload(factory: Any, team: dict[str, int]) -> None:
    began = _begin(factory, team["bob"])
    with session_scope(factory) as s, pytest.raises(PermissionDenied, match="another member's"):
        uploads.fail_upload(s, actor=team["cy"], upload_id=began.id, reason="x")
    with session_scope(factory) as s, pytest.raises(PermissionDenied, match="more than"):
        uploads.finish_upload(s, actor=team["bob"], upload_id=began.id, dataset_id=1, unpacked=began.bytes + 1)
    with session_scope(factory) as s:
        assert uploads.fail_upload(s, actor=None, upload_id=began.id, reason="x").status is UploadStatus.FAILED


def test_file_names_are_cleaned_and_must_name_an_archive() -> None:
    assert uploads.clean_filename("../../etc/evil name<b>.tar.gz") == "evil_name_b_.tar.gz"
    assert uploads.clean_filename("C:\\Users\\me\\data.ZIP") == "data.ZIP"
    for bad in ("notes.txt", "", "../.."):
        with pytest.raises(uploads.ArchiveError, match=r"\.zip or \.tar"):
            uploads.clean_filename(bad)
