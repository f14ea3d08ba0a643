"""Uploaded dataset archives: safe extraction, a quota per member and a limit on concurrent uploads.

An upload goes through three steps, so that no database session stays open while an archive
of gigabytes is unpacked:

1. :func:`begin_upload`, in its own short transaction: viewers are refused, and so is a member
   who already has ``max_concurrent_uploads`` uploads in progress (an active one older than an
   hour counts as abandoned) or whose quota is used up. The new row reserves what the archive
   may unpack: the member's quota (``upload_quota_gb``) less the unpacked bytes of their done
   uploads whose dataset still exists and what their other uploads in progress reserved.
2. :func:`extract_upload`, outside any session: the archive is unpacked within that reservation.
3. :func:`finish_upload` once the dataset is registered, or :func:`fail_upload` when anything
   went wrong; the caller removes the unpacked files first, so a failed upload leaves nothing.

Extraction checks every member before writing it: absolute paths, ``..`` components, drive
letters, links and device files are refused, and the number of files and the total size are
capped. Sizes are enforced on the bytes actually written, not on what the archive's headers claim
(a zip bomb lies in its headers). The archive is extracted into a temporary folder next to the
destination and renamed into place, so a failed extraction leaves nothing behind.

Example:
    >>> up = begin_upload(session, actor=2, filename="data.zip", quota_gb=50, max_concurrent=2)  # doctest: +SKIP
    >>> root = extract_upload(upload=up, data=uploaded.getvalue(), dest=dest)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.base import utcnow
from worker.db.models import Member, Upload, UploadStatus
from worker.errors import Conflict, InvalidInput, PermissionDenied
from worker.schemas import UploadRead
from worker.services import access
from worker.services._common import check_actor, get_or_raise
from worker.services.audit import record_event

__all__ = [
    "ABANDONED_AFTER",
    "ArchiveError",
    "ArchiveLimits",
    "safe_member_path",
    "extract_archive",
    "dataset_folder",
    "unpacked_bytes",
    "clean_filename",
    "begin_upload",
    "extract_upload",
    "finish_upload",
    "fail_upload",
    "quota_used",
]

_CHUNK = 1 << 20
_GIB = 1024**3
_MIB = 1024**2
ABANDONED_AFTER = dt.timedelta(hours=1)
_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


class ArchiveError(InvalidInput):
    """The upload is not an archive we can extract safely; the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class ArchiveLimits:
    """Caps on what an uploaded archive may unpack to.

    ``quota_bound`` says that ``max_total_bytes`` is what is left of the member's quota, so the
    message for a larger archive speaks of the quota.
    """

    max_files: int = 50_000
    max_total_bytes: int = 4 * _GIB
    max_file_bytes: int = _GIB
    quota_bound: bool = False


# ------------------------------------------------------------------ extraction


def safe_member_path(name: str) -> PurePosixPath | None:
    """The relative path a member may be written to, None for a directory entry.

    Raises:
        ArchiveError: an absolute path, a drive letter, a ``..`` component or an empty name.
    """
    raw = name.replace("\\", "/")
    if raw.endswith("/"):
        return None
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise ArchiveError(f"the archive contains an absolute path {name!r}; pack paths relative to the dataset folder")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if not parts:
        raise ArchiveError(f"the archive contains an entry with an empty name {name!r}")
    if any(p == ".." for p in parts):
        raise ArchiveError(f"the archive contains a path leaving its folder {name!r}; repack it without '..'")
    return PurePosixPath(*parts)


def _too_big(limits: ArchiveLimits) -> ArchiveError:
    if limits.quota_bound:
        return ArchiveError(f"the archive unpacks to more than the {limits.max_total_bytes // _MIB} MiB left of your "
                            "upload quota; delete datasets you uploaded, or ask an admin to raise upload_quota_gb")
    return ArchiveError(f"the archive unpacks to more than {limits.max_total_bytes // _MIB} MiB; "
                        "register it from a server path instead")


