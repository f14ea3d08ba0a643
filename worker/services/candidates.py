"""Previews computed from stored probabilities, before anything is saved or queued.

- :func:`load_candidate` then :func:`score` (or :func:`score_candidate` in one call): the
  validation score of a candidate ensemble, from its members' stored validation / out-of-fold
  probabilities, before anything is saved or queued; the score needs no session;
- :func:`load_teacher` then :func:`preview_pseudo` (or :func:`preview_pseudo_round`): what a
  pseudo-label round would keep, from the teacher's stored test probabilities, before the round
  is created; the preview needs no session.

Both only read: the stored probabilities come from
:func:`worker.services.probabilities.resolve_probabilities` (``val`` for a candidate, ``test`` for
a teacher), metadata from existing services, and the numbers from segcore's torch-free functions
(:mod:`segcore.ensemble`, :mod:`segcore.pseudo`, the probability store) for the numbers. They
take the session first and keyword-only arguments, like every service. They run in the calling
process (the web app) in seconds; nothing here runs a model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.artifacts import Artifacts, open_local_dataset
from worker.errors import InvalidInput
from worker.schemas import EnsembleMember, PseudoParams
from worker.services.ensembles import segcore_method
from worker.services.probabilities import ResolvedProbabilities, resolve_probabilities

__all__ = [
    "Candidate",
    "load_candidate",
    "score",
    "score_candidate",
    "Teacher",
    "load_teacher",
    "preview_pseudo",
    "preview_pseudo_round",
    "pseudo_filters",
]


def _open_dataset(session: Session, dataset_id: int, dataset_root: str | None, artifacts: Artifacts | None) -> Any:
    from worker.services import datasets

    ds = datasets.get_dataset(session, dataset_id=dataset_id)
    return ds, open_local_dataset(artifacts, ds.source, classes=ds.classes, task=ds.task,
                                  ignore_index=ds.ignore_index, dataset_root=dataset_root)


def _recorded(session: Session, found: ResolvedProbabilities) -> tuple[str, float | None]:
    """(name shown, own recorded score) of an ensemble member."""
    from worker.services import ensembles, groups, runs

    if found.kind == "run":
        run = runs.get_run(session, run_id=found.id)
        return run.name, run.monitor_value
    if found.kind == "group":
        g = groups.get_group(session, group_id=found.id)
        stat = g.metrics.get(g.monitor_metric)
        return f"group {g.id} [{g.label}]", g.oof_score if g.oof_score is not None else (stat.mean if stat else None)
    e = ensembles.get_ensemble(session, ensemble_id=found.id)
    return f"ensemble {e.id} [{e.name}]", e.val_score


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A candidate ensemble read from the database, ready to score (holds no session).

    Attributes:
        members: The parsed members, in order.
        names: Each member's name, as shown.
        recorded: Each member's recorded validation score (None when not recorded).
        readers: Each member's ``val`` probabilities (see ``resolve_probabilities``).
        method: The SegBoard method; ``weight_search`` the weight search to run.
        dataset: segcore's ``SegDataset`` with the ground truth; ``ignore_index`` its ignore label.
        dataset_id: The members' dataset.
    """

    members: list[EnsembleMember]
    names: list[str]
    recorded: list[float | None]
    readers: list[Any]
    method: str
    weight_search: str
    dataset: Any
    ignore_index: int
    dataset_id: int


def _refuse_fold_runs(session: Session, members: Sequence[EnsembleMember]) -> None:
    """Explain, before anything is read, why fold runs of one k-fold group cannot be ensembled.

    Each fold run was validated on its own fold's images, so their validation predictions cover
    different images; the group's out-of-fold predictions cover them all and score like one model.
    """
    from worker.db.models import Run

    run_ids = [m.id for m in members if str(getattr(m.kind, "value", m.kind)) == "run"]
    if len(run_ids) < 2:
        return
    rows = session.execute(sa.select(Run.id, Run.group_id, Run.fold).where(Run.id.in_(run_ids))).all()
    by_group: dict[int, list[tuple[int, int]]] = {}
    for run_id, group_id, fold in rows:
        if group_id is not None and fold is not None:
            by_group.setdefault(group_id, []).append((run_id, fold))
    for group_id, runs in sorted(by_group.items()):
        if len({fold for _, fold in runs}) > 1:
            named = " and ".join(f"run {r} (fold {f})" for r, f in sorted(runs))
            raise InvalidInput(
                f"{named} are folds of group {group_id}: each was validated on different images, so their "
                f"predictions cannot be combined; pick group {group_id} instead (its out-of-fold predictions "
                "cover every image)"
            )


