"""Inspection service: reports of runs, groups and ensembles from their stored validation probabilities,
cached by store identity, with clear errors.

Most tests build stores by hand over a tiny synthetic dataset, so every number is known (a perfect
prediction, one image with a class erased); one test inspects a run trained for real.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worker.db.models import Ensemble, EnsembleMethod, Run, RunStatus
from worker.errors import InvalidInput, NotFound
from worker.services import inspection

CLASSES = ["background", "class_1", "class_2", "class_3"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Any:
    """A 12-image synthetic COCO dataset of 64px images (4 classes with background)."""
    from segcore.data.formats import open_dataset
    from segcore.data.synthetic import make_synthetic_coco

    source = make_synthetic_coco(tmp_path_factory.mktemp("inspect_shapes"), num_images=12, num_classes=3, size=64,
                                 seed=3)
    return source, open_dataset(source, classes=CLASSES)


def _config(source: Any, split: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "tiny",
        "data": {"source": source.model_dump(mode="json"), "classes": CLASSES,
                 "split": split or {"kind": "holdout", "val_fraction": 0.25, "seed": 0}},
        "model": {"arch": "Unet", "encoder": "resnet18", "encoder_weights": None},
        "training": {"epochs": 2, "batch_size": 4},
    }


def _one_hot(mask: np.ndarray, c: int = 4) -> np.ndarray:
    m = mask.astype(np.int64).copy()
    m[m >= c] = 0
    return np.eye(c, dtype=np.float32)[m].transpose(2, 0, 1)


def write_store(path: Path, dataset: Any, ids: list[str], *, erase: dict[str, int] | None = None) -> str:
    """A store predicting the ground truth exactly, except that ``erase[image] = class`` is predicted as background."""
    from segcore.inference.store import ProbabilityStore

    with ProbabilityStore.create(path, classes=CLASSES, task="multiclass", overwrite=True) as w:
        for image_id in ids:
            mask = dataset.load_mask(image_id).copy()
            if erase and image_id in erase:
                mask[mask == erase[image_id]] = 0
            w.write(image_id, _one_hot(mask))
    return str(path)


@pytest.fixture
def settings(tmp_path):
    from worker.settings import get_settings

    return get_settings(home=tmp_path / "home", artifact_root=str(tmp_path / "artifacts"),
                        dataset_root=str(tmp_path / "datasets"), redis_url="redis://127.0.0.1:1/0")


def _run(session, source: Any, *, val_store: str | None, status: RunStatus = RunStatus.SUCCEEDED,
         split: dict[str, Any] | None = None, n_folds: int = 1, seeds: tuple[int, ...] = (0,)) -> list[int]:
    from worker.services import experiments

    exp = experiments.create_experiment(session, actor=None, config=_config(source, split), n_folds=n_folds,
                                        seeds=seeds)
    for rid in exp.run_ids:
        run = session.get(Run, rid)
        run.status = status
        run.val_store = val_store
    session.flush()
    return exp.run_ids


def _class_pixels(dataset: Any, image_id: str, c: int) -> int:
    return int((dataset.load_mask(image_id) == c).sum())


def test_perfect_run_has_no_errors_and_known_metrics(session, settings, shapes, tmp_path):
    source, ds = shapes
    ids = ds.ids[:4]
    [rid] = _run(session, source, val_store=write_store(tmp_path / "perfect", ds, ids))
    report = inspection.inspect_run(session, run_id=rid, settings=settings)
    assert report.n_images == 4 and [im.image_id for im in report.images] == ids
    assert report.pooled.mean_iou == 1.0 and report.pooled.pixel_accuracy == 1.0
    assert sum(report.taxonomy.totals.values()) == 0
    support = [sum(_class_pixels(ds, i, c) for i in ids) for c in range(4)]
    assert [m.support for m in report.pooled.classes] == support
    assert report.parameters.background == 0  # class 0 is named "background"
    target = inspection.describe(session, source=("run", rid), settings=settings)
    assert target.n_images == 4 and target.classes == CLASSES and target.folds == []


def test_erased_class_is_under_prediction_and_the_image_is_worst(session, settings, shapes, tmp_path):
    source, ds = shapes
    ids = ds.ids[:4]
    victim = next(i for i in ids if _class_pixels(ds, i, 1) > 0)
    n = _class_pixels(ds, victim, 1)
    [rid] = _run(session, source, val_store=write_store(tmp_path / "erased", ds, ids, erase={victim: 1}))
    report = inspection.inspect_run(session, run_id=rid, settings=settings)
    assert report.taxonomy.totals["under_prediction"] == n
    assert report.taxonomy.totals["over_prediction"] == 0 and report.taxonomy.totals["wrong_class"] == 0
    assert report.taxonomy.shares["under_prediction"] == 1.0
    c1 = report.pooled.classes[1]
    assert c1.fn == n and c1.fp == 0 and c1.recall == pytest.approx(1 - n / c1.support)
    assert report.confusion.counts[1][0] == n
    worst = inspection.worst_images(session, source=("run", rid), settings=settings, class_name="class_1", k=1)
    assert worst[0].image_id == victim and worst[0].iou == 0.0 and worst[0].errors == n
    overall = inspection.worst_images(session, source=("run", rid), settings=settings, k=2)
    assert overall[0].image_id == victim
    # the class filter cuts the per-class lists, not the totals
    only = inspection.inspect_run(session, run_id=rid, settings=settings, classes=["class_1"])
    assert [c.name for c in only.pooled.classes] == ["class_1"]
    assert list(only.worst_images) == ["class_1"]
    assert only.taxonomy.totals == report.taxonomy.totals


def test_second_call_is_served_from_the_cache_file(session, settings, shapes, tmp_path, monkeypatch):
    source, ds = shapes
    [rid] = _run(session, source, val_store=write_store(tmp_path / "s", ds, ds.ids[:3]))
    first = inspection.inspect_run(session, run_id=rid, settings=settings)
    files = list((inspection.cache_folder(settings) / f"run-{rid}").glob("*.json"))
    assert len(files) == 1
    import segcore.analysis._pipeline as pipeline

    def fail(*a, **k):
        raise AssertionError("analysed again although the cache is fresh")

    monkeypatch.setattr(pipeline, "_read_samples", fail)
    again = inspection.inspect_run(session, run_id=rid, settings=settings)
    assert again == first
    # other parameters are another report, in another file
    monkeypatch.undo()
    inspection.inspect_run(session, run_id=rid, settings=settings, boundary_px=1)
    assert len(list(files[0].parent.glob("*.json"))) == 2


def test_a_rewritten_store_is_never_served_stale(session, settings, shapes, tmp_path):
    source, ds = shapes
    ids = ds.ids[:3]
    path = tmp_path / "rewritten"
    [rid] = _run(session, source, val_store=write_store(path, ds, ids))
    assert inspection.inspect_run(session, run_id=rid, settings=settings).pooled.mean_iou == 1.0
    victim = next(i for i in ids if _class_pixels(ds, i, 2) > 0)
    time.sleep(0.01)
    write_store(path, ds, ids, erase={victim: 2})  # same path, same ids, new predictions
    report = inspection.inspect_run(session, run_id=rid, settings=settings)
    assert report.taxonomy.totals["under_prediction"] == _class_pixels(ds, victim, 2)


def test_ensemble_combines_member_stores_and_compare_counts_the_difference(session, settings, shapes, tmp_path):
    source, ds = shapes
    ids = ds.ids[:4]
    victim = next(i for i in ids if _class_pixels(ds, i, 1) > 0)
    n = _class_pixels(ds, victim, 1)
    [good] = _run(session, source, val_store=write_store(tmp_path / "good", ds, ids))
    [bad] = _run(session, source, val_store=write_store(tmp_path / "bad", ds, ids, erase={victim: 1}))
    ens = Ensemble(name="pair", method=EnsembleMethod.WEIGHTED, members=[
        {"kind": "run", "id": good, "weight": 3.0}, {"kind": "run", "id": bad, "weight": 1.0}])
    session.add(ens)
    session.flush()
    # 3:1 weights: the good member wins every pixel
    assert inspection.inspect_ensemble(session, ensemble_id=ens.id, settings=settings).pooled.mean_iou == 1.0
    cmp = inspection.compare(session, a=("run", good), b=("run", bad), settings=settings)
    c1 = next(c for c in cmp.classes if c.name == "class_1")
    assert c1.a_right_b_wrong == n and c1.b_right_a_wrong == 0
    assert cmp.a_right_b_wrong == n and cmp.top_images(1, better="a")[0].image_id == victim
    drawn, legend = inspection.compare_overlay(session, a=("run", good), b=("run", bad), image_id=victim,
                                               settings=settings, alpha=1.0)
    assert drawn.shape == (64, 64, 3) and len(legend) == 3
    a_colour = np.array(legend[0][1], np.uint8)
    assert int((drawn == a_colour).all(axis=-1).sum()) == n
    # run vs ensemble works the same way
    vs_ens = inspection.compare(session, a=("run", bad), b=("ensemble", ens.id), settings=settings)
    assert vs_ens.b_right_a_wrong == n


def test_group_union_of_fold_stores_has_per_fold_metrics(session, settings, shapes, tmp_path):
    from segcore.config import KFoldSplit
    from segcore.data.splits import fold_assignment

    source, ds = shapes
    split = {"kind": "kfold", "n_folds": 2, "fold": 0, "seed": 0}
    run_ids = _run(session, source, val_store=None, split=split, n_folds=2)
    folds = fold_assignment(ds, KFoldSplit(n_folds=2, fold=0, seed=0))
    for rid in run_ids:
        run = session.get(Run, rid)
        mine = [i for i in ds.ids if folds[i] == run.fold]
        run.val_store = write_store(tmp_path / f"fold{run.fold}", ds, mine)
    session.flush()
    group_id = session.get(Run, run_ids[0]).group_id
    report = inspection.inspect_group(session, group_id=group_id, settings=settings)
    assert report.n_images == len(ds.ids)
    assert sorted(f.fold for f in report.folds) == ["0", "1"]
    one = inspection.inspect_group(session, group_id=group_id, settings=settings, fold=1)
    assert one.n_images == sum(1 for v in folds.values() if v == 1)
    with pytest.raises(InvalidInput, match="fold 7"):
        inspection.inspect_group(session, group_id=group_id, settings=settings, fold=7)


def test_group_of_seeds_averages_each_image_once(session, settings, shapes, tmp_path):
    source, ds = shapes
    ids = ds.ids[:4]
    victim = next(i for i in ids if _class_pixels(ds, i, 3) > 0)
    run_ids = _run(session, source, val_store=None, seeds=(0, 1))
    first, second = (session.get(Run, rid) for rid in run_ids)
    first.val_store = write_store(tmp_path / "seed0", ds, ids)
    second.val_store = write_store(tmp_path / "seed1", ds, ids, erase={victim: 3})
    session.flush()
    report = inspection.inspect_group(session, group_id=first.group_id, settings=settings)
    assert report.n_images == 4 and report.folds == []
    # the mean of 1 and 0 ties with the background's 0.5; a tie goes to the lowest class, the background
    assert report.taxonomy.totals["under_prediction"] == _class_pixels(ds, victim, 3)
    target = inspection.describe(session, source=("group", first.group_id), settings=settings)
    assert len(target.stores) == 2


def test_overlay_renders_only_the_viewport_with_the_fixed_legend(session, settings, shapes, tmp_path):
    source, ds = shapes
    ids = ds.ids[:2]
    victim = next(i for i in ids if _class_pixels(ds, i, 1) > 0)
    [rid] = _run(session, source, val_store=write_store(tmp_path / "ov", ds, ids, erase={victim: 1}))
    full = inspection.overlay(session, run_id=rid, image_id=victim, settings=settings, alpha=1.0)
    assert (full.height, full.width) == (64, 64) and full.panels.errors.shape == (64, 64, 3)
    assert [rgb for _, rgb in full.legend] == [(0, 68, 136), (221, 170, 51), (187, 85, 102)]
    assert int((full.panels.error_codes == 1).sum()) == _class_pixels(ds, victim, 1)
    zoom = inspection.overlay(session, run_id=rid, image_id=victim, settings=settings, region=(0, 0, 32, 48),
                              downscale=2)
    assert zoom.panels.errors.shape == (16, 24, 3) and zoom.region == (0, 0, 32, 48)
    np.testing.assert_array_equal(zoom.panels.error_codes, full.panels.error_codes[0:32:2, 0:48:2])
    hidden = inspection.overlay(session, run_id=rid, image_id=victim, settings=settings, show_classes=["class_2"])
    assert not (hidden.panels.error_codes == 1).any()
    with pytest.raises(InvalidInput, match="not among"):
        inspection.overlay(session, run_id=rid, image_id="nope", settings=settings)
    with pytest.raises(InvalidInput, match="unknown class"):
        inspection.overlay(session, run_id=rid, image_id=victim, settings=settings, show_classes=["cat"])


def test_clear_errors(session, settings, shapes, tmp_path):
    source, ds = shapes
    with pytest.raises(NotFound, match="run 999"):
        inspection.inspect_run(session, run_id=999, settings=settings)
    [queued] = _run(session, source, val_store=None, status=RunStatus.RUNNING)
    with pytest.raises(InvalidInput, match="running.*finishes"):
        inspection.inspect_run(session, run_id=queued, settings=settings)
    [no_store] = _run(session, source, val_store=None)
    with pytest.raises(InvalidInput, match="no stored validation predictions yet"):
        inspection.inspect_run(session, run_id=no_store, settings=settings)
    [gone] = _run(session, source, val_store=str(tmp_path / "never-written"))
    with pytest.raises(InvalidInput, match="cannot be read.*moved or deleted"):
        inspection.inspect_run(session, run_id=gone, settings=settings)
    [ok] = _run(session, source, val_store=write_store(tmp_path / "ok", ds, ds.ids[:2]))
    with pytest.raises(InvalidInput, match="unknown classes"):
        inspection.inspect_run(session, run_id=ok, settings=settings, classes=["dog"])
    with pytest.raises(InvalidInput, match="no k-fold split"):
        inspection.inspect_run(session, run_id=ok, settings=settings, fold=0)


def test_a_vanished_dataset_is_reported(session, settings, tmp_path):
    import shutil

    from segcore.data.formats import open_dataset
    from segcore.data.synthetic import make_synthetic_coco

    source = make_synthetic_coco(tmp_path / "doomed", num_images=4, num_classes=3, size=32, seed=1)
    ds = open_dataset(source, classes=CLASSES)
    [rid] = _run(session, source, val_store=write_store(tmp_path / "d", ds, ds.ids[:2]))
    shutil.rmtree(tmp_path / "doomed")
    with pytest.raises(InvalidInput, match="ground truth.*cannot be read|dataset"):
        inspection.inspect_run(session, run_id=rid, settings=settings)


@pytest.mark.slow
def test_a_run_trained_for_real(session, settings, trained_run):
    """The validation store ``fit`` wrote: the analysis agrees with the run's own best mIoU."""
    result = trained_run["result"]
    assert result.val_store is not None
    from worker.services import experiments

    cfg = trained_run["config"].model_dump(mode="json")
    exp = experiments.create_experiment(session, actor=None, name="real", config=cfg)
    run = session.get(Run, exp.run_ids[0])
    run.status, run.val_store = RunStatus.SUCCEEDED, str(result.val_store)
    session.flush()
    report = inspection.inspect_run(session, run_id=run.id, settings=settings)
    from segcore.inference.store import ProbabilityStore

    assert [im.image_id for im in report.images] == list(ProbabilityStore.open(result.val_store).ids)
    assert report.pooled.mean_iou == pytest.approx(result.best_metrics["miou"], abs=0.02)
    shares = report.taxonomy.shares
    assert sum(v for v in shares.values() if v is not None) == pytest.approx(1.0)
