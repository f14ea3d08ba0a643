"""TorchSegmentationDataset: tensors, DataLoader with and without workers, pseudo-labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from segcore.config import ExperimentConfig
from segcore.data.dataset import (
    TorchSegmentationDataset,
    make_eval_dataset,
    make_train_dataset,
    open_pseudo_labels,
    pseudo_label_datasets,
)
from segcore.data.formats import open_dataset
from segcore.data.transforms import build_eval_transform, build_train_transform
from segcore.errors import DatasetError

CLASSES = ["bg", "a", "b"]


def cfg_for(source, **data) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {"data": {"source": source.model_dump(), "classes": CLASSES, "crop_size": [32, 32], **data},
         "augmentation": {"preset": "basic", "mixing": {"copy_paste_p": 0.5}}}
    )


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_batches(mask_source, num_workers: int) -> None:
    ds = open_dataset(mask_source, classes=CLASSES, task="multiclass")
    cfg = cfg_for(mask_source)
    train = make_train_dataset(cfg, ds, ds.ids[:6], seed=0)
    loader = DataLoader(train, batch_size=3, num_workers=num_workers, shuffle=False)
    batches = list(loader)
    assert len(batches) == 2
    b = batches[0]
    assert b["image"].shape == (3, 3, 32, 32) and b["image"].dtype == torch.float32
    assert b["mask"].shape == (3, 32, 32) and b["mask"].dtype == torch.int64
    assert set(b["mask"].unique().tolist()) <= {0, 1, 2, 255}
    assert b["id"] == ds.ids[:3] and b["orig_size"].tolist() == [[64, 64]] * 3


def test_workers_do_not_repeat_augmentations(mask_source) -> None:
    ds = open_dataset(mask_source, classes=CLASSES, task="multiclass")
    cfg = cfg_for(mask_source)
    same = [ds.ids[0]] * 4
    train = TorchSegmentationDataset(ds, same, build_train_transform(cfg, seed=0))
    loader = DataLoader(train, batch_size=1, num_workers=2, shuffle=False)
    images = [b["image"] for b in loader]
    # items 0 and 1 go to different workers; identical seeds would make them equal
    assert not torch.equal(images[0], images[1])


def test_eval_and_test_items(coco_source) -> None:
    ds = open_dataset(coco_source, classes=None, task="multiclass")
    cfg = ExperimentConfig.model_validate(
        {"data": {"source": coco_source.model_dump(), "classes": ds.classes, "image_size": [32, 32]}}
    )
    val = make_eval_dataset(cfg, ds, ds.ids[:2])
    item = val[0]
    assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (32, 32)
    test = make_eval_dataset(cfg, ds, ds.test_ids, test=True)
    item = test[1]
    assert "mask" not in item and item["id"] == ds.test_ids[1] and item["orig_size"].tolist() == [64, 64]


def test_multilabel_items(multilabel_source) -> None:
    classes = ["bone", "joint", "implant"]
    ds = open_dataset(multilabel_source, classes=classes, task="multilabel")
    cfg = ExperimentConfig.model_validate(
        {"data": {"source": multilabel_source.model_dump(), "classes": classes, "task": "multilabel"},
         "loss": "bce", "augmentation": {"preset": "xray"}}
    )
    item = TorchSegmentationDataset(ds, ds.ids, build_train_transform(cfg, seed=0))[0]
    assert item["mask"].shape == (3, 64, 64) and item["mask"].dtype == torch.float32
    assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}


def test_no_transform_scales_to_unit(mask_source) -> None:
    ds = open_dataset(mask_source, classes=CLASSES, task="multiclass")
    item = TorchSegmentationDataset(ds, ds.ids[:1])[0]
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0


def test_pseudo_labels_are_appended(tmp_path: Path, mask_source, write_png) -> None:
    ds = open_dataset(mask_source, classes=CLASSES, task="multiclass")
    pseudo_root = tmp_path / "pseudo_round1"
    for stem in ("u1", "u2"):
        write_png(pseudo_root / "images" / f"{stem}.png", np.zeros((64, 64, 3), np.uint8))
        m = np.full((64, 64), 255, np.uint8)
        m[:8, :8] = 2
        write_png(pseudo_root / "masks" / f"{stem}.png", m)
    cfg = cfg_for(mask_source, pseudo_labels=["pseudo_round1"])
    train = make_train_dataset(cfg, ds, ds.ids[:3], dataset_root=tmp_path, seed=0)
    assert len(train) == 5 and train.ids[3:] == ["pseudo:0:u1", "pseudo:0:u2"]
    item = train[4]
    assert item["id"] == "pseudo:0:u2" and set(item["mask"].unique().tolist()) <= {0, 1, 2, 255}
    eval_cfg = build_eval_transform(cfg)
    plain = TorchSegmentationDataset(ds, [], eval_cfg, pseudo=open_pseudo_labels(
        [pseudo_root], classes=CLASSES, ignore_index=255))
    assert (plain[0]["mask"] == 255).sum() == 64 * 64 - 64
    extra = pseudo_label_datasets(cfg, eval_cfg, dataset_root=tmp_path)
    assert [d.ids for d in extra] == [["u1", "u2"]]
    assert pseudo_label_datasets(cfg_for(mask_source), eval_cfg) == []
    with pytest.raises(DatasetError, match="cannot open pseudo-label dataset"):
        open_pseudo_labels([tmp_path / "missing"], classes=CLASSES)


def test_unknown_ids_rejected(mask_source) -> None:
    ds = open_dataset(mask_source, classes=CLASSES, task="multiclass")
    with pytest.raises(DatasetError, match="not in the dataset"):
        TorchSegmentationDataset(ds, ["nope"])


def test_main_process_follows_numpy_seed(mask_source) -> None:
    ds = open_dataset(mask_source, classes=CLASSES, task="multiclass")
    cfg = cfg_for(mask_source)
    train = TorchSegmentationDataset(ds, ds.ids[:2], build_train_transform(cfg), cfg=cfg)
    np.random.seed(3)
    a = [train[i]["image"] for i in range(2)]
    np.random.seed(3)
    b = [train[i]["image"] for i in range(2)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_config_must_match_dataset(mask_source) -> None:
    ds = open_dataset(mask_source, classes=CLASSES, task="multiclass")
    other = ExperimentConfig.model_validate({"data": {"source": mask_source.model_dump(), "classes": ["x", "y"]}})
    with pytest.raises(DatasetError, match="data.classes"):
        TorchSegmentationDataset(ds, ds.ids, cfg=other)
