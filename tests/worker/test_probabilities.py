"""The one resolver of stored probabilities, and the services built on it: candidate scoring, saving a
candidate, pending test predictions.

Stores are written by hand over the inspection tests' tiny synthetic dataset, so every number is known.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from worker.db.models import Ensemble, EnsembleMethod, Run, RunGroup
from worker.errors import InvalidInput
from worker.services import candidates, ensembles, jobs, submissions
from segcore.inference import EnsembleView, UnionView
from worker.services.probabilities import resolve_probabilities

from .test_inspection_service import CLASSES, _class_pixels, _run, shapes, write_store  # noqa: F401


@pytest.fixture
def registered(session, shapes) -> int:  # noqa: F811 - the fixture imported above
    from worker.services import datasets

    source, _ = shapes
    return datasets.register_dataset(session, actor=None, name="shapes", source=source, classes=CLASSES,
                                     check_pixels=False).id


def _on(session, run_ids: list[int], dataset_id: int) -> list[int]:
    for rid in run_ids:
        session.get(Run, rid).dataset_id = dataset_id
        group = session.get(RunGroup, session.get(Run, rid).group_id)
        group.dataset_id = dataset_id
    session.flush()
    return run_ids


def _pair(session, shapes, dataset_id: int, tmp_path, erased: int) -> tuple[list[str], str, int, int]:
    """(ids, victim, good, bad): two runs on 4 images; ``bad`` predicts class ``erased`` of ``victim`` as background."""
    source, ds = shapes
    ids = ds.ids[:4]
    victim = next(i for i in ids if _class_pixels(ds, i, erased) > 0)
    [good] = _on(session, _run(session, source, val_store=write_store(tmp_path / "g", ds, ids)), dataset_id)
    [bad] = _on(session, _run(session, source, val_store=write_store(tmp_path / "b", ds, ids,
                                                                      erase={victim: erased})), dataset_id)
    return ids, victim, good, bad


def _ensemble(session, members: list[dict[str, Any]], dataset_id: int | None = None, **kw: Any) -> int:
    ens = Ensemble(name=kw.pop("name", "e"), method=kw.pop("method", EnsembleMethod.SOFT), members=members,
                   dataset_id=dataset_id, **kw)
    session.add(ens)
    session.flush()
    return ens.id


def test_each_split_reads_its_store_and_says_what_is_missing(session, shapes, tmp_path):  # noqa: F811
    source, ds = shapes
    [rid] = _run(session, source, val_store=write_store(tmp_path / "val", ds, ds.ids[:3]))
    val = resolve_probabilities(session, actor=None, kind="run", id=rid, split="val")
    assert val.reader.ids == ds.ids[:3] and val.config.data.classes == CLASSES and len(val.stores) == 1
    with pytest.raises(InvalidInput, match="no stored test predictions yet; queue a predict job"):
        resolve_probabilities(session, actor=None, kind="run", id=rid, split="test")
    session.get(Run, rid).test_store = write_store(tmp_path / "test", ds, ds.ids[3:5])
    session.flush()
    assert resolve_probabilities(session, actor=None, kind="run", id=rid, split="test").reader.ids == ds.ids[3:5]
    with pytest.raises(InvalidInput, match="unknown split"):
        resolve_probabilities(session, actor=None, kind="run", id=rid, split="train")  # type: ignore[arg-type]


def test_a_group_union_refuses_an_image_stored_at_two_sizes(session, shapes, tmp_path):  # noqa: F811
    from segcore.inference.store import ProbabilityStore

    source, ds = shapes
    first, second = _run(session, source, val_store=None, seeds=(0, 1))
    session.get(Run, first).val_store = write_store(tmp_path / "a", ds, ds.ids[:2])
    small = tmp_path / "b"
    with ProbabilityStore.create(small, classes=CLASSES, task="multiclass") as w:
        w.write(ds.ids[0], np.full((4, 32, 32), 0.25, np.float32))  # the same image, another size
    session.get(Run, second).val_store = str(small)
    session.flush()
    group_id = session.get(Run, first).group_id
    with pytest.raises(InvalidInput, match="different sizes"):
        resolve_probabilities(session, actor=None, kind="group", id=group_id, split="val")


def test_nested_ensembles_combine_their_members_and_score_as_candidates(session, shapes, registered,  # noqa: F811
                                                                        tmp_path):
    ids, victim, good, bad = _pair(session, shapes, registered, tmp_path, erased=1)
    inner = _ensemble(session, [{"kind": "run", "id": good, "weight": 3.0}, {"kind": "run", "id": bad, "weight": 1.0}],
                      registered, method=EnsembleMethod.WEIGHTED)
    outer = _ensemble(session, [{"kind": "ensemble", "id": inner}, {"kind": "run", "id": bad}], registered)
    found = resolve_probabilities(session, actor=None, kind="ensemble", id=outer, split="val")
    assert isinstance(found.reader, EnsembleView) and found.reader.ids == ids
    assert found.detail["members"][0]["members"] == [{"run": good}, {"run": bad}]
    assert len(found.stores) == 3  # good, bad (inner) and bad again (outer)
    # soft mean of the inner (3:1, right everywhere) and the bad run: 0.5*0.75 + 0.5*0 = 0.375 for class 1
    # against 0.625 for the background on the erased pixels, so the outer ensemble misses them
    probs = found.reader.read(victim)
    assert probs.shape == (4, 64, 64) and int((probs.argmax(0) == 1).sum()) == 0
    scored = candidates.score_candidate(session, members=[{"kind": "ensemble", "id": inner},
                                                          {"kind": "run", "id": good}], method="soft")
    assert scored["score"] == 1.0 and [m["score"] for m in scored["members"]] == [1.0, 1.0]


def test_save_candidate_scores_it_here_and_queues_what_its_test_prediction_needs(session, shapes,  # noqa: F811
                                                                                registered, tmp_path):
    _, ds = shapes
    _, _, a, b = _pair(session, shapes, registered, tmp_path, erased=2)
    members = [{"kind": "run", "id": a}, {"kind": "run", "id": b}]
    expected = candidates.score_candidate(session, members=members, method="soft")
    saved = ensembles.save_candidate(session, actor=None, name="pair", members=members, method="soft")
    assert saved.ensemble.val_score == expected["score"] and saved.ensemble.status.value == "queued"
    assert saved.job.kind.value == "predict" and saved.job.target["run_ids"] == [a, b]
    pending = submissions.pending_test_predictions(session, kind="ensemble", id=saved.ensemble.id)
    assert [j.id for j in pending.pending] == [saved.job.id] and pending.missing_runs == [a, b]
    # once the members have test predictions, saving queues the combination itself
    for rid in (a, b):
        session.get(Run, rid).test_store = write_store(tmp_path / f"t{rid}", ds, ds.ids[4:6])
    session.flush()
    again = ensembles.save_candidate(session, actor=None, name="pair 2", members=members, method="soft")
    assert again.job.kind.value == "ensemble" and again.job.target["ensemble_id"] == again.ensemble.id
    # a validation-split predict job is not a pending test prediction
    val_job = jobs.create_job(session, actor=None, kind="predict", target={"run_ids": [a]}, params={"split": "val"})
    assert [j.id for j in submissions.pending_test_predictions(session, kind="run", id=a).pending] == [saved.job.id]
    assert val_job.id != saved.job.id


def test_views_read_like_stores_for_segcore(session, shapes, tmp_path):  # noqa: F811
    from segcore import ensemble as seg

    source, ds = shapes
    first, second = _run(session, source, val_store=None, seeds=(0, 1))
    session.get(Run, first).val_store = write_store(tmp_path / "a", ds, ds.ids[:3])
    session.get(Run, second).val_store = write_store(tmp_path / "b", ds, ds.ids[2:5])
    session.flush()
    found = resolve_probabilities(session, actor=None, kind="group", id=session.get(Run, first).group_id,
                                  split="val")
    union = found.reader
    assert isinstance(union, UnionView) and union.ids == sorted(ds.ids[:5]) and ds.ids[2] in union
    assert seg.evaluate(seg.check_members([union]), ds.load_mask)["score"] == 1.0
    with pytest.raises(Exception, match="not among"):
        union.read("nope")

