"""Disk use under the artifact root, per run, group, experiment or dataset, with a total.

Which files belong to which object comes from the artifact inventory
(:mod:`worker.services.inventory`): an object owns its folder ``<kind folder>/<id>`` and every
location its row lists. One listing of the root (local ``os.walk``, or fsspec ``find`` with the
object sizes of a bucket) is split between the objects; a file under several owned locations counts
once, for the deepest. The rows of a report add up to its total: objects outside the chosen
hierarchy (ensembles, pseudo-label rounds) get one row per kind, and files no object owns (the
weights cache, orphans ``segboard doctor`` reports) the row ``other``.

Example:
    >>> report = disk_use(session, by="experiment", artifacts=arts)  # doctest: +SKIP
    >>> [(r.name, r.bytes) for r in report.rows][:2], report.total_bytes  # doctest: +SKIP
    ([('unet-folds', 412_000_000), ('fpn', 120_000_000)], 560_000_000)
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.artifacts import Artifacts, is_url
from worker.db.models import Dataset, Ensemble, Experiment, PseudoRound, Run, RunGroup, Submission
from worker.errors import InvalidInput
from worker.schemas import DiskUseReport, DiskUseRow, ObjectStorage
from worker.services._common import get_or_raise
from worker.services.inventory import Inventory, folder_of, inventory

__all__ = ["BY", "disk_use", "storage_of", "size_of", "resolved", "outermost", "format_bytes", "footprints",
           "members_of"]

BY = ("run", "group", "experiment", "dataset")
_BUCKETS = {"ensemble": "ensembles", "pseudo_round": "pseudo-label rounds", "submission": "submissions",
            "group": "groups' own stores", "run": "runs without a group"}

Key = tuple[str, int]


def format_bytes(n: int) -> str:
    """``1.5 GiB``, ``57.0 MiB``, ``12.0 KiB`` or ``300 B``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def resolved(artifacts: Artifacts, location: str) -> str:
    """A stored location made absolute and normal (no trailing slash, ``file://`` dropped)."""
    text = artifacts.resolve(location).rstrip("/")
    return text if is_url(text) else os.path.normpath(text.removeprefix("file://"))


def outermost(locations: Iterable[str]) -> list[str]:
    """The locations that are not inside another one of them (resolved locations)."""
    out: list[str] = []
    for loc in sorted(set(locations), key=len):
        if not any(loc == o or loc.startswith(o.rstrip("/") + "/") for o in out):
            out.append(loc)
    return sorted(out)


def _files_at(artifacts: Artifacts, location: str) -> list[tuple[str, int]]:
    """``(relative path, size)`` at a resolved location, a folder or a single file."""
    found = artifacts.files(location)
    if found:
        return found
    if not is_url(location):
        path = Path(location)
        return [(path.name, path.stat().st_size)] if path.is_file() else []
    parent, name = location.rsplit("/", 1)
    return [(rel, size) for rel, size in artifacts.files(parent) if rel == name]


def size_of(artifacts: Artifacts, locations: Iterable[str]) -> tuple[int, int]:
    """Bytes and files stored at ``locations`` (stored or resolved; nested ones counted once)."""
    total = count = 0
    for loc in outermost(resolved(artifacts, x) for x in locations):
        for _, size in _files_at(artifacts, loc):
            total, count = total + size, count + 1
    return total, count


def _per_object(artifacts: Artifacts, inv: Inventory) -> tuple[dict[Key, list[int]], list[int]]:
    """``{(kind, id): [bytes, files]}`` of every object, and ``[bytes, files]`` of the files no object owns."""
    root = resolved(artifacts, artifacts.root)
    owners: dict[str, Key] = {}  # relative prefix under the root -> owner
    outside: dict[str, Key] = {}  # resolved location outside the root -> owner
    for kind, ids in inv.ids.items():
        for object_id in ids:
            owners[folder_of(kind, object_id)] = (kind, object_id)
    for art in inv.artifacts:
        loc = resolved(artifacts, art.location)
        if loc.startswith(root + "/"):
            owners[loc[len(root) + 1:]] = (art.owner_kind, art.owner_id)
        else:
            outside[loc] = (art.owner_kind, art.owner_id)
    use: dict[Key, list[int]] = defaultdict(lambda: [0, 0])
    unowned = [0, 0]
    for rel, size in artifacts.files(root):
        parts = rel.split("/")
        owner = next((owners[p] for p in ("/".join(parts[:i]) for i in range(len(parts), 0, -1)) if p in owners), None)
        slot = use[owner] if owner is not None else unowned
        slot[0], slot[1] = slot[0] + size, slot[1] + 1
    for loc in outermost(outside):
        for _, size in _files_at(artifacts, loc):
            slot = use[outside[loc]]
            slot[0], slot[1] = slot[0] + size, slot[1] + 1
    return use, unowned


