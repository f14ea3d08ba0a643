"""Previews computed from stored probabilities, before anything is saved or queued.

- :func:`score_candidate`: the validation score of a candidate ensemble, from its members'
  stored validation / out-of-fold probabilities, before anything is saved or queued;
- :func:`preview_pseudo_round`: what a pseudo-label round would keep, from the teacher's stored
  test probabilities, before the round is created.

Both only read: the stored probabilities come from
:func:`worker.services.probabilities.resolve_probabilities` (``val`` for a candidate, ``test`` for
a teacher), metadata from existing services, and the numbers from segcore's torch-free functions
(:mod:`segcore.ensemble`, :mod:`segcore.pseudo`, the probability store) for the numbers. They
take the session first and keyword-only arguments, like every service. They run in the calling
process (the web app) in seconds; nothing here runs a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from worker.artifacts import Artifacts, open_local_dataset
from worker.errors import InvalidInput
from worker.schemas import EnsembleMember, PseudoParams
from worker.services.ensembles import segcore_method
from worker.services.probabilities import ResolvedProbabilities, resolve_probabilities

__all__ = ["score_candidate", "preview_pseudo_round", "pseudo_filters"]


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


def score_candidate(
    session: Session,
    *,
    members: Sequence[EnsembleMember | dict[str, Any]],
    method: str,
    weight_search: str = "none",
    dataset_root: str | None = None,
    artifacts: Artifacts | None = None,
    actor: int | None = None,
) -> dict[str, Any]:
    """Score a candidate ensemble on its members' stored validation / OOF probabilities.

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

    Returns:
        ``{"metric": "miou"|"dice", "score", "per_class", "weights", "n_images",
        "members": [{"kind", "id", "name", "score", "recorded"}], "search": {...} | None}``;
        every score is computed on the same images with the same definition.

    Raises:
        InvalidInput: fewer than two members, an unknown method, a member without stored
            validation probabilities, members of different datasets.
        EnsembleError: the stores do not cover the same images or classes (e.g. single fold runs
            of different folds: use their groups' out-of-fold stores).
    """
    from segcore import ensemble as seg

    parsed = [m if isinstance(m, EnsembleMember) else EnsembleMember.model_validate(m) for m in members]
    if len(parsed) < 2:
        raise InvalidInput("pick at least two members for an ensemble")
    seg_method = segcore_method(method)
    if weight_search not in ("none", "greedy", "optimize"):
        raise InvalidInput(f"unknown weight search {weight_search!r}; use none, greedy or optimize")
    found = [resolve_probabilities(session, actor=actor, kind=m.kind, id=m.id, split="val", artifacts=artifacts)
             for m in parsed]
    dataset_ids = {f.dataset_id for f in found if f.dataset_id is not None}
    if len(dataset_ids) != 1:
        raise InvalidInput(f"the members come from datasets {sorted(dataset_ids) or 'unknown'}; pick one dataset")
    ds, dataset = _open_dataset(session, dataset_ids.pop(), dataset_root, artifacts)
    readers = seg.check_members([f.reader for f in found])
    weights = [m.weight for m in parsed] if method == "weighted" else None
    search = None
    if weight_search != "none":
        cache = seg.SearchCache.build(readers, dataset.load_mask, ignore_index=ds.ignore_index)
        find = seg.greedy_selection if weight_search == "greedy" else seg.optimize_weights
        result = find(cache)
        weights = result.weights
        search = result.to_dict()
    scored = seg.evaluate(readers, dataset.load_mask, method=seg_method,  # type: ignore[arg-type] # a known name
                          weights=weights, ignore_index=ds.ignore_index)
    member_rows = []
    for m, f, reader in zip(parsed, found, readers, strict=True):
        name, recorded = _recorded(session, f)
        own = seg.evaluate([reader], dataset.load_mask, ignore_index=ds.ignore_index)
        member_rows.append({"kind": m.kind.value, "id": m.id, "name": name, "score": own["score"],
                            "recorded": recorded})
    n = len(parsed)
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


def pseudo_filters(params: PseudoParams, num_classes: int, classes: Sequence[str]) -> dict[str, Any]:
    """segcore's filter arguments for a round's thresholds (the same names, checked against the classes).

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
    }


def preview_pseudo_round(
    session: Session,
    *,
    teacher_kind: str,
    teacher_id: int,
    params: PseudoParams | dict[str, Any],
    samples: int = 4,
    dataset_root: str | None = None,
    artifacts: Artifacts | None = None,
    actor: int | None = None,
) -> dict[str, Any]:
    """What a pseudo-label round would produce from a teacher's stored test probabilities (writes nothing).

    Returns:
        ``{"teacher": name, "dataset_id", "report": PseudoLabelReport.to_dict(), "samples":
        [{"id", "image": HxWx3 uint8, "mask": HxW uint8}], "classes": [...]}``; masks hold the
        pseudo-labels with filtered pixels at the dataset's ignore index.

    Raises:
        InvalidInput: the teacher has no stored test predictions, or the dataset has no test images.
        NotFound: the teacher does not exist.
    """
    from segcore.pseudo import make_pseudo_labels

    p = params if isinstance(params, PseudoParams) else PseudoParams.model_validate(params)
    try:
        teacher = resolve_probabilities(session, actor=actor, kind=teacher_kind, id=teacher_id, split="test",
                                        artifacts=artifacts)
    except InvalidInput as exc:
        raise InvalidInput(f"{exc} (Run detail: make submission; or the ensemble's prediction job), and preview "
                           "again when it finished") from exc
    name, dataset_id, reader = teacher.name, teacher.dataset_id, teacher.reader
    if dataset_id is None:
        raise InvalidInput(f"{teacher_kind} {name} is not tied to a registered dataset")
    ds, dataset = _open_dataset(session, dataset_id, dataset_root, artifacts)
    if not dataset.test_ids:
        raise InvalidInput(f"dataset {ds.name} has no unlabelled test images to pseudo-label")
    filters = pseudo_filters(p, len(ds.classes), ds.classes)
    ids = list(reader.ids)[: p.limit] if p.limit else None
    report = make_pseudo_labels(reader, dataset.test_image_path, preview=True, ignore_index=ds.ignore_index,
                                ids=ids, **filters)
    thresholds = np.full(len(ds.classes), p.pixel_threshold, dtype=np.float64)
    for cname, t in (p.per_class or {}).items():
        thresholds[ds.classes.index(cname)] = t
    out_samples = []
    for image_id in report.kept_ids[: max(samples, 0)]:
        probs = reader.read(image_id)
        labels = probs.argmax(axis=0).astype(np.uint8)
        conf = probs.max(axis=0)
        labels[conf < thresholds[labels]] = ds.ignore_index
        out_samples.append({"id": image_id, "image": dataset.load_test_image(image_id), "mask": labels})
    return {"teacher": name, "dataset_id": dataset_id, "report": report.to_dict(), "samples": out_samples,
            "classes": list(ds.classes)}