def load_candidate(
    session: Session,
    *,
    members: Sequence[EnsembleMember | dict[str, Any]],
    method: str,
    weight_search: str = "none",
    dataset_root: str | None = None,
    artifacts: Artifacts | None = None,
    actor: int | None = None,
) -> Candidate:
    """Read what scoring a candidate ensemble needs; :func:`score` then runs without a session.

    The members' probabilities are the ``val`` split of
    :func:`worker.services.probabilities.resolve_probabilities` (ensembles may be members).

    Args:
        members: Runs, groups or ensembles (with ``weight`` for the ``weighted`` method), at least two.
        method: ``soft``, ``geometric``, ``majority`` or ``weighted``.
        weight_search: ``none``, ``greedy`` (forward selection with replacement) or ``optimize``
            (coordinate search); the found weights replace the given ones.
        dataset_root: The folder relative dataset roots are resolved against (the settings').
        artifacts: The artifact root, to fetch stores kept in a remote one (None: stores are local paths).
        actor: The reading member (None: the system).

    Raises:
        InvalidInput: fewer than two members, an unknown method, a member without stored
            validation probabilities, members of different datasets.
    """
    parsed = [m if isinstance(m, EnsembleMember) else EnsembleMember.model_validate(m) for m in members]
    if len(parsed) < 2:
        raise InvalidInput("pick at least two members for an ensemble")
    segcore_method(method)
    if weight_search not in ("none", "greedy", "optimize"):
        raise InvalidInput(f"unknown weight search {weight_search!r}; use none, greedy or optimize")
    _refuse_fold_runs(session, parsed)
    found = [resolve_probabilities(session, actor=actor, kind=m.kind, id=m.id, split="val", artifacts=artifacts)
             for m in parsed]
    dataset_ids = {f.dataset_id for f in found if f.dataset_id is not None}
    if len(dataset_ids) != 1:
        raise InvalidInput(f"the members come from datasets {sorted(dataset_ids) or 'unknown'}; pick one dataset")
    dataset_id = dataset_ids.pop()
    ds, dataset = _open_dataset(session, dataset_id, dataset_root, artifacts)
    recorded = [_recorded(session, f) for f in found]
    return Candidate(members=parsed, names=[r[0] for r in recorded], recorded=[r[1] for r in recorded],
                     readers=[f.reader for f in found], method=method, weight_search=weight_search, dataset=dataset,
                     ignore_index=ds.ignore_index, dataset_id=dataset_id)


def score(candidate: Candidate) -> dict[str, Any]:
    """The validation score of a loaded candidate, and each member's on the same images (no session needed).

    Returns:
        ``{"metric": "miou"|"dice", "score", "per_class", "weights", "n_images",
        "members": [{"kind", "id", "name", "score", "recorded"}], "search": {...} | None}``;
        every score is computed on the same images with the same definition.

    Raises:
        EnsembleError: the stores do not cover the same images or classes (e.g. single fold runs
            of different folds: use their groups' out-of-fold stores).
    """
    from segcore import ensemble as seg

    c = candidate
    load_mask = c.dataset.load_mask
    readers = seg.check_members(c.readers)
    weights = [m.weight for m in c.members] if c.method == "weighted" else None
    search = None
    if c.weight_search != "none":
        cache = seg.SearchCache.build(readers, load_mask, ignore_index=c.ignore_index)
        find = seg.greedy_selection if c.weight_search == "greedy" else seg.optimize_weights
        result = find(cache)
        weights = result.weights
        search = result.to_dict()
    # segcore_method returns a str that is one of segcore's Method names
    scored = seg.evaluate(readers, load_mask, method=segcore_method(c.method),  # type: ignore[arg-type]
                          weights=weights, ignore_index=c.ignore_index)
    member_rows = []
    for m, name, recorded, reader in zip(c.members, c.names, c.recorded, readers, strict=True):
        own = seg.evaluate([reader], load_mask, ignore_index=c.ignore_index)
        member_rows.append({"kind": m.kind.value, "id": m.id, "name": name, "score": own["score"],
                            "recorded": recorded})
    n = len(c.members)
    w = list(weights) if weights is not None else [1.0 / n] * n
    total = sum(w) or 1.0
    return {
        "metric": scored["metric"],
        "score": scored["score"],
        "per_class": scored["per_class"],
        "weights": [float(x) / total for x in w],
        "n_images": len(readers[0].ids),
        "members": member_rows,
        "search": search,
    }


def score_candidate(session: Session, **options: Any) -> dict[str, Any]:
    """:func:`score` of :func:`load_candidate` (``options`` as there), in one call."""
    return score(load_candidate(session, **options))