def _add(into: list[int], part: list[int] | None) -> None:
    if part:
        into[0] += part[0]
        into[1] += part[1]


def _homes(session: Session, by: str) -> tuple[dict[Key, Key], dict[Key, tuple[str, bool | None, str]]]:
    """Which row each object counts in (``{object: row}``), and each row's name, pinned flag and detail."""
    runs = session.execute(sa.select(Run.id, Run.name, Run.status, Run.pinned, Run.group_id, Run.experiment_id,
                                     Run.dataset_id)).all()
    groups = session.execute(sa.select(RunGroup.id, RunGroup.label, RunGroup.pinned, RunGroup.experiment_id,
                                       RunGroup.dataset_id)).all()
    subs = session.execute(sa.select(Submission.id, Submission.run_id, Submission.group_id,
                                     Submission.dataset_id)).all()
    home: dict[Key, Key] = {}
    meta: dict[Key, tuple[str, bool | None, str]] = {}
    if by == "dataset":
        for d, name in session.execute(sa.select(Dataset.id, Dataset.name)):
            meta[("dataset", d)] = (name, None, "")
        owned: list[tuple[Key, int | None]] = [(("run", r.id), r.dataset_id) for r in runs]
        owned += [(("group", g.id), g.dataset_id) for g in groups]
        owned += [(("submission", s.id), s.dataset_id) for s in subs]
        owned += [(("ensemble", e), d) for e, d in session.execute(sa.select(Ensemble.id, Ensemble.dataset_id))]
        owned += [(("pseudo_round", p), d) for p, d in
                  session.execute(sa.select(PseudoRound.id, PseudoRound.source_dataset_id))]
        for key, dataset_id in owned:
            home[key] = ("dataset", dataset_id or 0)
        meta[("dataset", 0)] = ("(no dataset)", None, "")
        return home, meta
    for r in runs:
        target = {"run": r.id, "group": r.group_id, "experiment": r.experiment_id}[by]
        if target is not None:
            home[("run", r.id)] = (by, target)
    if by != "run":
        for g in groups:
            home[("group", g.id)] = (by, g.id if by == "group" else g.experiment_id)
    for s in subs:
        source: Key | None = ("run", s.run_id) if s.run_id is not None else None
        if s.group_id is not None:
            source = ("group", s.group_id)
        if source is not None and source in home:
            home[("submission", s.id)] = home[source]
    if by == "experiment":
        counts: dict[int, int] = defaultdict(int)
        for r in runs:
            counts[r.experiment_id] += 1
        for e, name, pinned in session.execute(sa.select(Experiment.id, Experiment.name, Experiment.pinned)):
            meta[("experiment", e)] = (name, bool(pinned), f"{counts[e]} run{'s' if counts[e] != 1 else ''}")
    elif by == "group":
        sizes: dict[int | None, int] = defaultdict(int)
        for r in runs:
            sizes[r.group_id] += 1
        for g in groups:
            meta[("group", g.id)] = (g.label, bool(g.pinned), f"{sizes[g.id]} run{'s' if sizes[g.id] != 1 else ''}")
    else:
        for r in runs:
            meta[("run", r.id)] = (r.name, bool(r.pinned), r.status.value)
    return home, meta


