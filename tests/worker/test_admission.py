"""The submit-time check (validate_submission) and where data may live (confinement), through the services.

Every test builds its own settings with ``extra_dataset_roots=[]``: only ``<tmp>/datasets`` (and the
artifact root's ``pseudo`` folder) may hold data, and ``<tmp>/outside`` stands for the rest of the server.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from segcore.data.synthetic import make_synthetic_mask_folder
from worker.db.models import AuditEvent, Dataset, Experiment, Run
from worker.errors import InvalidFields, InvalidInput, PermissionDenied
from worker.services import admission, datasets, experiments, members
from worker.services.confinement import DataRoots
from worker.settings import get_settings

CLASSES = ["background", "class_1", "class_2"]
SECRET = "AWS_SECRET_ACCESS_KEY=abc123\npassword: hunter2\n"


@pytest.fixture
def place(tmp_path: Path) -> SimpleNamespace:
    """A dataset root with one registered-ready mask-folder dataset (``ds``), and a folder outside it."""
    root, outside = tmp_path / "datasets", tmp_path / "outside"
    outside.mkdir()
    make_synthetic_mask_folder(root / "ds", num_images=8, num_classes=3, write_splits=True, num_test_images=2)
    settings = get_settings(home=tmp_path / "home", dataset_root=str(root), artifact_root=str(tmp_path / "art"),
                            extra_dataset_roots=[], remote_dataset_prefixes=["s3://team-data/"])
    return SimpleNamespace(root=root, outside=outside, roots=DataRoots.from_settings(settings), tmp=tmp_path)


def source(root: str = "ds", **fields: Any) -> dict[str, Any]:
    return {"format": "mask_folder", "root": root, "test_images": "test", "ignore_value": 255, **fields}


def config(src: dict[str, Any] | None = None, **data: Any) -> dict[str, Any]:
    return {"name": "t", "data": {"source": src or source(), "classes": CLASSES, **data},
            "model": {"arch": "Unet", "encoder": "resnet18"}, "training": {"epochs": 2, "batch_size": 2}}


def set_path(cfg: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    return experiments.set_config_path(cfg, dotted, value)


def submit(session: Any, place: SimpleNamespace, cfg: Any, **kwargs: Any) -> Any:
    return admission.validate_submission(session, actor=kwargs.pop("actor", None), config=cfg, roots=place.roots,
                                         **kwargs)


def refused(session: Any, place: SimpleNamespace, cfg: Any, field: str, **kwargs: Any) -> InvalidFields:
    """Refused at submit with ``field`` named; nothing written by create_experiment either."""
    with pytest.raises(InvalidFields) as info:
        submit(session, place, cfg, **kwargs)
    assert field in info.value.fields, info.value.problems
    before = [session.scalar(sa.select(sa.func.count()).select_from(m)) for m in (Experiment, Run, AuditEvent)]
    with pytest.raises(InvalidInput):
        experiments.create_experiment(session, actor=kwargs.get("actor"), config=cfg, roots=place.roots,
                                      **{k: v for k, v in kwargs.items() if k != "actor"})
    session.flush()
    assert [session.scalar(sa.select(sa.func.count()).select_from(m)) for m in (Experiment, Run, AuditEvent)] == before
    return info.value


@pytest.fixture
def dataset(session: Any, place: SimpleNamespace) -> Any:
    return datasets.register_dataset(session, actor=None, name="ds", source=source(), classes=CLASSES,
                                     check_pixels=False, roots=place.roots)


def test_a_valid_submission_inside_the_root_passes(session, place, dataset) -> None:
    split = {"kind": "predefined", "train": "splits/train.txt", "val": "splits/val.txt"}
    cfg = submit(session, place, config(split=split), dataset_id=dataset.id, n_folds=1)
    assert cfg.data.split.kind == "predefined"
    absolute = source(str(place.root / "ds"))
    submit(session, place, config(absolute), dataset_id=dataset.id, n_folds=4, seeds=[0, 1])


# ------------------------------------------------------------------ bounds


@pytest.mark.parametrize(("dotted", "value", "field"), [
    ("data.image_size", [100000, 100000], "data.image_size"),
    ("data.crop_size", [8224, 8224], "data.crop_size"),
    ("training.epochs", 1e20, "training.epochs"),
    ("training.epochs", 10_001, "training.epochs"),
    ("training.batch_size", 4097, "training.batch_size"),
    ("training.accumulate", 5000, "training.accumulate"),
    ("training.seed", -1, "training.seed"),
    ("training.steps_per_epoch", 10**12, "training.steps_per_epoch"),
    ("training.devices", list(range(100)), "training.devices"),
    ("data.split", {"kind": "kfold", "n_folds": 21}, "data.split.n_folds"),
    ("data.split", {"kind": "holdout", "seed": 2**40}, "data.split.seed"),
    ("data.ignore_index", 256, "data.ignore_index"),
    ("optimizer.lr", float("nan"), "optimizer.lr"),
    ("optimizer.weight_decay", float("inf"), "optimizer.weight_decay"),
    ("model.in_channels", 1000, "model.in_channels"),
    ("model.params", {"decoder_channels": [10**9]}, "model.params"),
    ("augmentation.mixing.copy_paste_bank_size", 10**9, "augmentation.mixing.copy_paste_bank_size"),
    ("augmentation.transforms", [{"name": "RandomCrop", "params": {"height": 10**5, "width": 10**5}}],
     "augmentation.transforms.0.params"),
    ("scheduler.restart_epochs", 10**7, "scheduler.restart_epochs"),
    ("tags", [f"t{i}" for i in range(60)], "tags"),
    ("note", "x" * 20_000, "note"),
])
def test_each_bound_gets_a_field_level_message(session, place, dotted, value, field) -> None:
    err = refused(session, place, set_path(config(), dotted, value), field)
    assert "OverflowError" not in str(err) and "SQLite" not in str(err) and "INTEGER" not in str(err)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"n_folds": 21}, "n_folds"),
    ({"seeds": list(range(101))}, "seeds"),
    ({"seeds": [-1]}, "seeds"),
    ({"grid": {"axis": "optimizer.lr", "values": [10.0**-i for i in range(1, 66)]}}, "grid.values"),
    ({"n_folds": 20, "seeds": list(range(13))}, "n_folds"),  # 260 runs
])
def test_folds_seeds_and_grids_are_bounded(session, place, kwargs, field) -> None:
    refused(session, place, config(), field, **kwargs)


# ------------------------------------------------------------------ paths


def _escape_link(place: SimpleNamespace) -> str:
    link = place.root / "ds" / "escape"
    if not link.exists():
        os.symlink(place.outside, link)
    return "escape"


HOSTILE = ["../../etc", "/etc", "outside", "symlink", "s3://other-bucket/data", "s3://team-data/../secrets"]


def _value(place: SimpleNamespace, kind: str) -> str:
    return {"outside": str(place.outside), "symlink": _escape_link(place)}.get(kind, kind)


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("dotted", ["data.source.root", "data.source.images", "data.source.masks",
                                    "data.source.test_images", "data.split.train", "data.split.val"])
def test_every_path_field_stays_inside_the_roots(session, place, dotted, kind) -> None:
    cfg = config(split={"kind": "predefined"})
    value = _value(place, kind)
    if dotted == "data.source.root" and kind == "symlink":
        value = "ds/escape"
    err = refused(session, place, set_path(cfg, dotted, value), dotted)
    message = err.fields[dotted]
    assert str(place.root) in message and "s3://team-data" in message  # the allowed places are named
    assert str(place.outside.resolve()) not in message.replace(repr(value)[1:-1], "")  # where a link points: never


def test_paths_inside_the_roots_are_accepted(session, place) -> None:
    (place.root / "ds" / "lists").mkdir()
    (place.root / "ds" / "lists" / "t.txt").write_text("img_0001\nimg_0002\n")
    (place.root / "ds" / "lists" / "v.txt").write_text("img_0003\n")
    cfg = config(source(str(place.root / "ds"), images="./images", masks=str(place.root / "ds" / "masks")),
                 split={"kind": "predefined", "train": "lists/t.txt", "val": str(place.root / "ds/lists/v.txt")})
    assert submit(session, place, cfg).data.split.kind == "predefined"
    remote = config(source("s3://team-data/ds"))
    assert submit(session, place, remote).data.source.root == "s3://team-data/ds"


def test_annotations_pseudo_labels_and_weights_are_confined(session, place) -> None:
    coco = {"format": "coco", "root": "ds", "annotations": "../../../../etc/passwd"}
    refused(session, place, config(coco), "data.source.annotations")
    pseudo = str(place.tmp / "art" / "pseudo" / "3")
    assert submit(session, place, config(pseudo_labels=[pseudo])).data.pseudo_labels
    submit(session, place, config(pseudo_labels=[str(place.root / "ds")]))
    refused(session, place, config(pseudo_labels=[str(place.tmp / "art" / "runs")]), "data.pseudo_labels.0")
    refused(session, place, config(pseudo_labels=["/etc"]), "data.pseudo_labels.0")
    weights = str(place.root / "weights" / "r18.safetensors")
    submit(session, place, set_path(config(), "model.encoder_weights_path", weights))
    for bad in ("/etc/passwd", "weights/r18.safetensors", "s3://team-data/w.pt"):
        refused(session, place, set_path(config(), "model.encoder_weights_path", bad), "model.encoder_weights_path")


def test_a_grid_value_that_leaves_the_roots_is_refused(session, place) -> None:
    grid = {"axis": "data.source.root", "values": ["ds", "/etc"]}
    err = refused(session, place, config(), "data.source.root", grid=grid)
    assert "grid value '/etc'" in err.fields["data.source.root"]


# ------------------------------------------------------------------ what the worker would refuse


def test_what_the_worker_would_refuse_on_this_dataset(session, place, dataset) -> None:
    ds = dataset.id
    refused(session, place, config(classes=["a", "b"]), "data.classes", dataset_id=ds)
    refused(session, place, set_path(config(task="multilabel"), "loss", "dice"), "data.task", dataset_id=ds)
    make_synthetic_mask_folder(place.root / "other", num_images=4, num_classes=3)
    refused(session, place, config(source("other")), "data.source", dataset_id=ds)
    refused(session, place, config(fingerprint="0" * 64), "data.fingerprint", dataset_id=ds)
    refused(session, place, config(), "n_folds", dataset_id=ds, n_folds=9)  # 8 images
    refused(session, place, config(split={"kind": "kfold", "n_folds": 9}), "data.split.n_folds", dataset_id=ds)
    stats = {"num_images": 8, "image_sizes": {"64x64": 4, "96x64": 4}}
    datasets.set_dataset_statistics(session, actor=None, dataset_id=ds, statistics=stats)
    err = refused(session, place, config(), "data.image_size", dataset_id=ds)
    assert "64x64" in err.fields["data.image_size"] and "batch_size" in err.fields["data.image_size"]
    submit(session, place, config(crop_size=[64, 64]), dataset_id=ds)
    submit(session, place, set_path(config(), "training.batch_size", 1), dataset_id=ds)
    datasets.set_dataset_statistics(session, actor=None, dataset_id=ds, statistics={"num_images": 1})
    refused(session, place, config(), "data.split", dataset_id=ds)


def test_what_the_worker_would_refuse_on_any_dataset(session, place) -> None:
    multilabel = set_path(config(task="multilabel"), "loss", "dice")
    refused(session, place, multilabel, "data.task")  # a mask folder is multiclass
    ml = {"format": "multilabel_json", "root": "ds"}
    refused(session, place, set_path(config(ml, task="multilabel", pseudo_labels=[str(place.tmp / "art/pseudo/1")]),
                                     "loss", "dice"), "data.pseudo_labels")
    refused(session, place, set_path(config(), "training.device", "tpu:0"), "training.device")
    refused(session, place, config(split={"kind": "holdout", "group_key": "(("}), "data.split.group_key")
    lists = place.root / "ds" / "splits"
    (lists / "val.txt").write_text("")
    refused(session, place, config(split={"kind": "predefined"}), "data.split.val")
    (lists / "val.txt").write_text("img_0001\n")
    refused(session, place, config(split={"kind": "predefined"}), "data.split.val")  # also in train
    refused(session, place, config(split={"kind": "predefined", "train": "splits/none.txt"}), "data.split.train")


def test_a_viewer_is_refused(session, place) -> None:
    members.create_member(session, actor=None, name="ada")
    viewer = members.create_member(session, actor=1, name="vic", role="viewer").id
    with pytest.raises(PermissionDenied, match="viewers cannot queue experiments"):
        submit(session, place, config(), actor=viewer)
    with pytest.raises(PermissionDenied):
        experiments.create_experiment(session, actor=viewer, config=config(), roots=place.roots)


# ------------------------------------------------------------------ the holes, reproduced


def test_a_secret_named_as_a_split_list_is_refused_and_never_quoted(session, place, dataset) -> None:
    """Hole 2: ``data.split.train: /some/secret.env`` printed the file's contents in the run's error."""
    secret = place.outside / "secret.env"
    secret.write_text(SECRET)
    split = {"kind": "predefined", "train": str(secret), "val": "splits/val.txt"}
    err = refused(session, place, config(split=split), "data.split.train", dataset_id=dataset.id)
    assert "abc123" not in str(err) and "hunter2" not in str(err)
    inside = place.root / "ds" / "secret.env"  # inside a root, it is still not a split list
    inside.write_text(SECRET)
    split["train"] = "secret.env"
    err = refused(session, place, config(split=split), "data.split.train", dataset_id=dataset.id)
    assert "does not look like a split list" in str(err) and "abc123" not in str(err) and "hunter2" not in str(err)
    from segcore.config import MaskFolderSource, PredefinedSplit
    from segcore.data.formats import open_dataset
    from segcore.data.splits import split_ids
    from segcore.errors import DatasetError

    opened = open_dataset(MaskFolderSource(root="ds", ignore_value=255), classes=CLASSES, task="multiclass",
                          dataset_root=str(place.root))
    with pytest.raises(DatasetError) as info:  # what the worker's split says, were the file given to it
        split_ids(opened, PredefinedSplit(train="secret.env", val="splits/val.txt"))
    assert "abc123" not in str(info.value) and "does not look like a split list" in str(info.value)


@pytest.mark.parametrize(("field", "value", "missing"), [
    ("root", "../../etc", "../../no-such-folder-x"),
    ("root", "/etc", "/no-such-folder-x"),
    ("images", "../../../../etc", "../../../../no-such-folder-x"),
])
def test_dataset_paths_outside_the_roots_are_refused_alike_whether_they_exist_or_not(
    session, place, field, value, missing
) -> None:
    """Hole 3: ``root: ../../etc``, ``root: /etc`` and ``images: ../../../../etc`` were accepted."""
    messages = []
    for v in (value, missing):
        src = source(**{field: v})
        with pytest.raises(InvalidInput) as reg:
            datasets.register_dataset(session, actor=None, name="x", source=src, classes=CLASSES, roots=place.roots)
        err = refused(session, place, config(src), f"data.source.{field}")
        messages.append((str(reg.value).replace(repr(v), "<v>"), err.fields[f"data.source.{field}"].replace(repr(v),
                                                                                                             "<v>")))
    assert messages[0] == messages[1]
    assert session.scalar(sa.select(sa.func.count()).select_from(Dataset)) == 0


def test_a_symlink_out_of_the_root_is_refused_at_registration(session, place) -> None:
    os.symlink(place.outside, place.root / "link")
    with pytest.raises(InvalidInput, match=r"source\.root"):
        datasets.register_dataset(session, actor=None, name="x", source=source("link"), classes=CLASSES,
                                  roots=place.roots)
    with pytest.raises(InvalidInput, match=r"source\.masks"):
        datasets.register_dataset(session, actor=None, name="x", source=source(masks="../link"), classes=CLASSES,
                                  roots=place.roots)


def test_huge_sizes_and_epochs_get_field_messages_not_database_errors(session, place) -> None:
    """Hole 4: ``image_size: [100000, 100000]`` was queued; ``epochs: 1e20`` failed with an OverflowError."""
    text = "name: t\ndata:\n  source: {format: mask_folder, root: ds}\n  classes: [a, b]\n" \
           "  image_size: [100000, 100000]\ntraining: {epochs: 1e20}\n"
    err = refused(session, place, text, "data.image_size")
    assert "training.epochs" in err.fields and "at most 8192" in err.fields["data.image_size"]
    err = refused(session, place, json.dumps(set_path(config(), "training.epochs", 1e20)), "training.epochs")
    assert "OverflowError" not in str(err) and "INTEGER" not in str(err)


def test_the_worker_checks_the_paths_again_before_a_run(tmp_path: Path, place) -> None:
    """A run queued while its folder was allowed fails at its start once the settings no longer allow it."""
    from worker.db.session import session_scope
    from worker.execution.context import WorkerContext
    from worker.execution.runner import RunOutcome, execute_run

    from .queue_fixtures import make_settings, migrated

    settings = make_settings(tmp_path / "w", database_url=f"sqlite:///{tmp_path / 'w.db'}", redis_url=None,
                             dataset_root=str(place.root), extra_dataset_roots=[])
    factory = migrated(settings)
    wide = DataRoots.from_settings(get_settings(home=tmp_path / "w", dataset_root=str(place.root),
                                                extra_dataset_roots=[str(place.outside)]))
    make_synthetic_mask_folder(place.outside / "ds", num_images=4, num_classes=3)
    with session_scope(factory) as s:
        run_id = experiments.create_experiment(s, actor=None, config=config(source(str(place.outside / "ds"))),
                                               roots=wide).run_ids[0]
    ctx = WorkerContext.create(settings, worker_name="w/cpu", device="cpu")
    try:
        assert execute_run(ctx, run_id=run_id) is RunOutcome.FAILED
    finally:
        ctx.factory.kw["bind"].dispose()
    with session_scope(factory) as s:
        message = s.get(Run, run_id).error_message
    assert "data.source.root" in message and str(place.root) in message
    factory.kw["bind"].dispose()
