"""Split properties: disjoint, covering, stratified, grouped, deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segcore.config import HoldoutSplit, KFoldSplit, MaskFolderSource, PredefinedSplit
from segcore.data.formats import open_dataset
from segcore.data.splits import fold_assignment, group_ids, split_ids, stratified_assignment
from segcore.data.synthetic import make_synthetic_coco
from segcore.errors import ConfigError, DatasetError


@pytest.fixture
def imbalanced(tmp_path: Path):
    src = make_synthetic_coco(tmp_path / "c", num_images=30, num_classes=5, imbalance=0.4, num_test_images=0)
    return open_dataset(src, classes=None, task="multiclass")


def test_kfold_disjoint_covering_deterministic(imbalanced) -> None:
    ids = imbalanced.ids
    vals = []
    for fold in range(5):
        train, val = split_ids(imbalanced, KFoldSplit(n_folds=5, fold=fold, seed=3))
        assert set(train).isdisjoint(val) and sorted(train + val) == ids
        vals.append(set(val))
        assert split_ids(imbalanced, KFoldSplit(n_folds=5, fold=fold, seed=3)) == (train, val)
    assert set().union(*vals) == set(ids)
    assert sum(len(v) for v in vals) == len(ids)
    assert all(4 <= len(v) <= 8 for v in vals)
    assert fold_assignment(imbalanced, KFoldSplit(n_folds=5, seed=3)) != fold_assignment(
        imbalanced, KFoldSplit(n_folds=5, seed=4)
    )


def test_kfold_keeps_rare_class_in_each_fold_when_possible(imbalanced) -> None:
    presence = imbalanced.class_presence()
    counts = presence.sum(axis=0)
    folds = fold_assignment(imbalanced, KFoldSplit(n_folds=3, seed=0))
    fold_of = np.array([folds[i] for i in imbalanced.ids])
    for c in range(1, imbalanced.num_classes):
        per_fold = [presence[fold_of == f, c].sum() for f in range(3)]
        assert sum(per_fold) == counts[c]
        if counts[c] >= 3:
            assert min(per_fold) >= 1, (c, per_fold)
        assert max(per_fold) - min(per_fold) <= max(2, counts[c] // 2), (c, per_fold)


def test_stratified_assignment_spreads_a_rare_label() -> None:
    labels = np.zeros((20, 2), dtype=np.int64)
    labels[:4, 1] = 1  # rare label in 4 of 20 groups
    labels[:, 0] = 1
    fold = stratified_assignment(labels, np.ones(20, dtype=np.int64), [0.25] * 4, seed=0)
    assert sorted(np.bincount(fold[:4], minlength=4)) == [1, 1, 1, 1]
    assert np.bincount(fold, minlength=4).tolist() == [5, 5, 5, 5]


def test_holdout_fraction_and_rare_class(imbalanced) -> None:
    train, val = split_ids(imbalanced, HoldoutSplit(val_fraction=0.2, seed=1))
    assert set(train).isdisjoint(val) and sorted(train + val) == imbalanced.ids
    assert 4 <= len(val) <= 8
    presence = imbalanced.class_presence()
    index = {i: n for n, i in enumerate(imbalanced.ids)}
    for c in range(1, imbalanced.num_classes):
        if presence[:, c].sum() >= 2:
            assert presence[[index[i] for i in val], c].any(), f"class {c} missing from val"
            assert presence[[index[i] for i in train], c].any(), f"class {c} missing from train"
    assert split_ids(imbalanced, HoldoutSplit(val_fraction=0.2, seed=1)) == (train, val)


def test_unstratified_holdout(imbalanced) -> None:
    train, val = split_ids(imbalanced, HoldoutSplit(val_fraction=0.3, stratify=False, seed=0))
    assert len(val) == 9 and sorted(train + val) == imbalanced.ids


def test_group_key_keeps_groups_together(tmp_path: Path, write_png) -> None:
    root = tmp_path / "g"
    for patient in range(6):
        for slice_ in range(3):
            stem = f"p{patient}_s{slice_}"
            write_png(root / "images" / f"{stem}.png", np.zeros((4, 4, 3), np.uint8))
            write_png(root / "masks" / f"{stem}.png", np.full((4, 4), patient % 2, np.uint8))
    ds = open_dataset(MaskFolderSource(root=str(root)), classes=["a", "b"], task="multiclass")
    for split in (KFoldSplit(n_folds=3, group_key=r"^(p\d+)_"), HoldoutSplit(val_fraction=0.34, group_key=r"^(p\d+)_")):
        train, val = split_ids(ds, split)
        train_groups = {i.split("_")[0] for i in train}
        val_groups = {i.split("_")[0] for i in val}
        assert train_groups.isdisjoint(val_groups) and sorted(train + val) == ds.ids
    folds = fold_assignment(ds, KFoldSplit(n_folds=3, group_key=r"^(p\d+)_"))
    for patient in range(6):
        assert len({folds[f"p{patient}_s{s}"] for s in range(3)}) == 1


def test_group_key_errors() -> None:
    with pytest.raises(ConfigError, match="regular expression"):
        group_ids(["a"], "(")
    with pytest.raises(DatasetError, match="does not match 1 image ids"):
        group_ids(["p1_a", "zzz"], r"^(p\d+)_")


def test_predefined_split(mask_source) -> None:
    ds = open_dataset(mask_source, classes=["bg", "a", "b"], task="multiclass")
    train, val = split_ids(ds, PredefinedSplit())
    assert val == ["img_0000", "img_0004"] and len(train) == 6 and set(train).isdisjoint(val)


def test_predefined_unknown_stems_are_named(mask_source) -> None:
    ds = open_dataset(mask_source, classes=["bg", "a", "b"], task="multiclass")
    path = Path(mask_source.root) / "splits" / "val.txt"
    path.write_text("img_0000\nghost_1\nghost_2.png\n")
    with pytest.raises(DatasetError, match="ghost_1, ghost_2") as info:
        split_ids(ds, PredefinedSplit())
    assert str(path) in str(info.value)


def test_predefined_missing_or_overlapping(mask_source) -> None:
    ds = open_dataset(mask_source, classes=["bg", "a", "b"], task="multiclass")
    with pytest.raises(DatasetError, match="does not exist"):
        split_ids(ds, PredefinedSplit(val="splits/nope.txt"))
    (Path(mask_source.root) / "splits" / "val.txt").write_text("img_0001\n")
    with pytest.raises(DatasetError, match="both the train and the val list: img_0001"):
        split_ids(ds, PredefinedSplit())


def test_too_few_images_for_folds(hand_coco) -> None:
    ds = open_dataset(hand_coco, classes=None, task="multiclass")
    with pytest.raises(DatasetError, match="use fewer folds"):
        fold_assignment(ds, KFoldSplit(n_folds=3))
    with pytest.raises(ConfigError):
        fold_assignment(ds, HoldoutSplit())
