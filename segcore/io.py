"""Atomic file writes: a temp file in the same folder, fsync, then rename.

A reader never sees a half-written file; a crash leaves either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_bytes", "atomic_write_text", "atomic_dir", "atomic_path", "recover_dir",
    "append_jsonl", "read_jsonl", "rewrite_jsonl", "writer_alive", "LEFTOVER",
]

#: Names of the temp (``.<name>.tmp-<pid>-<random>``) and set-aside (``.<name>.old-<pid>``) folders and
#: files of atomic writes; ``name`` is what is being written, ``pid`` its writer.
LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<what>tmp|old)-(?P<pid>\d+)(?:-\w+)?")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success it is renamed onto ``path``.

    Example:
        >>> with atomic_path("out.npz") as tmp:  # doctest: +SKIP
        ...     np.savez(tmp, a=1)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file below ``root``, then every folder, deepest first (the folder entries last)."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            _fsync_path(Path(folder, name))
        _fsync_path(Path(folder))


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    libc = _libc()
    fn = getattr(libc, "renameat2", None) if libc is not None else None
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False  # the file system or kernel cannot exchange: fall back to two renames
    raise OSError(err, os.strerror(err), str(b))


def _libc() -> ctypes.CDLL | None:
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def writer_alive(pid: int) -> bool:
    """Whether the process that named a temp folder ``.<name>.tmp-<pid>-*`` may still be writing it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leftovers(path: Path) -> Iterator[tuple[Path, str, int]]:
    """Temp and set-aside folders of earlier writes of ``path``: ``(sibling, kind, writer pid)``."""
    for sib in path.parent.glob(f".{glob.escape(path.name)}.*"):
        m = LEFTOVER.fullmatch(sib.name)
        if m and m["name"] == path.name:
            yield sib, m["what"], int(m["pid"])


def recover_dir(path: str | Path) -> bool:
    """Finish a replacement of ``path`` that a crash interrupted, and remove stale temp folders.

    If ``path`` is missing but a set-aside copy of it is there (a crash between the two renames of
    the fallback path), the copy is put back. Temp folders of writers that are no longer running are
    removed. Returns whether ``path`` exists afterwards.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return False
    for sib, kind, pid in sorted(_leftovers(path), key=lambda x: x[0].stat().st_mtime, reverse=True):
        if pid == os.getpid() or writer_alive(pid):
            continue
        if kind == "old" and not path.exists():
            os.replace(sib, path)
            _fsync_path(path.parent)
        else:
            shutil.rmtree(sib, ignore_errors=True)
    return path.exists()


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder next to ``path``; on success it replaces ``path`` with every file fsynced.

    With ``overwrite`` an existing ``path`` is exchanged with the new folder in one atomic step
    where the kernel allows it (Linux ``renameat2``), so there is never a moment without a valid
    ``path``. Elsewhere the old folder is renamed aside first; :func:`recover_dir` (called here
    before writing, and by readers that resume) puts it back if a crash came between the renames.
    Temp folders left by crashed writers are removed on the next write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path} already exists")
            if _exchange(tmp, path):
                old = tmp  # now holds the previous folder
            else:
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.replace(path, old)
                os.replace(tmp, path)
            _fsync_path(path.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
            _fsync_path(path.parent)
    except BaseException:
        if tmp.exists() and tmp != path:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line to ``path`` and fsync it, so the line is on disk when this returns."""
    line = json.dumps(record) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file, skipping a torn (half-written) last line. Missing file: []."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # a write cut short by a crash
            raise
    return out


def rewrite_jsonl(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Replace a JSON-lines file atomically with ``records``."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
