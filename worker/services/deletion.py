"""Delete a run, group or experiment with its artifacts (local folder or object store) in one call.

What goes is the object, what is below it (an experiment's groups and runs, a group's runs) and,
with ``cascade=True``, every object that uses their artifacts (:mod:`worker.services.inventory`'s
references: ensembles with a member among them, pseudo-label rounds taught by them, submissions
made from them, runs trained on a deleted round), transitively. Without ``cascade`` such
dependants refuse the delete, listed by name. It is refused too, whatever ``cascade`` says, while
something that goes is queued or running (a run, or the job making an ensemble, round or
submission), while a queued or running job reads one of them, or while one is pinned.

The rows go in the caller's transaction (one audit event); the files after its commit
(:mod:`worker.services._removal`), so a rollback keeps them and a crash in between leaves only
folders no row names, which ``segboard doctor`` reports. :func:`plan_delete` says all of this
without changing anything, for a confirmation.

Example:
    >>> plan = plan_delete(session, kind="experiment", object_id=3, artifacts=arts)  # doctest: +SKIP
    >>> [d.name for d in plan.dependants], plan.bytes  # doctest: +SKIP
    (['fpn+unet'], 412000000)
    >>> delete(session, actor=me, kind="experiment", object_id=3, cascade=True, artifacts=arts)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.artifacts import Artifacts
from worker.db.models import Dataset, Ensemble, Experiment, PseudoRound, Run, RunGroup, RunStatus, Submission
from worker.errors import Conflict
from worker.schemas import DeletePlan, Dependant, StoredObject
from worker.services import access
from worker.services._common import check_actor
from worker.services._removal import remove_after_commit
from worker.services.audit import record_event
from worker.services.disk import footprints, members_of, outermost, resolved, size_of
from worker.services.inventory import Inventory, folder_of, inventory

__all__ = ["plan_delete", "delete", "MODELS"]

Key = tuple[str, int]

MODELS: dict[str, Any] = {"run": Run, "group": RunGroup, "experiment": Experiment, "ensemble": Ensemble,
                          "pseudo_round": PseudoRound, "submission": Submission}
_ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)
_LABEL = {"pseudo_round": "pseudo-label round"}
# a reference's ``why`` as the referrer's relation to what it uses: "ensemble 2 combines run 3"
_VERBS = {"member": "combines", "teacher": "taught by", "source": "made from", "parent": "follows",
          "trained on": "trained on", "input": "reads"}


def _what(key: Key) -> str:
    return f"{_LABEL.get(key[0], key[0])} {key[1]}"


def _row(session: Session, key: Key) -> Any:
    return session.get(MODELS[key[0]], key[1])


def _name(row: Any) -> str:
    for attr in ("name", "label"):
        if isinstance(getattr(row, attr, None), str):
            return str(getattr(row, attr))
    return f"#{row.id}"


def _owner(row: Any) -> int | None:
    return row.owner_id if hasattr(row, "owner_id") else row.created_by


def _collect(session: Session, inv: Inventory, kind: str, object_id: int,
             cascade: bool) -> tuple[dict[Key, str], list[Dependant]]:
    """What goes (``{key: why}``, the asked object first) and the dependants outside it."""
    going: dict[Key, str] = {}
    for i, key in enumerate(members_of(session, kind, object_id)):
        going[key] = "asked" if i == 0 else f"in {kind} {object_id}"
    dependants: dict[Key, Dependant] = {}
    todo = list(going)
    while todo:
        key = todo.pop(0)
        for ref in inv.references_to(*key):
            other = (ref.referrer_kind, ref.referrer_id)
            if ref.referrer_kind == "job" or other in going or other in dependants:
                continue
            row = _row(session, other)
            if row is None:
                continue
            why = _VERBS.get(ref.why, ref.why)
            dependants[other] = Dependant(kind=other[0], id=other[1], name=_name(row), uses=_what(key), why=why)
            if cascade:
                going[other] = f"{why} {_what(key)}"
                todo.append(other)
    return going, list(dependants.values())


def _blockers(session: Session, inv: Inventory, going: dict[Key, str]) -> list[str]:
    out: list[str] = []
    rows = {key: _row(session, key) for key in going}
    for key, row in rows.items():
        status = getattr(row, "status", None)
        if status in _ACTIVE:
            fix = ("cancel it first (segboard cancel) and wait until it stops" if key[0] == "run"
                   else "wait until its job ends or cancel the job")
            out.append(f"{_what(key)} is {status.value}: {fix}")
    groups_going = {k for k in going if k[0] == "group"}
    for key, row in rows.items():
        readers = inv.references_to(*key)
        if key[0] == "run" and row.group_id is not None and ("group", row.group_id) not in groups_going:
            readers += inv.references_to("group", row.group_id)  # predicting a group reads its runs
        for ref in readers:
            if ref.referrer_kind == "job":
                out.append(f"job {ref.referrer_id} (queued or running) reads {_what(key)}: wait until it ends or "
                           "cancel it")
    for key, row in rows.items():
        for k in _pins(session, key, row):
            if k != key and k in going:
                continue  # said once, for itself
            out.append(f"{_what(key)} is pinned" + ("" if k == key else f" (through {_what(k)})")
                       + f": unpin {_what(k)} first")
    return list(dict.fromkeys(out))


def _pins(session: Session, key: Key, row: Any) -> list[Key]:
    """The pinned objects among ``key`` and its group and experiment."""
    out: list[Key] = []
    if getattr(row, "pinned", False):
        out.append(key)
    group_id = row.group_id if key[0] == "run" else None
    exp_id = row.experiment_id if key[0] in ("run", "group") else None
    if group_id is not None and session.scalar(sa.select(RunGroup.pinned).where(RunGroup.id == group_id)):
        out.append(("group", group_id))
    if exp_id is not None and session.scalar(sa.select(Experiment.pinned).where(Experiment.id == exp_id)):
        out.append(("experiment", exp_id))
    return out


def _locations(artifacts: Artifacts, inv: Inventory, going: dict[Key, str]) -> list[str]:
    """The outermost resolved locations of what goes, minus any shared with an object that stays."""
    ours = outermost(resolved(artifacts, x) for x in footprints(inv, going))
    kept = {resolved(artifacts, a.location) for a in inv.artifacts if (a.owner_kind, a.owner_id) not in going}
    kept |= {resolved(artifacts, folder_of(kind, i)) for kind, ids in inv.ids.items() for i in ids
             if (kind, i) not in going}

    def shared(loc: str) -> bool:
        return any(k == loc or k.startswith(loc + "/") or loc.startswith(k + "/") for k in kept)

    return [loc for loc in ours if not shared(loc)]


def plan_delete(session: Session, *, kind: str, object_id: int, cascade: bool = False,
                artifacts: Artifacts) -> DeletePlan:
    """What deleting a run, group or experiment removes, who depends on it, and what stands in the way.

    Reads only. With ``cascade`` the dependants (and theirs) are part of what goes.

    Raises:
        InvalidInput: a kind other than run, group or experiment.
        NotFound: no such object.
        ArtifactError: the object store cannot be listed.
    """
    inv = inventory(session)
    going, dependants = _collect(session, inv, kind, object_id, cascade)
    locations = _locations(artifacts, inv, going)
    sizes = {loc: size_of(artifacts, [loc])[0] for loc in locations}
    objects = []
    for key, why in going.items():
        row = _row(session, key)
        own = {resolved(artifacts, f) for f in inv.footprint(*key)}
        objects.append(StoredObject(kind=key[0], id=key[1], name=_name(row), why=why,
                                    bytes=sum(size for loc, size in sizes.items() if loc in own),
                                    pinned=bool(getattr(row, "pinned", False))))
    total = sum(sizes.values())
    return DeletePlan(kind=kind, id=object_id, name=objects[0].name, cascade=cascade, objects=objects,
                      dependants=dependants, blockers=_blockers(session, inv, going), locations=locations,
                      bytes=total)


def delete(session: Session, *, actor: int | None, kind: str, object_id: int, cascade: bool = False,
           artifacts: Artifacts) -> DeletePlan:
    """Delete a run, group or experiment with everything below it, its artifacts and (``cascade``) its dependants.

    The caller commits; the files are removed right after its commit (see the module docstring).

    Returns:
        The plan that was carried out.

    Raises:
        PermissionDenied: the actor is a viewer, or neither an admin nor the owner of everything that goes.
        Conflict: dependants without ``cascade`` (listed), or a blocker (queued/running, read by a job, pinned).
        NotFound: no such object.
        InvalidInput: a kind other than run, group or experiment.
    """
    check_actor(session, actor)
    members_of(session, kind, object_id)  # the kind and the id, before anything else
    target = _row(session, (kind, object_id))
    access.require_owner(session, actor, _owner(target), f"delete {_what((kind, object_id))}")
    plan = plan_delete(session, kind=kind, object_id=object_id, cascade=cascade, artifacts=artifacts)
    for obj in plan.objects[1:]:
        access.require_owner(session, actor, _owner(_row(session, (obj.kind, obj.id))),
                             f"delete {_what((obj.kind, obj.id))} ({obj.why})")
    what = f"{_what((kind, object_id))} {plan.name!r}"
    if plan.blockers:
        raise Conflict(f"cannot delete {what}: " + "; ".join(plan.blockers))
    if plan.dependants and not cascade:
        listed = ", ".join(f"{_what((d.kind, d.id))} {d.name!r} ({d.why} {d.uses})" for d in plan.dependants)
        raise Conflict(f"cannot delete {what}: {listed} use its artifacts; delete them first, or delete with "
                       "cascade to remove them too")
    ids: dict[str, list[int]] = {}
    for obj in plan.objects:
        ids.setdefault(obj.kind, []).append(obj.id)
    datasets = [d for d in session.scalars(sa.select(PseudoRound.dataset_id)
                                           .where(PseudoRound.id.in_(ids.get("pseudo_round", []))))
                if d is not None]
    session.flush()
    for obj in plan.objects:  # the rows go behind the ORM's back: forget the loaded ones
        row = _row(session, (obj.kind, obj.id))
        if row is not None:
            session.expunge(row)
    # submissions first (their rows cascade from runs, groups and ensembles), then what they came from
    for k in ("submission", "run", "pseudo_round", "ensemble", "group", "experiment"):
        if ids.get(k):
            model = MODELS[k]
            session.execute(sa.delete(model).where(model.id.in_(ids[k])).execution_options(synchronize_session=False))
    if datasets:  # a round's pseudo-labelled dataset is its folder, which goes
        session.execute(sa.delete(Dataset).where(Dataset.id.in_(datasets)).execution_options(
            synchronize_session=False))
    session.expire_all()
    record_event(session, actor=actor, action=f"{kind}.delete", object_kind=kind, object_id=object_id,
                 detail={"name": plan.name, "cascade": cascade, "objects": ids, "datasets": datasets,
                         "bytes": plan.bytes, "locations": plan.locations})
    remove_after_commit(session, artifacts, plan.locations)
    return plan
