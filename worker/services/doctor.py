"""``segboard doctor``: check the database against the artifact root, and repair what can be repaired.

Findings (:class:`Finding`, by :class:`Problem`):

- ``stale_lease``: a run or job marked running whose lease expired (its worker died). Fix: the
  reaper's settling (:func:`worker.services.lifecycle.reap`): requeued, cancelled or failed.
- ``unknown``: a folder ``<runs|groups|ensembles|pseudo|submissions>/<id>`` whose object the
  database does not have (deleted, or written by a crashed job). Fix: moved under
  ``<root>/.doctor-orphans/<time>/`` (delete that folder once you are sure).
- ``missing``: a location the database lists that is not on disk. Not fixable here: queue the
  prediction (or training) again.
- ``corrupt``: a probability store whose entries fail their sha256 checksums, or whose manifest
  cannot be read; a checkpoint folder without its weights. Not fixable here: re-create it.
- ``temp_leftover``: ``.<name>.tmp-<pid>-*`` / ``.<name>.old-<pid>`` of a writer that is no longer
  running (``segcore.io``'s atomic writes). Fix: ``segcore.io.recover_dir`` (a set-aside folder
  whose original is missing is put back), else removed.

With a remote artifact root (``s3://...``) the same checks run on the bucket's listing, except the
checksums (that would download every store): ``unknown`` folders are reported (not moved), ``missing``
locations too, and ``temp_leftover`` is any temp or set-aside name that reached the bucket (uploads of
a replaced or interrupted write); ``--fix`` deletes those remote leftovers while no run or job is running.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import os
import shutil
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from segcore.io import LEFTOVER, recover_dir, writer_alive
from worker.artifacts import Artifacts, is_url
from worker.db.base import utcnow
from worker.db.models import Job, Run, RunStatus
from worker.services import lifecycle
from worker.services.inventory import FOLDERS, ArtifactKind, inventory

__all__ = ["Problem", "Finding", "DoctorReport", "examine", "repair"]

ORPHANS = ".doctor-orphans"


class Problem(str, enum.Enum):
    """What is wrong."""

    STALE_LEASE = "stale_lease"
    UNKNOWN = "unknown"
    MISSING = "missing"
    CORRUPT = "corrupt"
    TEMP_LEFTOVER = "temp_leftover"

    @property
    def fixable(self) -> bool:
        """Whether ``doctor --fix`` repairs it."""
        return self in (Problem.STALE_LEASE, Problem.UNKNOWN, Problem.TEMP_LEFTOVER)


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem: what, where, and a sentence on it."""

    problem: Problem
    subject: str  # "run 3", "job 4", or a path under the artifact root
    detail: str


