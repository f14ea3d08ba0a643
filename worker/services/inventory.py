"""Which artifact files each object owns, and which objects reference each other's artifacts.

The one answer to "what is on disk for what": ``segboard doctor`` uses it, and disk use, delete
and retention are to use it too. Under the artifact root, every object writes into its own
folder, ``<kind folder>/<id>`` (:data:`FOLDERS`); the database also records the locations of
what it wrote (checkpoints, probability stores, the submission file), which this module lists as
the object's artifacts.

Example:
    >>> inv = inventory(session)
    >>> [a.role for a in inv.owned_by("run", 3)]
    ['folder', 'checkpoint', 'val_store']
    >>> [(r.referrer_kind, r.referrer_id, r.why) for r in inv.references_to("run", 3)]
    [('ensemble', 2, 'member'), ('submission', 5, 'source'), ('job', 9, 'input')]
    >>> inv.footprint("run", 3)   # its folder (relative to the artifact root), then what it lists
    ['runs/3', '/data/artifacts/runs/3', '/data/artifacts/runs/3/checkpoints/best', ...]

Queued and running jobs reference the objects their target names (``why="input"``), so nothing
a job is about to read counts as unused.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.models import Ensemble, Job, PseudoRound, Run, RunGroup, RunStatus, Submission

__all__ = ["ArtifactKind", "FOLDERS", "Artifact", "Reference", "Inventory", "inventory", "folder_of"]

# object kind -> its folder under the artifact root (``<folder>/<id>``)
FOLDERS: dict[str, str] = {
    "run": "runs",
    "group": "groups",
    "ensemble": "ensembles",
    "pseudo_round": "pseudo",
    "submission": "submissions",
}
# a job's target key -> the kind of object it names
_JOB_TARGETS = {"run_id": "run", "run_ids": "run", "group_ids": "group", "ensemble_id": "ensemble",
                "round_id": "pseudo_round", "submission_id": "submission"}


def folder_of(kind: str, object_id: int) -> str:
    """The object's own folder, relative to the artifact root: ``runs/3``."""
    return f"{FOLDERS[kind]}/{object_id}"


class ArtifactKind(str, enum.Enum):
    """What a location holds, which says how to check it."""

    FOLDER = "folder"  # the object's own folder
    CHECKPOINT = "checkpoint"  # a segcore checkpoint folder (config, safetensors, metrics, provenance)
    STORE = "store"  # a probability store (manifest.json with a sha256 per entry)
    FILE = "file"


@dataclasses.dataclass(frozen=True)
class Artifact:
    """A location an object owns: ``role`` names the column (or ``folder``) it comes from."""

    owner_kind: str
    owner_id: int
    role: str
    kind: ArtifactKind
    location: str


@dataclasses.dataclass(frozen=True)
class Reference:
    """``referrer`` uses the artifacts of ``target``: deleting the target breaks the referrer."""

    referrer_kind: str
    referrer_id: int
    target_kind: str
    target_id: int
    why: str  # "member", "teacher", "source", "parent"


@dataclasses.dataclass(frozen=True)
class Inventory:
    """Every object's artifacts and every reference between objects."""

    artifacts: tuple[Artifact, ...]
    references: tuple[Reference, ...]
    ids: dict[str, frozenset[int]]  # object kind -> the ids the database has

    def owned_by(self, kind: str, object_id: int) -> list[Artifact]:
        """The artifacts of one object."""
        return [a for a in self.artifacts if (a.owner_kind, a.owner_id) == (kind, object_id)]

    def references_to(self, kind: str, object_id: int) -> list[Reference]:
        """Who uses the artifacts of one object."""
        return [r for r in self.references if (r.target_kind, r.target_id) == (kind, object_id)]

    def known(self, kind: str, object_id: int) -> bool:
        """Whether the database has this object."""
        return object_id in self.ids.get(kind, frozenset())

    def footprint(self, kind: str, object_id: int) -> list[str]:
        """Where an object's files are: its own folder (relative to the artifact root), then every location it lists.

        An experiment has neither: its files are its groups' and runs'.
        """
        own = [folder_of(kind, object_id)] if kind in FOLDERS else []
        return [*own, *(a.location for a in self.owned_by(kind, object_id))]

    def locations(self) -> set[str]:
        """Every location the database lists."""
        return {a.location for a in self.artifacts}