def pseudo_filters(
    params: PseudoParams, num_classes: int, classes: Sequence[str], background: int | None = 0
) -> dict[str, Any]:
    """segcore's filter arguments for a round's thresholds (the same names, checked against the classes).

    ``background``: the dataset's background class (its pixels are not foreground for the image
    filter), None when it has none.

    ``pixel_threshold``: a pixel whose max probability is below it becomes ignore_index.
    ``image_threshold`` and ``max_low_confidence``: an image is dropped when more than
    ``max_low_confidence`` of its foreground pixels have a max probability below ``image_threshold``.
    """
    per_class = dict(params.per_class or {})
    unknown = [c for c in per_class if c not in classes]
    if unknown:
        raise InvalidInput(f"per-class thresholds name unknown classes {unknown}; use {list(classes)}")
    return {
        "pixel_threshold": params.pixel_threshold,
        "image_threshold": params.image_threshold,
        "max_low_confidence": params.max_low_confidence,
        "class_thresholds": per_class or None,
        "background_index": background,
    }


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A pseudo-label teacher read from the database: its test probabilities and dataset (no session)."""

    name: str
    dataset_id: int
    dataset_name: str
    classes: list[str]
    ignore_index: int
    reader: Any
    dataset: Any
    background: int | None = 0


def load_teacher(
    session: Session,
    *,
    teacher_kind: str,
    teacher_id: int,
    dataset_root: str | None = None,
    artifacts: Artifacts | None = None,
    actor: int | None = None,
) -> Teacher:
    """Read a teacher's stored test probabilities and its dataset; :func:`preview_pseudo` runs without a session.

    Raises:
        InvalidInput: the teacher has no stored test predictions, or the dataset has no test images.
        NotFound: the teacher does not exist.
    """
    try:
        teacher = resolve_probabilities(session, actor=actor, kind=teacher_kind, id=teacher_id, split="test",
                                        artifacts=artifacts)
    except InvalidInput as exc:
        raise InvalidInput(f"{exc} (Run detail: make submission; or the ensemble's prediction job), and preview "
                           "again when it finished") from exc
    if teacher.dataset_id is None:
        raise InvalidInput(f"{teacher_kind} {teacher.name} is not tied to a registered dataset")
    ds, dataset = _open_dataset(session, teacher.dataset_id, dataset_root, artifacts)
    if not dataset.test_ids:
        raise InvalidInput(f"dataset {ds.name} has no unlabelled test images to pseudo-label")
    return Teacher(name=teacher.name, dataset_id=teacher.dataset_id, dataset_name=ds.name, classes=list(ds.classes),
                   ignore_index=ds.ignore_index, reader=teacher.reader, dataset=dataset, background=ds.background)


def preview_pseudo(teacher: Teacher, *, params: PseudoParams | dict[str, Any], samples: int = 4) -> dict[str, Any]:
    """What a pseudo-label round would produce from a loaded teacher (writes nothing, needs no session).

    Returns:
        ``{"teacher": name, "dataset_id", "report": PseudoLabelReport.to_dict(), "samples":
        [{"id", "image": HxWx3 uint8, "mask": HxW uint8}], "classes": [...], "background"}``; masks hold the
        pseudo-labels with filtered pixels at the dataset's ignore index.

    Raises:
        InvalidInput: thresholds that name unknown classes.
    """
    from segcore.pseudo import make_pseudo_labels

    p = params if isinstance(params, PseudoParams) else PseudoParams.model_validate(params)
    t, reader, dataset = teacher, teacher.reader, teacher.dataset
    filters = pseudo_filters(p, len(t.classes), t.classes, t.background)
    ids = list(reader.ids)[: p.limit] if p.limit else None
    report = make_pseudo_labels(reader, dataset.test_image_path, preview=True, ignore_index=t.ignore_index,
                                ids=ids, **filters)
    thresholds = np.full(len(t.classes), p.pixel_threshold, dtype=np.float64)
    for cname, value in (p.per_class or {}).items():
        thresholds[t.classes.index(cname)] = value
    out_samples = []
    for image_id in report.kept_ids[: max(samples, 0)]:
        probs = reader.read(image_id)
        labels = probs.argmax(axis=0).astype(np.uint8)
        conf = probs.max(axis=0)
        labels[conf < thresholds[labels]] = t.ignore_index
        out_samples.append({"id": image_id, "image": dataset.load_test_image(image_id), "mask": labels})
    return {"teacher": t.name, "dataset_id": t.dataset_id, "report": report.to_dict(), "samples": out_samples,
            "classes": list(t.classes), "background": t.background}


def preview_pseudo_round(
    session: Session,
    *,
    params: PseudoParams | dict[str, Any],
    samples: int = 4,
    **teacher: Any,
) -> dict[str, Any]:
    """:func:`preview_pseudo` of :func:`load_teacher` (``teacher`` are its arguments), in one call."""
    return preview_pseudo(load_teacher(session, **teacher), params=params, samples=samples)
