"""Read models of storage: disk use, what a delete removes, what the retention policy frees."""

from __future__ import annotations

from typing import Literal

from worker.schemas._base import _Read

__all__ = [
    "DiskUseBy",
    "DiskUseRow",
    "DiskUseReport",
    "ObjectStorage",
    "StoredObject",
    "Dependant",
    "DeletePlan",
    "GcItem",
    "GcPlan",
]

DiskUseBy = Literal["run", "group", "experiment", "dataset"]


class DiskUseRow(_Read):
    """The bytes under the artifact root that one object (with what is below it) owns.

    ``kind`` is the ``by`` of the report, or for the rows that complete the total: ``ensemble``,
    ``submission``, ``pseudo_round`` (the objects outside that hierarchy, one row per kind, ``id`` None)
    and ``other`` (files no object owns: the weights cache, orphans ``segboard doctor`` reports).
    """

    kind: str
    id: int | None
    name: str
    bytes: int
    files: int
    pinned: bool | None = None  # None: the object cannot be pinned
    detail: str = ""  # a run's status, an experiment's run count...


class DiskUseReport(_Read):
    """Disk use by run, group, experiment or dataset; ``total_bytes`` is the sum of the rows."""

    by: str
    root: str
    rows: list[DiskUseRow]
    total_bytes: int
    total_files: int


class ObjectStorage(_Read):
    """What one run, group or experiment holds on the artifact root, and whether it is pinned."""

    kind: str
    id: int
    bytes: int
    files: int
    pinned: bool


class StoredObject(_Read):
    """One object a delete removes: ``why`` says how it got into the delete (``asked``, ``in experiment 3``,
    ``combines run 4`` ...)."""

    kind: str
    id: int
    name: str
    why: str
    bytes: int
    pinned: bool = False


class Dependant(_Read):
    """``kind id`` uses the artifacts of ``uses`` (``run 3``): deleting that breaks it."""

    kind: str
    id: int
    name: str
    uses: str
    why: str  # its relation to ``uses``: "combines", "taught by", "made from", "follows", "trained on"


class DeletePlan(_Read):
    """What deleting an object removes; :func:`worker.services.deletion.delete` refuses while ``blockers`` or
    (without cascade) ``dependants`` are not empty."""

    kind: str
    id: int
    name: str
    cascade: bool
    objects: list[StoredObject]  # everything that goes, the asked object first
    dependants: list[Dependant]  # objects outside the delete that use what it removes
    blockers: list[str]  # why it cannot go now, and what to do (cancel first, unpin...)
    locations: list[str]  # the files and folders removed after the commit
    bytes: int

    @property
    def allowed(self) -> bool:
        """Whether the delete can go ahead as planned."""
        return not self.blockers and (self.cascade or not self.dependants)


class GcItem(_Read):
    """One thing the retention policy removes."""

    kind: str  # run, group
    id: int
    what: Literal["last_checkpoint", "test_store"]
    location: str
    bytes: int
    reason: str


class GcPlan(_Read):
    """What ``segboard gc`` removes (``applied``: it did), and what it kept that the policy would remove."""

    items: list[GcItem]
    bytes: int
    kept: list[str]  # "run 3 test store: pinned" ...
    applied: bool = False
