"""Stored probabilities of a run, group or ensemble: the one resolver every reader uses.

:func:`resolve_probabilities` turns ``(kind, id, split)`` into something that reads like a
probability store (a :class:`segcore.inference.store.StoreReader`). Inspection, candidate ensemble
scoring, the pseudo-label preview and the job handlers (ensemble, pseudo-label, submission) all
call it, so they agree on which store a split uses:

=========  ==========================================  =============================================
kind       ``split="val"``                             ``split="test"``
=========  ==========================================  =============================================
run        its validation store (``predictions/val``,  its test store (a ``predict`` job)
           written when training finishes)
group      its out-of-fold store when recorded, else   its test store (the mean of its runs' test
           the union of its runs' validation stores    stores, a ``predict`` job)
           (an image in several: the mean)
ensemble   its members' ``val`` probabilities          its test store (the ``ensemble`` job, which
           combined image by image with its method     combines its members' ``test`` probabilities)
           and weights, on the images every member
           has; members may be ensembles (4 levels)
=========  ==========================================  =============================================

Anyone's finished runs are readable: ``actor`` is checked to be a member (None is the system).
Nothing here runs a model; the result holds no session, so the caller can close its transaction
before reading the probabilities.

Example:
    >>> probs = resolve_probabilities(session, actor=None, kind="group", id=2, split="val")  # doctest: +SKIP
    >>> probs.reader.ids[:2], probs.reader.read("img_001").shape  # doctest: +SKIP
    (['img_000', 'img_001'], (3, 512, 512))
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from segcore.errors import EnsembleError, SegcoreError, StoreError
from segcore.inference import EnsembleView, UnionView
from segcore.inference.store import StoreReader
from worker.artifacts import ArtifactError, Artifacts, is_url, local_path
from worker.db.models import Ensemble, Run, RunGroup, RunStatus, SourceKind
from worker.errors import InvalidInput, NotFound
from worker.services._common import check_actor, get_or_raise
from worker.services.ensembles import segcore_method

__all__ = ["Split", "ResolvedProbabilities", "resolve_probabilities", "store_tta", "MAX_NESTING"]

Split = Literal["val", "test"]

#: How deep ensembles of ensembles may nest.
MAX_NESTING = 4


@dataclasses.dataclass(frozen=True)
class ResolvedProbabilities:
    """What :func:`resolve_probabilities` found (plain values: it outlives the session).

    Attributes:
        kind: ``run``, ``group`` or ``ensemble``.
        id: Its id.
        name: Its name (a group's label).
        what: ``"run 3 (name)"``, for messages.
        split: ``val`` or ``test``.
        dataset_id: Its registered dataset, when known.
        reader: The probabilities: a store, or a read-only view combining stores.
        config: The segcore ``ExperimentConfig`` of the run (a group's or ensemble's first run);
            its ``data`` section says how to open the ground truth. None for an ensemble's test
            store (its dataset is ``dataset_id``).
        stores: Path, manifest SHA-256 and modification time of every store read: a rewrite
            changes them (cache keys).
        detail: How the stores are combined (ids, an ensemble's method and weights; cache keys).
        method: An ensemble's SegBoard method (None otherwise).
    """

    kind: str
    id: int
    name: str
    what: str
    split: str
    dataset_id: int | None
    reader: StoreReader
    config: Any
    stores: list[dict[str, Any]]
    detail: dict[str, Any]
    method: str | None = None


# --------------------------------------------------------------------------- combined views


# --------------------------------------------------------------------------- resolving


def _view(cls: Any, name: str, readers: Any, **kwargs: Any) -> Any:
    """segcore's union or ensemble view; what makes it impossible is the caller's input problem."""
    try:
        return cls(name, readers, **kwargs)
    except EnsembleError as exc:
        raise InvalidInput(str(exc)) from exc


def _identity(path: Path) -> dict[str, Any]:
    """Path, manifest checksum and modification time of a store: a rewrite changes them."""
    manifest = path / "manifest.json"
    try:
        data = manifest.read_bytes()
        mtime = manifest.stat().st_mtime_ns
    except OSError as exc:
        raise StoreError(f"no probability store at {path} ({exc.strerror})") from exc
    return {"path": str(path.resolve()), "sha256": hashlib.sha256(data).hexdigest(), "mtime_ns": mtime}


def _open_store(artifacts: Artifacts | None, location: str | None, what: str, split: str,
                hint: str) -> tuple[StoreReader, dict[str, Any]]:
    from segcore.inference.store import ProbabilityStore

    label = "validation" if split == "val" else "test"
    if not location:
        raise InvalidInput(f"{what} has no stored {label} predictions yet; {hint}")
    try:
        path = local_path(artifacts, location)
        return ProbabilityStore.open(path), _identity(path)
    except (StoreError, ArtifactError) as exc:
        again = ("train the run again, or run an evaluate job with a TTA policy to predict them again"
                 if split == "val" else "queue its test prediction again")
        raise InvalidInput(f"the stored {label} predictions of {what} cannot be read ({exc}); they were moved or "
                           f"deleted: {again}") from exc


def _config(run: Run) -> Any:
    from segcore.config import parse_config

    try:
        return parse_config(run.config)
    except SegcoreError as exc:
        raise InvalidInput(f"the stored config of run {run.id} is no longer valid ({exc}); pick another run") from exc


def _run(session: Session, artifacts: Artifacts | None, run_id: int, split: str) -> ResolvedProbabilities:
    run = get_or_raise(session, Run, run_id, "run")
    what = f"run {run.id} ({run.name})"
    if split == "val":
        if run.status is not RunStatus.SUCCEEDED and not run.val_store:
            raise InvalidInput(f"{what} is {run.status.value}: its validation predictions are stored when it "
                               "finishes; look again then")
        location = run.val_store
        hint = "they are written when a training finishes: wait for it, or queue the run again"
    else:
        location = run.test_store
        hint = "queue a predict job for it first"
    reader, identity = _open_store(artifacts, location, what, split, hint)
    return ResolvedProbabilities(kind="run", id=run.id, name=run.name, what=what, split=split,
                                 dataset_id=run.dataset_id, reader=reader, config=_config(run), stores=[identity],
                                 detail={"run": run.id})


def _group(session: Session, artifacts: Artifacts | None, group_id: int, split: str) -> ResolvedProbabilities:
    group = get_or_raise(session, RunGroup, group_id, "group")
    what = f"group {group.id} ({group.label})"
    runs = list(session.scalars(sa.select(Run).where(Run.group_id == group.id).order_by(Run.id)))
    if not runs:
        raise InvalidInput(f"{what} has no runs")
    config_run = next((r for r in runs if r.status is RunStatus.SUCCEEDED), runs[0])
    detail = {"group": group.id}
    if split == "test" or group.oof_store:
        location = group.test_store if split == "test" else group.oof_store
        reader, identity = _open_store(artifacts, location, what, split, "queue a predict job for the group first")
        return ResolvedProbabilities(kind="group", id=group.id, name=group.label, what=what, split=split,
                                     dataset_id=group.dataset_id, reader=reader, config=_config(config_run),
                                     stores=[identity], detail=detail)
    done = [r for r in runs if r.val_store]
    if not done:
        raise InvalidInput(f"{what} has no stored validation predictions yet: none of its {len(runs)} runs "
                           "finished; look again when the first fold finished")
    readers, identities = [], []
    for r in done:
        reader, identity = _open_store(artifacts, r.val_store, f"run {r.id} ({r.name})", split, "")
        readers.append(reader)
        identities.append(identity)
    return ResolvedProbabilities(kind="group", id=group.id, name=group.label, what=what, split=split,
                                 dataset_id=group.dataset_id, reader=_view(UnionView, what, readers),
                                 config=_config(done[0]), stores=identities, detail=detail)


def _ensemble(session: Session, artifacts: Artifacts | None, ensemble_id: int, split: str,
              depth: int) -> ResolvedProbabilities:
    ens = get_or_raise(session, Ensemble, ensemble_id, "ensemble")
    what = f"ensemble {ens.id} ({ens.name})"
    method = ens.method.value
    if split == "test":
        reader, identity = _open_store(artifacts, ens.test_store, what, split,
                                       "queue its test prediction (an ensemble job) first")
        return ResolvedProbabilities(kind="ensemble", id=ens.id, name=ens.name, what=what, split=split,
                                     dataset_id=ens.dataset_id, reader=reader, config=None, stores=[identity],
                                     detail={"ensemble": ens.id},
                                     method=method)
    members = list(ens.members or [])
    if not members:
        raise InvalidInput(f"{what} has no members")
    if depth >= MAX_NESTING:
        raise InvalidInput(f"ensembles nest more than {MAX_NESTING} levels deep at {what}; use an inner ensemble")
    found = []
    for m in members:
        kind, member_id = _member(m)
        try:
            found.append(_find(session, artifacts, kind, member_id, split, depth + 1))
        except NotFound as exc:
            raise InvalidInput(f"{what} lists {kind} {member_id}, which was deleted; its predictions are gone, so "
                               "the ensemble cannot be read") from exc
        except InvalidInput as exc:
            raise InvalidInput(f"{what} cannot be read: member {kind} {member_id}: {exc}") from exc
    # the saved weights, whatever the method: a weight search may have set them for a soft mean too
    weights = [float(m.get("weight", 1.0)) for m in members]
    view = _view(EnsembleView, what, [f.reader for f in found], method=segcore_method(method), weights=weights)
    if not view.ids:
        raise InvalidInput(f"the members of {what} share no validation image (e.g. single runs of different "
                           "folds); build the ensemble from fold/seed groups, whose out-of-fold predictions cover "
                           "every image")
    detail = {"ensemble": ens.id, "method": segcore_method(method), "weights": weights,
              "members": [f.detail for f in found]}
    return ResolvedProbabilities(kind="ensemble", id=ens.id, name=ens.name, what=what, split=split,
                                 dataset_id=ens.dataset_id, reader=view, config=found[0].config,
                                 stores=[s for f in found for s in f.stores],
                                 detail=detail, method=method)


def _member(m: Any) -> tuple[str, int]:
    try:
        return str(m["kind"]), int(m["id"])
    except (KeyError, TypeError, ValueError):
        raise InvalidInput(f"an ensemble member must look like {{'kind': 'run', 'id': 3}}, got {m!r}") from None


def _find(session: Session, artifacts: Artifacts | None, kind: str, object_id: int, split: str,
          depth: int) -> ResolvedProbabilities:
    if kind == SourceKind.RUN.value:
        return _run(session, artifacts, object_id, split)
    if kind == SourceKind.GROUP.value:
        return _group(session, artifacts, object_id, split)
    if kind == SourceKind.ENSEMBLE.value:
        return _ensemble(session, artifacts, object_id, split, depth)
    raise InvalidInput(f"unknown kind {kind!r}; use run, group or ensemble")


def resolve_probabilities(
    session: Session,
    *,
    actor: int | None,
    kind: SourceKind | str,
    id: int,  # noqa: A002 - the service-wide name of an object's id in (kind, id)
    split: Split,
    artifacts: Artifacts | None = None,
) -> ResolvedProbabilities:
    """The stored probabilities of a run, group or ensemble on one split (rules in the module docstring).

    Args:
        actor: The reading member (None: the system); anyone's finished objects are readable.
        kind: ``run``, ``group`` or ``ensemble``.
        id: Its id.
        split: ``val`` (validation / out-of-fold) or ``test``.
        artifacts: The artifact root, to fetch stores kept in a remote one (None: locations are local paths).

    Returns:
        The reader and what it was built from; it holds no session.

    Raises:
        NotFound: the object (or the actor) does not exist.
        InvalidInput: an unknown kind or split, no stored predictions for the split yet, stores that
            cannot be read or do not fit together; each message says what to do.
    """
    check_actor(session, actor)
    kind = str(getattr(kind, "value", kind))
    if split not in ("val", "test"):
        raise InvalidInput(f"unknown split {split!r}; use 'val' (validation / out-of-fold) or 'test'")
    if kind not in {k.value for k in SourceKind}:
        raise InvalidInput(f"unknown kind {kind!r}; use run, group or ensemble")
    return _find(session, artifacts, kind, int(id), split, 0)


def store_tta(artifacts: Artifacts | None, location: str | None) -> tuple[bool, dict[str, Any] | None]:
    """Whether a probability store can be read at ``location``, and the TTA policy recorded in it.

    Only the manifest is read (fetched alone from a remote artifact root).
    """
    from segcore.inference.store import ProbabilityStore

    if not location:
        return False, None
    try:
        if artifacts is not None and is_url(location):
            local = artifacts.fetch(location.rstrip("/") + "/manifest.json").parent
        else:
            local = local_path(artifacts, location)
        return True, ProbabilityStore.open(local).tta
    except (StoreError, OSError, ArtifactError):
        return False, None
