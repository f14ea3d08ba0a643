"""The client's side of the API's wire format: error answers, request payloads, answers as frames, downloads.

The API answers an error as ``{"error": <worker.errors type>, "detail": <message>, ...}``
(:mod:`worker.api._errors`); :func:`error_of` raises it again as that type with the server's message.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from worker import errors
from worker.db.models import RunStatus
from worker.schemas import EnsembleMember, ExperimentRead

__all__ = ["DONE", "error_of", "config_payload", "flat", "member", "run_ids_of", "download_folder"]

# An answer without a recognised error type is raised by its status.
_BY_STATUS: dict[int, type[Exception]] = {401: errors.AuthenticationFailed, 403: errors.PermissionDenied,
                                          404: errors.NotFound, 409: errors.Conflict, 422: errors.InvalidInput}
DONE = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}


def error_of(response: httpx.Response) -> Exception:
    """The :mod:`worker.errors` exception an error answer stands for, with the server's message."""
    try:
        body = response.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    detail = body.get("detail")
    if not isinstance(detail, str):
        detail = f"{response.status_code} {response.reason_phrase} from {response.request.url}"
    name = body.get("error")
    cls: Any = getattr(errors, name) if name in errors.__all__ else _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = errors.ServiceError
    if cls is errors.InvalidFields:
        problems = [(str(p[0]), str(p[1])) for p in body.get("problems") or [] if isinstance(p, list) and len(p) == 2]
        return errors.InvalidFields(detail.split("\n", 1)[0], problems)
    if cls is errors.NotFound:
        exc = errors.NotFound.__new__(errors.NotFound)
        Exception.__init__(exc, detail)  # the server's message as it is
        exc.kind, exc.object_id = body.get("kind", ""), body.get("object_id")
        return exc
    return cls(detail)


def config_payload(config: Any) -> dict[str, Any] | str:
    """A config as the API takes it: a mapping, or YAML/JSON text (a file's text when given a path)."""
    if hasattr(config, "to_dict"):  # segcore's ExperimentConfig
        return config.to_dict()
    if isinstance(config, Mapping):
        return dict(config)
    if isinstance(config, Path) or (isinstance(config, str) and "\n" not in config
                                    and config.strip().endswith((".yaml", ".yml", ".json"))):
        try:
            return Path(config).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise errors.InvalidInput(f"cannot read the config file {config}: {exc.strerror}; check the path") from exc
    if isinstance(config, str):
        return config
    raise errors.InvalidInput(f"a config is a mapping, an ExperimentConfig, YAML text or a file path, got "
                              f"{type(config).__name__}")


def flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """Put ``value`` into ``out`` under ``prefix``; a mapping as one ``prefix_key`` entry per leaf."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            flat(f"{prefix}_{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value


def member(item: Any) -> dict[str, Any]:
    """An ensemble member from a run id, ``(kind, id)``, ``(kind, id, weight)``, a mapping or an EnsembleMember."""
    if isinstance(item, EnsembleMember):
        return item.model_dump(mode="json")
    if isinstance(item, Mapping):
        return dict(item)
    if isinstance(item, int) and not isinstance(item, bool):
        return {"kind": "run", "id": item}
    if isinstance(item, tuple) and len(item) in (2, 3):
        return dict(zip(("kind", "id", "weight"), item))
    raise errors.InvalidInput(f"an ensemble member is a run id, ('group', 3), ('run', 5, 0.5) or a mapping, "
                              f"got {item!r}")


def run_ids_of(run_ids: int | ExperimentRead | Iterable[int]) -> list[int]:
    """Run ids from one id, several, or an experiment (its runs)."""
    if isinstance(run_ids, ExperimentRead):
        return list(run_ids.run_ids)
    if isinstance(run_ids, int):
        return [run_ids]
    return [int(i) for i in run_ids]


def download_folder(http: httpx.Client, url: str, auth: Mapping[str, str], params: dict[str, Any],
                    target: Path) -> Path:
    """Fetch the zipped folder the API answers ``url`` with into ``target``, unless the copy there is current.

    The version (the answer's ETag) is kept next to the folder; the server answers 304 while it holds.

    Raises:
        ServiceError: the download broke off or the archive is not one folder (and what the API raises).
    """
    stamp = target.parent / f".{target.name}.etag"
    headers = {**auth, "Accept-Encoding": "identity"}  # the entries are compressed already
    if target.is_dir() and stamp.is_file():
        headers["If-None-Match"] = stamp.read_text().strip()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with http.stream("GET", url, params=params, headers=headers) as response:
            if response.status_code == 304:
                return target
            if response.status_code >= 400:
                response.read()
                raise error_of(response)
            with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
                archive = Path(tmp) / "folder.zip"
                with archive.open("wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
                with zipfile.ZipFile(archive) as zf:
                    names = zf.namelist()
                    top = names[0].split("/", 1)[0] if names else ""
                    if not top or any(not n.startswith(f"{top}/") or ".." in n.split("/") for n in names):
                        raise errors.ServiceError(f"the server's answer to {url} is not a zip of one folder; "
                                                  "is the address a SegBoard?")
                    zf.extractall(tmp)
                if target.exists():
                    shutil.rmtree(target)
                os.replace(Path(tmp) / top, target)
            stamp.write_text(response.headers.get("etag", ""))
    except httpx.HTTPError as exc:
        raise errors.ServiceError(f"downloading {url} failed ({type(exc).__name__}: {exc}); try again") from exc
    return target