def _copy(src: IO[bytes], dst: Path, budget: list[int], limits: ArchiveLimits, name: str) -> None:
    written = 0
    with open(dst, "wb") as out:
        while True:
            chunk = src.read(_CHUNK)
            if not chunk:
                break
            written += len(chunk)
            budget[0] -= len(chunk)
            if written > limits.max_file_bytes:
                raise ArchiveError(f"{name} unpacks to more than {limits.max_file_bytes // _MIB} MiB; "
                                   "register such a dataset from a server path instead")
            if budget[0] < 0:
                raise _too_big(limits)
            out.write(chunk)


def _zip_members(zf: zipfile.ZipFile) -> Iterator[tuple[str, PurePosixPath | None, bool]]:
    for info in zf.infolist():
        mode = info.external_attr >> 16
        yield info.filename, safe_member_path(info.filename), stat.S_ISLNK(mode)


def _extract_zip(data: IO[bytes], tmp: Path, limits: ArchiveLimits) -> int:
    try:
        zf = zipfile.ZipFile(data)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"the upload is not a readable zip archive ({exc}); upload a .zip or .tar.gz") from exc
    with zf:
        members = list(_zip_members(zf))
        files = [(n, p) for n, p, link in members if p is not None and not link]
        if any(link for _, _, link in members):
            raise ArchiveError("the archive contains symbolic links; replace them with the files themselves")
        if len(files) > limits.max_files:
            raise ArchiveError(f"the archive holds {len(files)} files, more than {limits.max_files}; "
                               "register such a dataset from a server path instead")
        budget = [limits.max_total_bytes]
        for name, rel in files:
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(name) as src:
                    _copy(src, target, budget, limits, name)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise ArchiveError(f"{name} in the archive is corrupt ({exc}); repack and upload again") from exc
        return len(files)


def _extract_tar(data: IO[bytes], tmp: Path, limits: ArchiveLimits) -> int:
    try:
        tf = tarfile.open(fileobj=data, mode="r:*")
    except (tarfile.TarError, OSError) as exc:
        raise ArchiveError(f"the upload is not a readable archive ({exc}); upload a .zip or .tar.gz") from exc
    n = 0
    budget = [limits.max_total_bytes]
    with tf:
        try:
            for m in tf:
                rel = safe_member_path(m.name + ("/" if m.isdir() else ""))
                if rel is None:
                    continue
                if m.issym() or m.islnk():
                    raise ArchiveError("the archive contains links; replace them with the files themselves")
                if not m.isfile():
                    raise ArchiveError(f"the archive contains a special file {m.name!r}; pack regular files only")
                n += 1
                if n > limits.max_files:
                    raise ArchiveError(f"the archive holds more than {limits.max_files} files; register such a "
                                       "dataset from a server path instead")
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(m)
                if src is None:
                    continue
                with src:
                    _copy(src, target, budget, limits, m.name)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ArchiveError(f"the archive is corrupt ({exc}); repack and upload again") from exc
    return n


