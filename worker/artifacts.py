"""The artifact root: a local folder, or an fsspec URL (``s3://bucket/prefix``) shared by workers on many machines.

segcore reads and writes local folders only. With a remote root, every process works in a local
mirror of it (``<artifact_cache>/<protocol>/<bucket>/<prefix>/...``): a worker writes a run folder
or a job's output there and :meth:`Artifacts.push` uploads it; a reader calls :meth:`Artifacts.fetch`
with the location stored in the database and gets a local path, downloading only the files that
changed since its last fetch. With a local root both are no-ops and the location is the path.

Locations stored in the database are what :meth:`Artifacts.location` returns: a local path, or the
URL under the remote root. A push uploads a folder's files one by one (each upload replaces one
object whole) with every ``manifest.json`` last, so a reader never opens a probability store whose
shards are not there yet; files a previous push uploaded and that are gone locally are deleted.
Remote dataset roots are mirrored the same way (:meth:`Artifacts.local_source`).

Example:
    >>> arts = Artifacts.from_settings(settings)            # root s3://team/segboard
    >>> out = arts.local_dir("ensembles", "3", "test")      # write here with segcore
    >>> location = arts.push(out)                           # 's3://team/segboard/ensembles/3/test'
    >>> arts.fetch(location)                                # on any machine: a local copy
    PosixPath('/home/me/.segboard/artifact-cache/s3/team/segboard/ensembles/3/test')
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from worker.errors import ServiceError
from worker.settings import Settings

__all__ = ["Artifacts", "ArtifactError", "is_url", "local_path", "local_source", "open_local_dataset"]

_STATE_PREFIX = ".segboard-"
_FETCHED = ".segboard-fetched.json"  # rel path -> remote token of the copy on disk
_PUSHED = ".segboard-pushed.json"  # rel path -> [size, mtime_ns] of the local file last uploaded
_LAST = "manifest.json"  # uploaded after every other file of its folder


class ArtifactError(ServiceError):
    """An artifact location cannot be read or written; the message names the location and the fix."""


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is a remote fsspec URL (``file://`` counts as local)."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def _local(location: str | os.PathLike[str]) -> Path:
    return Path(str(location).removeprefix("file://"))


def _token(info: dict[str, Any]) -> str:
    """What identifies one version of a remote file: its size and ETag (or modification time)."""
    version = next((info[k] for k in ("ETag", "etag", "mtime", "LastModified", "last_modified", "created")
                    if info.get(k) is not None), "")
    return f"{info.get('size')}:{version}"


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".segboard-tmp-")
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, sort_keys=True)
    os.replace(tmp, path)


def _upload_order(rel: str) -> tuple[bool, str]:
    return Path(rel).name == _LAST, rel


class Artifacts:
    """Where runs, stores, submissions and pseudo-label datasets live; see the module docstring.

    Build one with :meth:`from_settings`; it is cheap and thread-safe.
    """

    def __init__(self, root: str, *, cache: Path, storage_options: dict[str, Any] | None = None) -> None:
        self.root = str(root).rstrip("/") or "/"
        self.is_local = not is_url(self.root)
        self.cache = Path(cache)
        self.storage_options = dict(storage_options or {})
        self._lock = threading.Lock()
        self._fs: dict[str, Any] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Artifacts:
        return cls(str(settings.artifact_root), cache=settings.artifact_cache_dir,
                   storage_options=settings.storage_options)

    # -------------------------------------------------------------- paths and locations

    def mirror(self, url: str) -> Path:
        """The local mirror of a remote URL: ``<cache>/<protocol>/<rest of the URL>``."""
        protocol, rest = url.split("://", 1)
        parts = [p for p in rest.split("/") if p not in ("", ".", "..")]
        return self.cache.joinpath(protocol, *parts)

    def local_dir(self, *parts: str) -> Path:
        """A folder (or file) under the root, on this machine: the root itself or its mirror."""
        clean = [p.strip("/") for p in parts if p.strip("/")]
        if self.is_local:
            return _local(self.root).joinpath(*clean)
        return self.mirror("/".join([self.root, *clean]))

    def location(self, path: str | os.PathLike[str]) -> str:
        """What the database stores for a local path: the path, or the URL a path in the mirror stands for."""
        try:
            rel = Path(path).relative_to(self.cache)
        except ValueError:
            if self.is_local:
                return str(path)
            raise ArtifactError(
                f"{path} is not inside the local mirror {self.cache} of the artifact root {self.root}"
            ) from None
        if len(rel.parts) < 2:
            raise ArtifactError(f"{path} is the mirror's top folder, not an artifact under {self.root}")
        return f"{rel.parts[0]}://" + "/".join(rel.parts[1:])

    def resolve(self, location: str | os.PathLike[str]) -> str:
        """A stored location made absolute: a relative one is relative to the artifact root."""
        text = str(location)
        if is_url(text) or Path(_local(text)).is_absolute():
            return text
        return self.location(self.local_dir(text)) if not self.is_local else str(self.local_dir(text))

    # -------------------------------------------------------------- remote access

    def _filesystem(self, url: str) -> tuple[Any, str]:
        import fsspec

        protocol = url.split("://", 1)[0]
        with self._lock:
            fs = self._fs.get(protocol)
            if fs is None:
                try:
                    fs = fsspec.filesystem(protocol, **self.storage_options)
                except ImportError as exc:
                    raise ArtifactError(
                        f"the location {url} needs an fsspec driver for {protocol!r} that is not installed "
                        f"({exc}); for s3:// run pip install 'segboard[s3]' (s3fs), for gs:// gcsfs"
                    ) from exc
                except (ValueError, TypeError) as exc:
                    raise ArtifactError(
                        f"cannot open {protocol}:// with storage_options {self.storage_options!r} ({exc}); "
                        "check SEGBOARD_STORAGE_OPTIONS"
                    ) from exc
                self._fs[protocol] = fs
        return fs, fs._strip_protocol(url)

    def _fail(self, what: str, url: str, exc: BaseException) -> ArtifactError:
        return ArtifactError(
            f"cannot {what} {url} ({type(exc).__name__}: {exc}); check that the storage is reachable from this "
            "machine and that its credentials and SEGBOARD_STORAGE_OPTIONS (e.g. endpoint_url) are set"
        )

    def check(self) -> None:
        """Make sure this process can write to the root (a worker calls it before taking runs)."""
        if self.is_local:
            _local(self.root).mkdir(parents=True, exist_ok=True)
            return
        fs, path = self._filesystem(self.root)
        probe = f"{path.rstrip('/')}/.segboard-probe-{os.getpid()}"
        try:  # object stores have no folders: write and delete a small object to prove access
            fs.pipe_file(probe, b"")
            fs.rm_file(probe)
        except Exception as exc:  # every driver raises its own types
            raise self._fail("reach the artifact root", self.root, exc) from exc

    def _remote_files(self, url: str) -> dict[str, dict[str, Any]]:
        """``{relative path: info}`` of the files at ``url`` (a folder, or one file with key '')."""
        fs, path = self._filesystem(url)
        try:
            found = fs.find(path, detail=True, withdirs=False)
        except FileNotFoundError:
            found = {}
        except Exception as exc:
            raise self._fail("list", url, exc) from exc
        out: dict[str, dict[str, Any]] = {}
        prefix = path.rstrip("/") + "/"
        for name, info in found.items():
            name = name.rstrip("/")
            if name == path.rstrip("/"):
                out[""] = info
            elif name.startswith(prefix) and not Path(name).name.startswith(_STATE_PREFIX):
                out[name[len(prefix):]] = info
        return out

    def fetch(self, location: str | os.PathLike[str]) -> Path:
        """A local path holding the artifact at ``location``, downloading what changed (remote only).

        Raises:
            ArtifactError: nothing is stored at ``location``, or the storage cannot be read.
        """
        text = self.resolve(location)
        if not is_url(text):
            return _local(text)
        files = self._remote_files(text)
        if not files:
            raise ArtifactError(f"nothing is stored at {text}; it was deleted or its upload never finished")
        fs, path = self._filesystem(text)
        target = self.mirror(text)
        folder, state_file = (target.parent, target.parent / _FETCHED) if "" in files else (target, target / _FETCHED)
        state = _read_state(state_file)
        known = _KnownTokens(self.cache)
        changed = False
        todo: list[tuple[str, str, Path, str]] = []  # key, remote path, local path, token
        for rel, info in sorted(files.items(), key=lambda kv: _upload_order(kv[0])):
            key = target.name if rel == "" else rel
            dest = folder / key
            token = _token(info)
            if dest.is_file() and dest.stat().st_size == info.get("size") and (
                state.get(key) == token or known.get(dest) == token  # a push or fetch of a parent folder
            ):
                if state.get(key) != token:
                    state[key], changed = token, True
                continue
            todo.append((key, path if rel == "" else f"{path.rstrip('/')}/{rel}", dest, token))
        if todo:
            temps = []
            for _, _, dest, _ in todo:
                dest.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".segboard-tmp-")
                os.close(fd)
                temps.append(tmp)
            try:  # one batch: an async driver (s3fs) downloads the files concurrently
                fs.get([remote for _, remote, _, _ in todo], temps)
            except Exception as exc:
                for tmp in temps:
                    Path(tmp).unlink(missing_ok=True)
                raise self._fail("download", text, exc) from exc
            for (key, _, dest, token), tmp in zip(todo, temps, strict=True):  # manifests replaced last
                os.replace(tmp, dest)
                state[key] = token
            changed = True
        if changed:
            _write_state(state_file, state)
        return target

    def push(self, path: str | os.PathLike[str]) -> str:
        """Upload a local file or folder under :meth:`local_dir` to the root; returns its location.

        Only files changed since the last push are uploaded; ``manifest.json`` files go last.
        """
        local = Path(path)
        location = self.location(local)
        if not is_url(location):
            return location
        if not local.exists():
            raise ArtifactError(f"cannot upload {local}: it does not exist")
        fs, remote = self._filesystem(location)
        folder = local.parent if local.is_file() else local
        pushed_file, fetched_file = folder / _PUSHED, folder / _FETCHED
        pushed, fetched = _read_state(pushed_file), _read_state(fetched_file)
        current = {local.name: local} if local.is_file() else dict(_walk(local))
        base = remote.rsplit("/", 1)[0] if local.is_file() else remote.rstrip("/")
        stats = {rel: p.stat() for rel, p in current.items()}
        changed = [rel for rel in sorted(current, key=_upload_order)
                   if pushed.get(rel) != [stats[rel].st_size, stats[rel].st_mtime_ns]]
        try:
            # one batch for the data (concurrent on an async driver such as s3fs), then the manifests
            for batch in ([r for r in changed if not _upload_order(r)[0]], [r for r in changed if _upload_order(r)[0]]):
                if batch:
                    fs.put([str(current[r]) for r in batch], [f"{base}/{r}" for r in batch])
                    pushed.update({r: [stats[r].st_size, stats[r].st_mtime_ns] for r in batch})
            if changed:  # the uploaded copies are the remote ones: no download on this machine later
                infos = ({local.name: fs.info(f"{base}/{local.name}")} if local.is_file()
                         else self._remote_files(location))
                fetched.update({r: _token(infos[r]) for r in changed if r in infos})
            if not local.is_file():
                for rel in [r for r in pushed if r not in current]:
                    fs.rm_file(f"{base}/{rel}")
                    pushed.pop(rel)
                    fetched.pop(rel, None)
        except ArtifactError:
            raise
        except Exception as exc:
            raise self._fail("upload to", location, exc) from exc
        finally:
            _write_state(pushed_file, pushed)
            _write_state(fetched_file, fetched)
        return location

    def files(self, location: str | os.PathLike[str] | None) -> list[tuple[str, int]]:
        """``(relative path, size)`` of the files at a location; empty when nothing is there."""
        if not location:
            return []
        text = self.resolve(location)
        if is_url(text):
            return sorted((rel, int(info.get("size") or 0)) for rel, info in self._remote_files(text).items() if rel)
        root = _local(text)
        if not root.is_dir():
            return []
        return sorted((rel, p.stat().st_size) for rel, p in _walk(root))

    def remove(self, location: str | os.PathLike[str]) -> None:
        """Delete the file or folder stored at a location (remote or local)."""
        text = self.resolve(location)
        if not is_url(text):
            path = _local(text)
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            return
        fs, path_ = self._filesystem(text)
        try:
            fs.rm(path_, recursive=True)
        except FileNotFoundError:
            return
        except Exception as exc:  # any driver error becomes one clear message
            raise self._fail("delete", text, exc) from exc

    def exists(self, location: str | os.PathLike[str] | None) -> bool:
        """Whether something is stored at the location."""
        if not location:
            return False
        text = self.resolve(location)
        if not is_url(text):
            return _local(text).exists()
        return bool(self._remote_files(text))

    # -------------------------------------------------------------- datasets

    def local_source(self, source: Any, dataset_root: str | None) -> tuple[Any, str | None]:
        """A dataset source and dataset root that segcore can read: remote ones mirrored locally.

        A source whose ``root`` is a URL, or is relative to a dataset root that is a URL, is fetched
        into the cache; the returned source then names the local copy.
        """
        root = str(source.root)
        if not is_url(root) and dataset_root is not None and is_url(dataset_root) and not Path(root).is_absolute():
            root = "/".join([str(dataset_root).rstrip("/"), root.strip("/")])
        if not is_url(root):
            local_root = None if dataset_root is not None and is_url(dataset_root) else dataset_root
            return source, local_root
        local = self.fetch(root)
        return source.model_copy(update={"root": str(local)}), None


def local_path(artifacts: Artifacts | None, location: str | os.PathLike[str]) -> Path:
    """``artifacts.fetch(location)``; without artifact settings, a stored location must be local."""
    if artifacts is not None:
        return artifacts.fetch(location)
    if is_url(location):
        raise ArtifactError(f"{location} is in a remote artifact root; pass the artifact settings to read it")
    return _local(location)


def local_source(artifacts: Artifacts | None, source: Any, dataset_root: str | None) -> tuple[Any, str | None]:
    """:meth:`Artifacts.local_source`, or the source unchanged without artifact settings."""
    if artifacts is not None:
        return artifacts.local_source(source, dataset_root)
    return source, dataset_root


def open_local_dataset(
    artifacts: Artifacts | None,
    source: Any,
    *,
    classes: Any,
    task: Any,
    ignore_index: int,
    dataset_root: str | None,
) -> Any:
    """segcore's ``SegDataset`` of a dataset source, mirrored locally first when it is remote.

    The one place that turns a stored dataset (its source, classes, task and ignore index) into
    something segcore reads: services, job handlers and the dashboard all open datasets here.

    Args:
        artifacts: Mirrors a remote source or dataset root; None: both must be local.
        source: A segcore ``DatasetSource`` or its stored dict form.
        classes: Class names in index order.
        task: ``multiclass`` or ``multilabel`` (a ``TaskType`` or its value).
        ignore_index: Label value of unlabelled pixels.
        dataset_root: Folder a relative ``source.root`` is resolved against (the settings' one).

    Raises:
        DatasetError: the files cannot be opened as that format.
        ArtifactError: a remote source cannot be fetched.
    """
    from segcore.config import DatasetSource
    from segcore.data.formats import open_dataset

    if isinstance(source, dict):
        from pydantic import TypeAdapter

        source = TypeAdapter(DatasetSource).validate_python(source)
    local, root = local_source(artifacts, source, None if dataset_root is None else str(dataset_root))
    return open_dataset(local, classes=list(classes), task=getattr(task, "value", task), ignore_index=ignore_index,
                        dataset_root=root)


class _KnownTokens:
    """The remote tokens recorded for a file by fetches or pushes of the folders above it."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self._states: dict[Path, dict[str, Any]] = {}

    def get(self, path: Path) -> str | None:
        folder = path.parent
        while folder != self.top and self.top in folder.parents:
            if folder not in self._states:
                self._states[folder] = _read_state(folder / _FETCHED)
            token = self._states[folder].get(path.relative_to(folder).as_posix())
            if token is not None:
                return str(token)
            folder = folder.parent
        return None


def _walk(folder: Path) -> Iterator[tuple[str, Path]]:
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith(_STATE_PREFIX):
            yield p.relative_to(folder).as_posix(), p
