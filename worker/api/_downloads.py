"""A folder of the artifact root as a streamed zip (probability stores, checkpoints).

The folder is on this machine (a remote artifact root is fetched into the local mirror first, by
:meth:`worker.artifacts.Artifacts.fetch`). The zip is written while it is sent, a chunk at a time,
so memory stays bounded whatever the folder's size; files are stored uncompressed (store entries
are compressed already). The answer's ``ETag`` names the folder's version (its files' names, sizes
and modification times): a client that has it sends ``If-None-Match`` and gets 304.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator
from pathlib import Path

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

__all__ = ["folder_files", "folder_etag", "zip_response"]

_CHUNK = 1 << 20
_STATE_PREFIX = ".segboard-"  # the artifact mirror's bookkeeping files, not part of the artifact


def folder_files(folder: Path) -> list[tuple[str, Path]]:
    """``(path inside the folder, file)`` of every file under ``folder``, sorted; bookkeeping files left out."""
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not path.is_symlink() and not any(p.startswith(_STATE_PREFIX) for p in rel.split("/")):
            out.append((rel, path))
    return out


def folder_etag(files: list[tuple[str, Path]]) -> str:
    """A strong ETag of a folder's version: a rewrite changes a size or a modification time."""
    digest = hashlib.sha256()
    for rel, path in files:
        st = path.stat()
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return f'"{digest.hexdigest()[:32]}"'


class _Sink:
    """A write-only stream whose bytes are taken out as they are written (zipfile's output)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def _zip_chunks(files: list[tuple[str, Path]], top: str) -> Iterator[bytes]:
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:  # type: ignore[call-overload]  # a write-only stream
        for rel, path in files:
            info = zipfile.ZipInfo.from_file(path, f"{top}/{rel}")
            info.compress_type = zipfile.ZIP_STORED
            with path.open("rb") as src, zf.open(info, "w", force_zip64=True) as dest:
                while chunk := src.read(_CHUNK):
                    dest.write(chunk)
                    yield sink.take()
            yield sink.take()
    yield sink.take()


def zip_response(request: Request, folder: Path, *, name: str) -> Response:
    """The folder as a zip named ``<name>.zip`` whose entries sit under ``<name>/``; 304 when the client has it.

    Args:
        request: The request (its ``If-None-Match`` header).
        folder: A local folder.
        name: The zip's top folder and file name (letters, digits, ``-``, ``_``).
    """
    files = folder_files(folder)
    etag = folder_etag(files)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    headers["Content-Disposition"] = f'attachment; filename="{name}.zip"'
    return StreamingResponse(_zip_chunks(files, name), media_type="application/zip", headers=headers)
