"""Fixing a registered dataset: a test folder added later, a new name, corrected classes, and the
test prediction that is refused at once (not on the worker) while the dataset has no test images."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from segcore.data.synthetic import make_synthetic_coco
from worker.db.models import AuditEvent, Job
from worker.errors import Conflict, InvalidInput, PermissionDenied
from worker.services import datasets, experiments, jobs, members

CLASSES = ["background", "c1", "c2"]


@pytest.fixture
def world(session, tmp_path):
    ada = members.create_member(session, actor=None, name="ada").id  # the first member: an admin
    bob = members.create_member(session, actor=ada, name="bob").id
    carl = members.create_member(session, actor=ada, name="carl").id
    source = make_synthetic_coco(tmp_path / "shapes", num_images=8, num_classes=2, size=32, num_test_images=2)
    (tmp_path / "shapes" / "empty").mkdir()
    ds = datasets.register_dataset(session, actor=bob, name="shapes",
                                   source=source.model_copy(update={"test_images": None}),
                                   classes=CLASSES, check_pixels=False)
    return {"ada": ada, "bob": bob, "carl": carl, "ds": ds, "source": source}


def _config(world) -> dict:
    return {
        "name": "unet",
        "data": {"source": world["ds"].source, "classes": CLASSES, "image_size": [32, 32],
                 "split": {"kind": "holdout", "val_fraction": 0.25, "seed": 0}},
        "model": {"arch": "Unet", "encoder": "resnet18"},
        "training": {"epochs": 1, "batch_size": 2},
    }


def test_a_test_prediction_is_refused_until_the_dataset_has_test_images(session, world):
    run_id = experiments.create_experiment(session, actor=world["bob"], config=_config(world),
                                           dataset_id=world["ds"].id).run_ids[0]
    with pytest.raises(InvalidInput, match="dataset 'shapes' has no test images.*Datasets page, Edit"):
        jobs.create_job(session, actor=world["bob"], kind="predict", target={"run_ids": [run_id]},
                        params={"split": "test"})
    assert session.scalar(sa.select(sa.func.count(Job.id))) == 0

    with pytest.raises(InvalidInput, match="holds no images"):
        datasets.update_dataset(session, actor=world["bob"], dataset_id=world["ds"].id, test_images="empty")
    updated = datasets.update_dataset(session, actor=world["bob"], dataset_id=world["ds"].id, test_images="test")
    assert updated.source["test_images"] == "test" and updated.report["num_test_images"] == 2
    job = jobs.create_job(session, actor=world["bob"], kind="predict", target={"run_ids": [run_id]},
                          params={"split": "test"})
    assert job.id is not None
    # a validation prediction never needed test images
    assert jobs.create_job(session, actor=world["bob"], kind="predict", target={"run_ids": [run_id]},
                           params={"split": "val"}).id != job.id


def test_a_test_folder_must_stay_inside_the_dataset_roots(session, world):
    with pytest.raises(InvalidInput, match="not inside the folders data may be read from"):
        datasets.update_dataset(session, actor=world["bob"], dataset_id=world["ds"].id,
                                test_images="../../../../etc")
    assert datasets.get_dataset(session, dataset_id=world["ds"].id).source.get("test_images") is None


def test_rename_and_classes_while_no_experiment_uses_them(session, world):
    ds_id = world["ds"].id
    other = make_synthetic_coco(Path(world["source"].root).parent / "other", num_images=4, num_classes=2, size=32)
    datasets.register_dataset(session, actor=world["bob"], name="other", source=other, classes=CLASSES,
                              check_pixels=False)
    with pytest.raises(Conflict, match="registered already"):
        datasets.update_dataset(session, actor=world["bob"], dataset_id=ds_id, name="other")
    renamed = datasets.update_dataset(session, actor=world["bob"], dataset_id=ds_id, name="shapes-v2",
                                      classes=["bg", "circle", "square"])
    assert renamed.name == "shapes-v2" and renamed.classes == ["bg", "circle", "square"]
    with pytest.raises(InvalidInput, match="classes were not changed"):
        datasets.update_dataset(session, actor=world["bob"], dataset_id=ds_id, classes=["only-one"])

    config = _config(world) | {"data": _config(world)["data"] | {"classes": ["bg", "circle", "square"]}}
    experiments.create_experiment(session, actor=world["bob"], config=config, dataset_id=ds_id)
    with pytest.raises(Conflict, match="1 experiment"):
        datasets.update_dataset(session, actor=world["bob"], dataset_id=ds_id, classes=["a", "b", "c"])
    events = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "dataset.update")).all()
    assert [e.detail["name"]["new"] for e in events] == ["shapes-v2"] and events[0].actor_id == world["bob"]


def test_only_the_owner_or_an_admin_edits_a_dataset(session, world):
    with pytest.raises(PermissionDenied, match="it is bob's"):
        datasets.update_dataset(session, actor=world["carl"], dataset_id=world["ds"].id, name="mine")
    assert datasets.update_dataset(session, actor=world["ada"], dataset_id=world["ds"].id, name="fixed").name == "fixed"