def extract_archive(
    data: bytes | IO[bytes], filename: str, dest: str | Path, *, limits: ArchiveLimits | None = None
) -> Path:
    """Extract an uploaded zip or tar archive into the new folder ``dest``.

    Args:
        data: The uploaded bytes (or a binary file object).
        filename: The upload's name (decides zip or tar).
        dest: The folder to create; it must not exist yet.
        limits: Caps on files and bytes.

    Returns:
        ``dest``.

    Raises:
        ArchiveError: the upload is not an archive, is corrupt, unsafe, empty or too large, or
            ``dest`` exists. Nothing is left on disk.
    """
    limits = limits or ArchiveLimits()
    dest = Path(dest)
    if dest.exists():
        raise ArchiveError(f"{dest} exists already; choose another dataset name")
    dest.parent.mkdir(parents=True, exist_ok=True)
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    tmp = Path(tempfile.mkdtemp(prefix=".upload-", dir=dest.parent))
    try:
        lower = filename.lower()
        if lower.endswith(".zip"):
            count = _extract_zip(stream, tmp, limits)
        elif lower.endswith(_SUFFIXES[1:]):
            count = _extract_tar(stream, tmp, limits)
        else:
            raise ArchiveError(f"{filename!r} is not a .zip or .tar(.gz) archive; upload one of those")
        if count == 0:
            raise ArchiveError("the archive is empty; it must hold the dataset's images and annotations")
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def dataset_folder(extracted: Path) -> Path:
    """The dataset's own folder: the single top-level folder of the archive, if it packs one."""
    entries = [p for p in extracted.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return extracted


def unpacked_bytes(folder: str | Path) -> int:
    """The bytes of every file under ``folder`` (what an extracted upload takes on disk)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            total += os.lstat(os.path.join(root, name)).st_size
    return total


# ------------------------------------------------------------------ the upload rows


def clean_filename(filename: str) -> str:
    """The upload's name as stored: its last path component, printable, at most 200 characters.

    Raises:
        ArchiveError: nothing is left, or it is not a .zip or .tar(.gz) name.
    """
    base = re.split(r"[/\\]", str(filename or ""))[-1]
    base = re.sub(r"[^\w.+-]+", "_", base).strip("._")[-200:]
    if not base.lower().endswith(_SUFFIXES):
        raise ArchiveError("the upload must be a .zip or .tar(.gz) archive; upload one of those")
    return base


def _active_since(now: dt.datetime) -> sa.ColumnElement[bool]:
    return sa.and_(Upload.status == UploadStatus.ACTIVE, Upload.started_at > now - ABANDONED_AFTER)


def quota_used(session: Session, *, member_id: int, now: dt.datetime | None = None) -> int:
    """Bytes of a member's quota in use: done uploads whose dataset still exists, and reservations.

    A reservation is what an upload in progress may unpack; one older than an hour is abandoned.
    """
    now = now or utcnow()
    kept = sa.and_(Upload.status == UploadStatus.DONE, Upload.dataset_id.is_not(None))
    total = session.scalar(sa.select(sa.func.coalesce(sa.func.sum(Upload.bytes), 0))
                           .where(Upload.member_id == member_id, sa.or_(kept, _active_since(now))))
    return int(total or 0)


def begin_upload(
    session: Session,
    *,
    actor: int | None,
    filename: str,
    quota_gb: float,
    max_concurrent: int,
    limits: ArchiveLimits | None = None,
    now: dt.datetime | None = None,
) -> UploadRead:
    """Record an upload in progress and reserve what it may unpack; commit before extracting.

    The system (``actor=None``) has no quota and no concurrency limit, only the archive limits.

    Returns:
        The active upload; its ``bytes`` is the most the archive may unpack.

    Raises:
        PermissionDenied: a viewer; too many uploads in progress; the quota is used up.
        ArchiveError: the file name is not a .zip or .tar(.gz).
    """
    check_actor(session, actor)
    access.require_member(session, actor, "upload datasets")
    name = clean_filename(filename)
    limits = limits or ArchiveLimits()
    now = now or utcnow()
    reserve = limits.max_total_bytes
    if actor is not None:
        # one member's uploads begin one at a time (PostgreSQL; SQLite serialises every write)
        session.execute(sa.select(Member.id).where(Member.id == actor).with_for_update())
        active = session.scalar(sa.select(sa.func.count(Upload.id))
                                .where(Upload.member_id == actor, _active_since(now))) or 0
        if active >= max_concurrent:
            raise PermissionDenied(
                f"you have {active} upload(s) in progress and may have {max_concurrent} at once; wait for one to "
                "finish, or ask an admin to raise max_concurrent_uploads"
            )
        quota = int(quota_gb * _GIB)
        left = quota - quota_used(session, member_id=actor, now=now)
        if left <= 0:
            raise PermissionDenied(
                f"your uploads use all of your {quota_gb:g} GiB upload quota; delete datasets you uploaded, "
                "or ask an admin to raise upload_quota_gb"
            )
        reserve = min(reserve, left)
    row = Upload(member_id=actor, filename=name, status=UploadStatus.ACTIVE, bytes=reserve, started_at=now)
    session.add(row)
    session.flush()
    record_event(session, actor=actor, action="upload.begin", object_kind="upload", object_id=row.id,
                 detail={"filename": name, "reserved_bytes": reserve})
    return UploadRead.model_validate(row)


def extract_upload(
    *, upload: UploadRead, data: bytes | IO[bytes], dest: str | Path, limits: ArchiveLimits | None = None
) -> Path:
    """Extract an upload begun with :func:`begin_upload` into the new folder ``dest``, within its reservation.

    Runs outside any database session. Nothing is left on disk when it raises.

    Raises:
        ArchiveError: as :func:`extract_archive`, or more than the reservation (the quota left).
        Conflict: the upload is not in progress.
    """
    if upload.status is not UploadStatus.ACTIVE:
        raise Conflict(f"upload {upload.id} is {upload.status.value}, not in progress; upload the archive again")
    limits = limits or ArchiveLimits()
    if upload.bytes < limits.max_total_bytes:
        limits = dataclasses.replace(limits, max_total_bytes=upload.bytes, quota_bound=True)
    return extract_archive(data, upload.filename, dest, limits=limits)


def _active_row(session: Session, actor: int | None, upload_id: int, action: str) -> Upload:
    check_actor(session, actor)
    row = get_or_raise(session, Upload, upload_id, "upload")
    if actor is not None and row.member_id != actor and not access.is_admin(session, actor):
        raise PermissionDenied(f"you cannot {action}: it is another member's; only they or an admin can")
    return row


def finish_upload(
    session: Session,
    *,
    actor: int | None,
    upload_id: int,
    dataset_id: int,
    unpacked: int,
    now: dt.datetime | None = None,
) -> UploadRead:
    """Mark an upload done: its files became dataset ``dataset_id`` and take ``unpacked`` bytes.

    Raises:
        Conflict: the upload is not in progress (it failed, or was finished already).
        PermissionDenied: another member's upload; more bytes than it reserved.
        NotFound: no such upload.
    """
    row = _active_row(session, actor, upload_id, "finish this upload")
    if row.status is not UploadStatus.ACTIVE:
        raise Conflict(f"upload {upload_id} is {row.status.value}, not in progress; upload the archive again")
    if isinstance(unpacked, bool) or not isinstance(unpacked, int) or unpacked < 0:
        raise InvalidInput(f"unpacked must be a number of bytes, got {unpacked!r}")
    if unpacked > row.bytes:
        raise PermissionDenied(f"the archive unpacked to {unpacked // _MIB} MiB, more than the {row.bytes // _MIB} "
                               "MiB it could use of your upload quota; delete datasets you uploaded first")
    row.status = UploadStatus.DONE
    row.bytes = unpacked
    row.dataset_id = dataset_id
    row.finished_at = now or utcnow()
    session.flush()
    record_event(session, actor=actor, action="upload.finish", object_kind="upload", object_id=row.id,
                 detail={"dataset_id": dataset_id, "bytes": unpacked})
    return UploadRead.model_validate(row)


def fail_upload(
    session: Session, *, actor: int | None, upload_id: int, reason: str, now: dt.datetime | None = None
) -> UploadRead:
    """Mark an upload in progress failed (its files must be gone already); other states are kept.

    Raises:
        PermissionDenied: another member's upload.
        NotFound: no such upload.
    """
    row = _active_row(session, actor, upload_id, "end this upload")
    if row.status is not UploadStatus.ACTIVE:
        return UploadRead.model_validate(row)
    row.status = UploadStatus.FAILED
    row.bytes = 0
    row.finished_at = now or utcnow()
    session.flush()
    record_event(session, actor=actor, action="upload.fail", object_kind="upload", object_id=row.id,
                 detail={"reason": " ".join(str(reason).split())[:300]})
    return UploadRead.model_validate(row)
