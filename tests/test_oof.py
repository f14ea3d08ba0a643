"""Group out-of-fold stores: union of fold stores, mean over seeds, every metric kind scored."""

from __future__ import annotations

import numpy as np
import pytest

from segcore.errors import EnsembleError
from segcore.inference.store import ProbabilityStore
from segcore.oof import assemble_oof, score_store

CLASSES = ["bg", "a"]


def _store(path, items, dtype="float16", classes=CLASSES):
    with ProbabilityStore.create(path, classes=classes, task="multiclass", dtype=dtype) as w:
        for image_id, probs in items.items():
            w.write(image_id, probs)
    return path


def _probs(p_a: float, shape=(4, 4)) -> np.ndarray:
    a = np.full(shape, p_a, np.float32)
    return np.stack([1 - a, a])


def test_union_of_folds_and_mean_over_seeds(tmp_path):
    fold0_seed0 = _store(tmp_path / "f0s0", {"x": _probs(0.8), "y": _probs(0.2)})
    fold0_seed1 = _store(tmp_path / "f0s1", {"x": _probs(0.4), "y": _probs(0.6)})
    fold1 = _store(tmp_path / "f1", {"z": _probs(0.9)})
    oof = assemble_oof([fold0_seed0, fold0_seed1, fold1], tmp_path / "oof", meta={"group": 7})
    assert sorted(oof.ids) == ["x", "y", "z"]
    assert oof.meta["group"] == 7 and oof.meta["kind"] == "oof"
    np.testing.assert_allclose(oof.read("x")[1], 0.6, atol=2e-3)
    np.testing.assert_allclose(oof.read("y")[1], 0.4, atol=2e-3)
    np.testing.assert_allclose(oof.read("z")[1], 0.9, atol=2e-3)


def test_score_store_reports_every_metric_kind(tmp_path):
    store = _store(tmp_path / "s", {"x": _probs(0.9), "y": _probs(0.1)})
    gt = {"x": np.ones((4, 4), np.uint8), "y": np.zeros((4, 4), np.uint8)}
    gt["y"][0, 0] = 255  # ignored
    m = score_store(store, gt.__getitem__, ignore_index=255)
    assert m["miou"] == pytest.approx(1.0)
    assert m["pixel_accuracy"] == pytest.approx(1.0)
    for key in ("miou_per_image", "dice", "dice_per_image", "per_class"):
        assert key in m
    gt["y"][1, 1] = 1  # one missed pixel of class a
    m = score_store(store, gt.__getitem__, ignore_index=255)
    assert m["miou"] < 1.0


def test_mismatched_members_and_ground_truth_are_refused(tmp_path):
    a = _store(tmp_path / "a", {"x": _probs(0.5)})
    b = _store(tmp_path / "b", {"x": np.full((3, 4, 4), 1 / 3, np.float32)}, classes=["bg", "a", "b"])
    with pytest.raises(EnsembleError, match="same dataset"):
        assemble_oof([a, b], tmp_path / "oof")
    with pytest.raises(EnsembleError, match="at least one"):
        assemble_oof([], tmp_path / "oof")
    with pytest.raises(EnsembleError, match="does not belong to this dataset"):
        score_store(a, lambda _: np.zeros((5, 5), np.uint8))