def disk_use(session: Session, *, by: str = "experiment", artifacts: Artifacts) -> DiskUseReport:
    """Bytes under the artifact root per run, group, experiment or dataset; the rows add up to the total.

    Args:
        by: ``run``, ``group``, ``experiment`` or ``dataset``. A submission counts with its run or
            group (by dataset: with its dataset); what has no row of that kind (ensembles,
            pseudo-label rounds, groups' own stores by run) gets one row per kind.
        artifacts: The artifact root (local folder or object store).

    Raises:
        InvalidInput: an unknown ``by``.
        ArtifactError: the object store cannot be listed.
    """
    if by not in BY:
        raise InvalidInput(f"disk use by {by!r} is not known; use one of {', '.join(BY)}")
    inv = inventory(session)
    use, unowned = _per_object(artifacts, inv)
    home, meta = _homes(session, by)
    rows: dict[Key | tuple[str, str], list[int]] = {key: [0, 0] for key in meta if key != ("dataset", 0)}
    counts: dict[str, int] = defaultdict(int)
    for key, slot in use.items():
        target: Key | tuple[str, str] = home.get(key) or ("bucket", key[0])
        if target[0] == "bucket":
            counts[key[0]] += 1
        _add(rows.setdefault(target, [0, 0]), slot)
    out = [DiskUseRow(kind=k, id=i or None, name=meta[(k, i)][0], bytes=v[0], files=v[1], pinned=meta[(k, i)][1],
                      detail=meta[(k, i)][2])
           for (k, i), v in rows.items() if k != "bucket" and isinstance(i, int)]
    out.sort(key=lambda r: (-r.bytes, r.id or 0))
    for (k, kind), v in rows.items():
        if k == "bucket" and v[1]:
            label = _BUCKETS.get(str(kind), f"{kind}s")
            out.append(DiskUseRow(kind=str(kind), id=None, name=f"{label} ({counts[str(kind)]})", bytes=v[0],
                                  files=v[1]))
    if unowned[1]:
        out.append(DiskUseRow(kind="other", id=None, name="files no object owns", bytes=unowned[0], files=unowned[1],
                              detail="weights cache, orphans (segboard doctor)"))
    return DiskUseReport(by=by, root=artifacts.root, rows=out, total_bytes=sum(r.bytes for r in out),
                         total_files=sum(r.files for r in out))


def footprints(inv: Inventory, keys: Iterable[Key]) -> list[str]:
    """Every location (stored form) the objects ``keys`` own."""
    return [loc for kind, object_id in keys for loc in inv.footprint(kind, object_id)]


def members_of(session: Session, kind: str, object_id: int) -> list[Key]:
    """A run, group or experiment and what is below it: ``[(kind, id), ...]``, itself first.

    Raises:
        InvalidInput: a kind other than run, group or experiment.
        NotFound: no such object.
    """
    models: dict[str, Any] = {"run": Run, "group": RunGroup, "experiment": Experiment}
    if kind not in models:
        raise InvalidInput(f"{kind!r} is not a run, group or experiment")
    get_or_raise(session, models[kind], object_id, kind)
    keys: list[Key] = [(kind, object_id)]
    if kind == "experiment":
        keys += [("group", g) for g in session.scalars(sa.select(RunGroup.id).where(RunGroup.experiment_id == object_id)
                                                       .order_by(RunGroup.id))]
        keys += [("run", r) for r in session.scalars(sa.select(Run.id).where(Run.experiment_id == object_id)
                                                     .order_by(Run.id))]
    elif kind == "group":
        keys += [("run", r) for r in session.scalars(sa.select(Run.id).where(Run.group_id == object_id)
                                                     .order_by(Run.id))]
    return keys


def storage_of(session: Session, *, kind: str, object_id: int, artifacts: Artifacts) -> ObjectStorage:
    """The bytes a run, group or experiment (with its runs) holds, and whether it is pinned.

    Raises:
        InvalidInput: a kind other than run, group or experiment.
        NotFound: no such object.
    """
    keys = members_of(session, kind, object_id)
    total, files = size_of(artifacts, footprints(inventory(session), keys))
    model: Any = {"run": Run, "group": RunGroup, "experiment": Experiment}[kind]
    pinned = bool(session.scalar(sa.select(model.pinned).where(model.id == object_id)))
    return ObjectStorage(kind=kind, id=object_id, bytes=total, files=files, pinned=pinned)
