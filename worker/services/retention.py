"""The retention policy (``segboard gc``) and pins.

The policy lives in the settings (``retention_*``, docs/storage.md):

- ``retention_drop_last_checkpoint``: a succeeded run's ``checkpoints/last`` (the resume point)
  goes; its best checkpoint, which predictions, evaluations and pseudo-labels use, always stays;
- ``retention_test_store_days``: test probability stores of runs and groups older than that many
  days go (the row forgets the location; a ``predict`` job makes the store again from the best
  checkpoint). None keeps them.

Nothing in use is removed: not the files of a queued or running run, not what a queued or
running job reads (an ensemble job's members, a pseudo-label or submission job's source, with
what they use in turn), not a test store an ensemble, pseudo-label round or submission was made
from, not a best checkpoint, not a validation or out-of-fold store. Pinned runs, groups and
experiments (and the runs of a pinned group or experiment) are left alone.

:func:`plan_gc` lists what would go and the bytes it frees (the dry run); :func:`run_gc` does
it in the caller's transaction (files after the commit) with one audit event. Both compute the
same list from the same state.

Example:
    >>> policy = RetentionPolicy.from_settings(settings)  # doctest: +SKIP
    >>> plan = plan_gc(session, artifacts=arts, policy=policy)  # doctest: +SKIP
    >>> [(i.kind, i.id, i.what) for i in plan.items], plan.bytes  # doctest: +SKIP
    ([('run', 3, 'last_checkpoint')], 57000000)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.artifacts import Artifacts, is_url
from worker.db.base import utcnow
from worker.db.models import Experiment, Run, RunGroup, RunStatus
from worker.errors import InvalidInput
from worker.schemas import GcItem, GcPlan
from worker.services import access
from worker.services._common import check_actor, get_or_raise
from worker.services._removal import remove_after_commit
from worker.services.audit import record_event
from worker.services.disk import format_bytes, resolved, size_of
from worker.services.inventory import Inventory, inventory

__all__ = ["RetentionPolicy", "plan_gc", "run_gc", "set_pinned", "in_use"]

Key = tuple[str, int]
_PINNABLE: dict[str, Any] = {"run": Run, "group": RunGroup, "experiment": Experiment}
_USERS = ("ensemble", "pseudo_round", "submission")


@dataclasses.dataclass(frozen=True)
class RetentionPolicy:
    """What ``segboard gc`` removes (see the module docstring)."""

    drop_last_checkpoint: bool = True
    test_store_days: int | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> RetentionPolicy:
        """The policy of the ``retention_*`` settings."""
        return cls(drop_last_checkpoint=bool(settings.retention_drop_last_checkpoint),
                   test_store_days=settings.retention_test_store_days)


def in_use(session: Session, inv: Inventory) -> dict[Key, str]:
    """Objects whose files must stay: queued or running runs, and what queued or running jobs read.

    Returns:
        ``{(kind, id): why}``; a job's target counts with everything it references in turn (an
        ensemble's members, a round's teacher, a submission's source) and a group with its runs.
    """
    out: dict[Key, str] = {}
    for run_id, status in session.execute(sa.select(Run.id, Run.status).where(
            Run.status.in_((RunStatus.QUEUED, RunStatus.RUNNING)))):
        out[("run", run_id)] = f"it is {status.value}"
    todo = [((r.target_kind, r.target_id), f"job {r.referrer_id} reads it") for r in inv.references
            if r.referrer_kind == "job"]
    runs_of: dict[int, list[int]] = {}
    for run_id, group_id in session.execute(sa.select(Run.id, Run.group_id).where(Run.group_id.is_not(None))):
        runs_of.setdefault(group_id, []).append(run_id)
    by_referrer: dict[Key, list[Key]] = {}
    for r in inv.references:
        by_referrer.setdefault((r.referrer_kind, r.referrer_id), []).append((r.target_kind, r.target_id))
    while todo:
        key, why = todo.pop()
        if key in out:
            continue
        out[key] = why
        nxt = list(by_referrer.get(key, []))
        if key[0] == "group":
            nxt += [("run", i) for i in runs_of.get(key[1], [])]
        todo += [(k, why) for k in nxt]
    return out


def _pinned(session: Session) -> tuple[set[int], set[int]]:
    """The ids of pinned runs and pinned groups, each with what a pinned group or experiment covers."""
    exps = set(session.scalars(sa.select(Experiment.id).where(Experiment.pinned.is_(True))))
    groups = set(session.scalars(sa.select(RunGroup.id).where(
        sa.or_(RunGroup.pinned.is_(True), RunGroup.experiment_id.in_(exps)))))
    runs = set(session.scalars(sa.select(Run.id).where(
        sa.or_(Run.pinned.is_(True), Run.group_id.in_(groups), Run.experiment_id.in_(exps)))))
    return runs, groups


def _modified(artifacts: Artifacts, location: str) -> dt.datetime | None:
    """When the store at ``location`` was last written (its manifest), or None when nothing is there."""
    text = resolved(artifacts, location)
    if not is_url(text):
        path = Path(text)
        target = path / "manifest.json" if (path / "manifest.json").is_file() else path
        if not target.exists():
            return None
        return dt.datetime.fromtimestamp(target.stat().st_mtime, dt.timezone.utc)
    import fsspec

    fs, path_ = fsspec.core.url_to_fs(text, **artifacts.storage_options)
    try:
        info = fs.info(f"{path_.rstrip('/')}/manifest.json")
    except (FileNotFoundError, OSError):
        return None
    for key in ("LastModified", "last_modified", "mtime", "created"):
        value = info.get(key)
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        if isinstance(value, (int, float)):
            return dt.datetime.fromtimestamp(value, dt.timezone.utc)
    return None


def _last_checkpoints(session: Session, artifacts: Artifacts, busy: dict[Key, str], pinned: set[int],
                      items: list[GcItem], kept: list[str]) -> None:
    rows = session.execute(sa.select(Run.id, Run.artifact_dir, Run.checkpoint_dir).where(
        Run.status == RunStatus.SUCCEEDED, Run.artifact_dir.is_not(None), Run.checkpoint_dir.is_not(None))
        .order_by(Run.id))
    for run_id, folder, best in rows:
        last = resolved(artifacts, f"{str(folder).rstrip('/')}/checkpoints/last")
        best_at = resolved(artifacts, str(best))
        if best_at == last or best_at.startswith(last + "/"):
            continue  # the run's recorded checkpoint is the last one: it is the one that is used
        size, files = size_of(artifacts, [last])
        if not files:
            continue
        if run_id in pinned:
            kept.append(f"run {run_id} last checkpoint ({format_bytes(size)}): pinned")
        elif ("run", run_id) in busy:
            kept.append(f"run {run_id} last checkpoint ({format_bytes(size)}): {busy[('run', run_id)]}")
        else:
            items.append(GcItem(kind="run", id=run_id, what="last_checkpoint", location=last, bytes=size,
                                reason="the run succeeded; its best checkpoint stays"))


def _test_stores(session: Session, artifacts: Artifacts, inv: Inventory, busy: dict[Key, str],
                 pinned: tuple[set[int], set[int]], days: int, now: dt.datetime,
                 items: list[GcItem], kept: list[str]) -> None:
    used = {(r.target_kind, r.target_id): f"{r.referrer_kind.replace('_', ' ')} {r.referrer_id} uses it"
            for r in inv.references if r.referrer_kind in _USERS}
    stores = [("run", i, loc) for i, loc in session.execute(
        sa.select(Run.id, Run.test_store).where(Run.test_store.is_not(None)).order_by(Run.id))]
    stores += [("group", i, loc) for i, loc in session.execute(
        sa.select(RunGroup.id, RunGroup.test_store).where(RunGroup.test_store.is_not(None)).order_by(RunGroup.id))]
    limit = dt.timedelta(days=days)
    for kind, object_id, location in stores:
        written = _modified(artifacts, location)
        if written is None or now - written <= limit:
            continue
        key = (kind, object_id)
        size, _ = size_of(artifacts, [location])
        age = (now - written).days
        what = f"{kind} {object_id} test store ({format_bytes(size)}, {age} days old)"
        if object_id in (pinned[0] if kind == "run" else pinned[1]):
            kept.append(f"{what}: pinned")
        elif key in busy or key in used:
            kept.append(f"{what}: {busy.get(key) or used[key]}")
        else:
            items.append(GcItem(kind=kind, id=object_id, what="test_store", location=resolved(artifacts, location),
                                bytes=size, reason=f"written {age} days ago (the limit is {days}); predict again "
                                                   "from the best checkpoint when needed"))


def plan_gc(session: Session, *, artifacts: Artifacts, policy: RetentionPolicy,
            now: dt.datetime | None = None) -> GcPlan:
    """What the retention policy removes now, and the bytes it frees (the dry run: reads only).

    Args:
        artifacts: The artifact root (local folder or object store).
        policy: What to remove (:meth:`RetentionPolicy.from_settings`).
        now: The time test-store ages are measured at (UTC; default now).

    Raises:
        ArtifactError: the object store cannot be listed.
    """
    now = now or utcnow()
    inv = inventory(session)
    busy = in_use(session, inv)
    pinned = _pinned(session)
    items: list[GcItem] = []
    kept: list[str] = []
    if policy.drop_last_checkpoint:
        _last_checkpoints(session, artifacts, busy, pinned[0], items, kept)
    if policy.test_store_days is not None:
        _test_stores(session, artifacts, inv, busy, pinned, policy.test_store_days, now, items, kept)
    return GcPlan(items=items, bytes=sum(i.bytes for i in items), kept=kept)


def run_gc(session: Session, *, actor: int | None, artifacts: Artifacts, policy: RetentionPolicy,
           now: dt.datetime | None = None) -> GcPlan:
    """Apply the retention policy: forget the removed test stores' locations, remove the files after the commit.

    Returns:
        What :func:`plan_gc` lists for the same state, with ``applied=True``.

    Raises:
        PermissionDenied: the actor is not an admin (the policy spans every member's runs).
    """
    check_actor(session, actor)
    access.require_admin(session, actor, "apply the retention policy (segboard gc)")
    plan = plan_gc(session, artifacts=artifacts, policy=policy, now=now)
    for item in plan.items:
        if item.what == "test_store":
            model = Run if item.kind == "run" else RunGroup
            row = session.get(model, item.id)
            if row is not None and row.test_store and resolved(artifacts, row.test_store) == item.location:
                row.test_store = None
    session.flush()
    record_event(session, actor=actor, action="storage.gc", object_kind="storage", object_id=None,
                 detail={"bytes": plan.bytes, "items": [i.model_dump(mode="json") for i in plan.items],
                         "policy": dataclasses.asdict(policy)})
    remove_after_commit(session, artifacts, [i.location for i in plan.items])
    return plan.model_copy(update={"applied": True})


def set_pinned(session: Session, *, actor: int | None, kind: str, object_id: int, pinned: bool) -> bool:
    """Pin (or unpin) a run, group or experiment: no retention policy touches a pinned one's files.

    A pinned group or experiment covers its runs. An explicit delete is refused while pinned.

    Returns:
        The new value.

    Raises:
        InvalidInput: a kind other than run, group or experiment.
        NotFound: no such object.
        PermissionDenied: a viewer, or a member who does not own it.
    """
    check_actor(session, actor)
    if kind not in _PINNABLE:
        raise InvalidInput(f"only runs, groups and experiments can be pinned, not {kind!r}")
    row = get_or_raise(session, _PINNABLE[kind], object_id, kind)
    access.require_owner(session, actor, row.owner_id, f"{'pin' if pinned else 'unpin'} {kind} {object_id}")
    if bool(row.pinned) != bool(pinned):
        row.pinned = bool(pinned)
        session.flush()
        record_event(session, actor=actor, action=f"{kind}.{'pin' if pinned else 'unpin'}", object_kind=kind,
                     object_id=object_id, detail={})
    return bool(row.pinned)
