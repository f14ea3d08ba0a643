"""segcore.scores (numpy) against segcore.metrics (torch): one definition of the per-class scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segcore.metrics import confusion_matrix, scores_from_confusion
from segcore.scores import class_scores, confusion, confusion_tp_fp_fn, nan_mean


def test_numpy_scores_agree_with_the_torch_metrics() -> None:
    rng = np.random.default_rng(0)
    pred, target = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    target[:50] = 3
    pred[pred == 2] = 1  # class 2 never predicted
    cm = confusion(pred, target, 4)
    np.testing.assert_array_equal(cm, confusion_matrix(torch.tensor(pred), torch.tensor(target), 4).numpy())
    ours = class_scores(*confusion_tp_fp_fn(cm))
    ref = scores_from_confusion(torch.tensor(cm))
    for key in ("iou", "dice"):
        np.testing.assert_allclose(ours[key], ref[key].double().numpy(), rtol=1e-12)
    assert nan_mean(ours["iou"]) == pytest.approx(float(torch.nanmean(ref["iou"])))


def test_a_class_absent_everywhere_is_nan_and_left_out_of_the_mean() -> None:
    cm = confusion([0, 1, 1], [0, 1, 0], num_classes=3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    s = class_scores(*confusion_tp_fp_fn(cm))
    assert s["iou"][:2].tolist() == [0.5, 0.5] and math.isnan(s["iou"][2])
    assert s["dice"][:2].tolist() == pytest.approx([2 / 3, 2 / 3]) and math.isnan(s["dice"][2])
    assert s["precision"][:2].tolist() == [1.0, 0.5] and s["recall"][:2].tolist() == [0.5, 1.0]
    assert nan_mean(s["iou"]) == 0.5 and math.isnan(nan_mean(np.full(3, np.nan)))