@dataclasses.dataclass(frozen=True)
class DoctorReport:
    """What :func:`examine` found (and, after :func:`repair`, what was fixed)."""

    findings: tuple[Finding, ...]
    fixed: tuple[Finding, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        """Nothing left to report."""
        return not self.findings


def _stale(session: Session, now: dt.datetime) -> list[Finding]:
    out = []
    for kind, model in (("run", Run), ("job", Job)):
        for object_id, worker, expires in session.execute(
            sa.select(model.id, model.worker_name, model.lease_expires_at)
            .where(model.status == RunStatus.RUNNING, sa.or_(model.lease_expires_at.is_(None),
                                                             model.lease_expires_at < now))
            .order_by(model.id)
        ):
            when = expires.isoformat(timespec="seconds") if expires else "never set"
            out.append(Finding(Problem.STALE_LEASE, f"{kind} {object_id}",
                               f"marked running on {worker} but its lease expired ({when})"))
    return out


def _check(kind: ArtifactKind, path: Path) -> str | None:
    """Why the artifact at ``path`` is unusable, or None."""
    if kind is ArtifactKind.STORE and path.is_dir():
        from segcore.errors import StoreError
        from segcore.inference.store import ProbabilityStore

        try:
            bad = ProbabilityStore.open(path).verify()
        except (StoreError, OSError, ValueError) as exc:
            return f"the store cannot be opened: {exc}"
        if bad:
            return f"{len(bad)} entr{'y' if len(bad) == 1 else 'ies'} fail their checksum (e.g. {bad[0]})"
    if kind is ArtifactKind.CHECKPOINT and path.is_dir() and not (path / "model.safetensors").is_file():
        return "the checkpoint folder has no model.safetensors"
    return None


def _files(session: Session, root: Path) -> list[Finding]:
    inv = inventory(session)
    out: list[Finding] = []
    for art in inv.artifacts:
        if "://" in art.location and not art.location.startswith("file://"):
            continue
        path = Path(art.location.removeprefix("file://"))
        where = f"{art.owner_kind} {art.owner_id} {art.role}"
        if not path.exists():
            out.append(Finding(Problem.MISSING, str(path), f"{where} is listed in the database but not on disk"))
        elif (why := _check(art.kind, path)) is not None:
            out.append(Finding(Problem.CORRUPT, str(path), f"{where}: {why}"))
    for kind, folder in FOLDERS.items():
        for child in sorted((root / folder).glob("*")) if (root / folder).is_dir() else []:
            if child.name.isdigit() and not inv.known(kind, int(child.name)):
                out.append(Finding(Problem.UNKNOWN, str(child),
                                   f"{kind} {child.name} is not in the database; its files are unused"))
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root and ORPHANS in dirnames:
            dirnames.remove(ORPHANS)
        for name in [*dirnames, *filenames]:
            m = LEFTOVER.fullmatch(name)
            if m and not writer_alive(int(m["pid"])):
                out.append(Finding(Problem.TEMP_LEFTOVER, str(Path(dirpath) / name),
                                   f"left by process {m['pid']}, which is no longer running"))
    return out


def _remote(session: Session, arts: Artifacts) -> list[Finding]:
    inv = inventory(session)
    listing = [rel for rel, _ in arts.files(arts.root)]
    present = {"/".join(rel.split("/")[:i]) for rel in listing for i in range(1, rel.count("/") + 2)}
    out: list[Finding] = []
    for art in inv.artifacts:
        loc = arts.resolve(art.location)
        if not is_url(loc) or not loc.startswith(arts.root + "/"):
            continue
        if loc[len(arts.root) + 1:].rstrip("/") not in present:
            out.append(Finding(Problem.MISSING, loc, f"{art.owner_kind} {art.owner_id} {art.role} is listed in "
                                                     "the database but not in the bucket"))
    for kind, folder in FOLDERS.items():
        ids = {rel.split("/")[1] for rel in listing if rel.startswith(folder + "/") and rel.count("/") >= 2}
        for name in sorted(i for i in ids if i.isdigit() and not inv.known(kind, int(i))):
            out.append(Finding(Problem.UNKNOWN, f"{arts.root}/{folder}/{name}",
                               f"{kind} {name} is not in the database; its files are unused"))
    for rel in listing:
        if any(LEFTOVER.fullmatch(part) for part in rel.split("/")):
            out.append(Finding(Problem.TEMP_LEFTOVER, f"{arts.root}/{rel}",
                               "a temp or set-aside file of an interrupted or replaced write was uploaded"))
    return out


def examine(session: Session, *, artifact_root: str, now: dt.datetime | None = None,
            artifacts: Artifacts | None = None) -> DoctorReport:
    """Check the database against the artifact root; reads only.

    Args:
        artifacts: The artifact root with its storage options; needed for a remote root.
    """
    now = now or utcnow()
    findings = _stale(session, now)
    skipped: tuple[str, ...] = ()
    if is_url(artifact_root) and not artifact_root.startswith("file://"):
        if artifacts is None:
            skipped = (f"file checks: the artifact root {artifact_root} is remote and no storage was given",)
        else:
            findings += _remote(session, artifacts)
            skipped = ("checksums: not verified on a remote root (it would download every store)",)
    else:
        findings += _files(session, Path(artifact_root.removeprefix("file://")))
    return DoctorReport(findings=tuple(findings), skipped=skipped)


def repair(session: Session, *, artifact_root: str, now: dt.datetime | None = None,
           artifacts: Artifacts | None = None) -> DoctorReport:
    """Fix what :func:`examine` finds and can fix; returns what is left and what was fixed.

    The caller commits (the lease fixes); the file fixes are done at once. Runs and jobs that
    are requeued are published by the reaper's next pass (``segboard up`` or ``segboard reaper``).
    """
    now = now or utcnow()
    report = examine(session, artifact_root=artifact_root, now=now, artifacts=artifacts)
    fixed: list[Finding] = []
    if any(f.problem is Problem.STALE_LEASE for f in report.findings):
        lifecycle.reap(session, now=now)
        lifecycle.reap_jobs(session, now=now)
        session.flush()
        fixed += [f for f in report.findings if f.problem is Problem.STALE_LEASE]
    if artifacts is not None and not artifacts.is_local:
        fixed += _repair_remote(session, artifacts, report)
        left = examine(session, artifact_root=artifact_root, now=now, artifacts=artifacts)
        return DoctorReport(findings=left.findings, fixed=tuple(fixed), skipped=left.skipped)
    root = Path(artifact_root.removeprefix("file://"))
    stamp = now.strftime("%Y%m%dT%H%M%S")
    for f in report.findings:
        path = Path(f.subject)
        if f.problem is Problem.UNKNOWN:
            dest = root / ORPHANS / stamp / path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), str(dest))
            fixed.append(dataclasses.replace(f, detail=f"{f.detail}; moved to {dest}"))
        elif f.problem is Problem.TEMP_LEFTOVER and path.exists():
            if path.is_dir():
                m = LEFTOVER.fullmatch(path.name)
                assert m is not None
                recover_dir(path.parent / m["name"])
            else:
                path.unlink(missing_ok=True)
            if not path.exists():
                fixed.append(f)
    left = examine(session, artifact_root=artifact_root, now=now, artifacts=artifacts)
    return DoctorReport(findings=left.findings, fixed=tuple(fixed), skipped=left.skipped)


def _repair_remote(session: Session, arts: Artifacts, report: DoctorReport) -> list[Finding]:
    """Delete uploaded temp leftovers, but only while nothing runs (a running write may own one)."""
    busy = sum(session.scalar(sa.select(sa.func.count()).select_from(m).where(m.status == RunStatus.RUNNING)) or 0
               for m in (Run, Job))
    if busy:
        return []
    fixed = []
    for f in report.findings:
        if f.problem is Problem.TEMP_LEFTOVER:
            arts.remove(f.subject)
            fixed.append(f)
    return fixed
