"""Safe extraction of an uploaded dataset archive (zip or tar): no path traversal, bounded size and count.

Every member is checked before anything is written: absolute paths, ``..`` components, drive
letters, links and device files are refused, and the number of files and the total size are
capped. Sizes are enforced on the bytes actually written, not on what the archive's headers claim
(a zip bomb lies in its headers). The archive is extracted into a temporary folder next to the
destination and renamed into place, so a failed extraction leaves nothing behind.

Example:
    >>> root = extract_archive(uploaded.getvalue(), "data.zip", dest)  # doctest: +SKIP
"""

from __future__ import annotations

import io
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

__all__ = ["ArchiveError", "ArchiveLimits", "safe_member_path", "extract_archive", "dataset_folder"]

_CHUNK = 1 << 20


class ArchiveError(ValueError):
    """The upload is not an archive we can extract safely; the message says what to fix."""


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps on what an uploaded archive may unpack to."""

    max_files: int = 50_000
    max_total_bytes: int = 4 * 1024**3
    max_file_bytes: int = 1024**3


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
                raise ArchiveError(f"{name} unpacks to more than {limits.max_file_bytes // 2**20} MiB; "
                                   "register such a dataset from a server path instead")
            if budget[0] < 0:
                raise ArchiveError(f"the archive unpacks to more than {limits.max_total_bytes // 2**20} MiB; "
                                   "register it from a server path instead")
            out.write(chunk)


def _zip_members(zf: zipfile.ZipFile) -> Iterator[tuple[str, PurePosixPath | None, bool]]:
    for info in zf.infolist():
        mode = info.external_attr >> 16
        is_link = stat.S_ISLNK(mode)
        yield info.filename, safe_member_path(info.filename), is_link


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
        elif lower.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
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