def _runs(session: Session) -> Iterator[Artifact]:
    for rid, folder, ckpt, val, test in session.execute(
        sa.select(Run.id, Run.artifact_dir, Run.checkpoint_dir, Run.val_store, Run.test_store).order_by(Run.id)
    ):
        for role, kind, loc in (("folder", ArtifactKind.FOLDER, folder), ("checkpoint", ArtifactKind.CHECKPOINT, ckpt),
                                ("val_store", ArtifactKind.STORE, val), ("test_store", ArtifactKind.STORE, test)):
            if loc:
                yield Artifact("run", rid, role, kind, loc)


def inventory(session: Session) -> Inventory:
    """Read every object's artifact locations and references from the database (one query per table)."""
    artifacts = list(_runs(session))
    references: list[Reference] = []
    ids: dict[str, frozenset[int]] = {"run": frozenset(session.scalars(sa.select(Run.id)))}
    for gid, oof, test in session.execute(sa.select(RunGroup.id, RunGroup.oof_store, RunGroup.test_store)):
        artifacts += [Artifact("group", gid, role, ArtifactKind.STORE, loc)
                      for role, loc in (("oof_store", oof), ("test_store", test)) if loc]
    ids["group"] = frozenset(session.scalars(sa.select(RunGroup.id)))
    for eid, test, members in session.execute(sa.select(Ensemble.id, Ensemble.test_store, Ensemble.members)):
        if test:
            artifacts.append(Artifact("ensemble", eid, "test_store", ArtifactKind.STORE, test))
        references += [Reference("ensemble", eid, str(m["kind"]), int(m["id"]), "member") for m in members or []]
    ids["ensemble"] = frozenset(session.scalars(sa.select(Ensemble.id)))
    for pid, teacher_kind, teacher_id, parent in session.execute(
        sa.select(PseudoRound.id, PseudoRound.teacher_kind, PseudoRound.teacher_id, PseudoRound.parent_round_id)
    ):
        references.append(Reference("pseudo_round", pid, teacher_kind.value, teacher_id, "teacher"))
        if parent is not None:
            references.append(Reference("pseudo_round", pid, "pseudo_round", parent, "parent"))
    ids["pseudo_round"] = frozenset(session.scalars(sa.select(PseudoRound.id)))
    for sid, path, run_id, group_id, ensemble_id in session.execute(
        sa.select(Submission.id, Submission.file_path, Submission.run_id, Submission.group_id, Submission.ensemble_id)
    ):
        if path:
            artifacts.append(Artifact("submission", sid, "file", ArtifactKind.FILE, path))
        for kind, target in (("run", run_id), ("group", group_id), ("ensemble", ensemble_id)):
            if target is not None:
                references.append(Reference("submission", sid, kind, target, "source"))
    ids["submission"] = frozenset(session.scalars(sa.select(Submission.id)))
    for run_id, round_id in session.execute(sa.select(Run.id, Run.pseudo_round_id)):
        if round_id is not None:
            references.append(Reference("run", run_id, "pseudo_round", round_id, "trained on"))
    for job_id, target in session.execute(
        sa.select(Job.id, Job.target).where(Job.status.in_((RunStatus.QUEUED, RunStatus.RUNNING))).order_by(Job.id)
    ):
        for key, kind in _JOB_TARGETS.items():
            value = (target or {}).get(key)
            for target_id in value if isinstance(value, list) else [] if value is None else [value]:
                references.append(Reference("job", job_id, kind, int(target_id), "input"))
    return Inventory(artifacts=tuple(artifacts), references=tuple(references), ids=ids)
