"""Metrics against hand-computed confusion matrices and against smp.metrics."""

from __future__ import annotations

import json

import pytest
import segmentation_models_pytorch as smp
import torch

from segcore.config import TaskType
from segcore.metrics import METRIC_KEYS, MetricAccumulator, confusion_matrix, scores_from_confusion

torch.set_num_threads(1)

IGNORE = 255


def _onehot_logits(pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits [N, C, H, W] whose argmax is ``pred`` [N, H, W]."""
    return torch.nn.functional.one_hot(pred, num_classes).permute(0, 3, 1, 2).float() * 5 - 1


# Every number below is counted by hand.
PRED = torch.tensor([[[0, 1, 1], [2, 2, 0]]])
TARGET = torch.tensor([[[0, 1, 0], [2, IGNORE, 1]]])
CM = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]])


def test_confusion_matrix_by_hand() -> None:
    assert torch.equal(confusion_matrix(PRED, TARGET, 3, IGNORE), CM)
    # without ignore handling the 255 pixel is out of range and still not counted
    assert torch.equal(confusion_matrix(PRED, TARGET, 3, None), CM)
    assert torch.equal(confusion_matrix(torch.tensor([1]), torch.tensor([1]), 3, ignore_index=1), torch.zeros(3, 3, dtype=torch.long))


def test_confusion_matrix_rejects_out_of_range_predictions() -> None:
    with pytest.raises(ValueError, match=r"0\.\.2"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)


def test_scores_from_confusion_by_hand() -> None:
    s = scores_from_confusion(CM)
    torch.testing.assert_close(s["iou"], torch.tensor([1 / 3, 1 / 3, 1.0], dtype=torch.float64))
    torch.testing.assert_close(s["dice"], torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(s["precision"], torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(s["recall"], torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64))
    assert s["support"].tolist() == [2, 2, 1]


def test_scores_from_confusion_batched_and_numpy() -> None:
    batched = scores_from_confusion(torch.stack([CM, CM.T]))
    assert batched["iou"].shape == (2, 3)
    torch.testing.assert_close(scores_from_confusion(CM.numpy())["iou"], scores_from_confusion(CM)["iou"])


def test_accumulator_by_hand_with_ignore() -> None:
    acc = MetricAccumulator(TaskType.MULTICLASS, 3, ignore_index=IGNORE)
    acc.update(_onehot_logits(PRED, 3), TARGET)
    assert torch.equal(acc.confusion, CM)
    m = acc.compute()
    assert m["miou"] == pytest.approx(5 / 9)
    assert m["dice"] == pytest.approx(2 / 3)
    assert m["pixel_accuracy"] == pytest.approx(3 / 5)
    assert m["miou_per_image"] == pytest.approx(5 / 9)  # one image: the same
    assert m["per_class"]["support"] == [2, 2, 1]
    assert m["per_class"]["iou"] == pytest.approx([1 / 3, 1 / 3, 1.0])


def test_prediction_at_ignored_pixels_does_not_count() -> None:
    other = PRED.clone()
    other[TARGET == IGNORE] = 0
    a = MetricAccumulator("multiclass", 3)
    b = MetricAccumulator("multiclass", 3)
    a.update(_onehot_logits(PRED, 3), TARGET)
    b.update(_onehot_logits(other, 3), TARGET)
    assert a.compute() == b.compute()


def test_absent_class_rule() -> None:
    # class 3 is neither in the ground truth nor predicted: no IoU, not in the mean
    acc = MetricAccumulator(TaskType.MULTICLASS, 4)
    acc.update(_onehot_logits(PRED, 4), TARGET)
    m = acc.compute()
    assert m["per_class"]["iou"][3] is None and m["per_class"]["dice"][3] is None
    assert m["per_class"]["recall"][3] is None and m["per_class"]["precision"][3] is None
    assert m["miou"] == pytest.approx(5 / 9)
    # class 3 predicted once where the truth is 2: IoU 0 for class 3, and it counts
    pred = PRED.clone()
    pred[0, 1, 0] = 3
    acc = MetricAccumulator(TaskType.MULTICLASS, 4)
    acc.update(_onehot_logits(pred, 4), TARGET)
    m = acc.compute()
    assert m["per_class"]["iou"] == pytest.approx([1 / 3, 1 / 3, 0.0, 0.0])
    assert m["per_class"]["precision"][3] == 0.0 and m["per_class"]["recall"][3] is None
    assert m["miou"] == pytest.approx((1 / 3 + 1 / 3) / 4)


# Image A: all background, predicted right.  Image B: all class 1, half predicted as 0.
# Per image: A has mIoU 1 (class 1 absent from both is skipped), B has IoU 0 (c0) and 1/2 (c1).
A_T = torch.zeros(1, 2, 2, dtype=torch.long)
B_T = torch.ones(1, 2, 2, dtype=torch.long)
B_P = torch.tensor([[[1, 1], [0, 0]]])


def _two_images(batched: bool) -> dict:
    acc = MetricAccumulator(TaskType.MULTICLASS, 2)
    if batched:
        acc.update(_onehot_logits(torch.cat([A_T, B_P]), 2), torch.cat([A_T, B_T]))
    else:
        acc.update(_onehot_logits(A_T, 2), A_T)
        acc.update(_onehot_logits(B_P, 2), B_T)
    return acc.compute()


def test_per_image_mean_differs_from_dataset_mean() -> None:
    m = _two_images(batched=True)
    assert m["miou_per_image"] == pytest.approx((1 + 0.25) / 2)  # 0.625
    assert m["miou"] == pytest.approx((4 / 6 + 2 / 4) / 2)  # cm [[4, 0], [2, 2]]: 7/12
    assert m["dice_per_image"] == pytest.approx((1 + 1 / 3) / 2)
    assert m["dice"] == pytest.approx((8 / 10 + 4 / 6) / 2)
    assert m["pixel_accuracy"] == pytest.approx(6 / 8)


def test_batching_does_not_change_anything() -> None:
    assert _two_images(batched=True) == _two_images(batched=False)


def test_batchwise_mean_is_not_the_dataset_miou() -> None:
    # what a loop averaging per-batch mIoU would report with batch size 1
    batch_means = []
    for p, t in ((A_T, A_T), (B_P, B_T)):
        acc = MetricAccumulator(TaskType.MULTICLASS, 2)
        acc.update(_onehot_logits(p, 2), t)
        batch_means.append(acc.compute()["miou"])
    assert sum(batch_means) / 2 == pytest.approx(0.625)
    assert _two_images(batched=True)["miou"] == pytest.approx(7 / 12)


def test_fully_ignored_image_is_skipped_per_image() -> None:
    acc = MetricAccumulator(TaskType.MULTICLASS, 2)
    acc.update(_onehot_logits(torch.cat([A_T, A_T]), 2), torch.cat([A_T, torch.full((1, 2, 2), IGNORE)]))
    m = acc.compute()
    assert m["miou_per_image"] == 1.0 and m["miou"] == 1.0 and acc.num_images == 2


def test_empty_accumulator_is_json_and_none() -> None:
    m = MetricAccumulator(TaskType.MULTICLASS, 3).compute()
    assert all(m[k] is None for k in METRIC_KEYS)
    json.dumps(m, allow_nan=False)


# Multilabel: class 0 target [[1,1],[0,0]], probs [[.9,.4],[.6,.1]] -> pred [[1,0],[1,0]]:
# TP 1, FP 1, FN 1.  Class 1 is absent from the target and never predicted.
ML_PROBS = torch.tensor([[[[0.9, 0.4], [0.6, 0.1]], [[0.2, 0.2], [0.2, 0.5 - 1e-3]]]])
ML_TARGET = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]])


@pytest.mark.parametrize("is_probs", [True, False])
def test_multilabel_by_hand(is_probs: bool) -> None:
    acc = MetricAccumulator(TaskType.MULTILABEL, 2, threshold=0.5)
    scores = ML_PROBS if is_probs else torch.logit(ML_PROBS.double()).float()
    acc.update(scores, ML_TARGET, is_probs=is_probs)
    m = acc.compute()
    assert m["per_class"]["iou"] == [pytest.approx(1 / 3), None]
    assert m["per_class"]["dice"] == [pytest.approx(0.5), None]
    assert m["per_class"]["support"] == [2, 0]
    assert m["miou"] == pytest.approx(1 / 3) and m["miou_per_image"] == pytest.approx(1 / 3)
    assert m["pixel_accuracy"] == pytest.approx(6 / 8)


def test_multilabel_threshold() -> None:
    acc = MetricAccumulator(TaskType.MULTILABEL, 2, threshold=0.35)
    acc.update(ML_PROBS, ML_TARGET, is_probs=True)
    # class 0 pred [[1,1],[1,0]]: TP 2, FP 1; class 1 pred at 0.499: FP 1 -> IoU 0
    assert acc.compute()["per_class"]["iou"] == [pytest.approx(2 / 3), 0.0]
    acc = MetricAccumulator(TaskType.MULTILABEL, 2, threshold=0.9)
    acc.update(ML_PROBS, ML_TARGET, is_probs=True)  # 0.9 >= 0.9 is positive
    assert acc.compute()["per_class"]["iou"][0] == pytest.approx(1 / 2)


def test_agrees_with_smp_multiclass() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 32, 32, generator=g)
    target = torch.randint(0, 3, (4, 32, 32), generator=g)
    target[:, :4] = IGNORE
    acc = MetricAccumulator(TaskType.MULTICLASS, 3)
    acc.update(logits[:3], target[:3])
    acc.update(logits[3:], target[3:])
    m = acc.compute()
    tp, fp, fn, tn = smp.metrics.get_stats(logits.argmax(1), target, mode="multiclass", num_classes=3, ignore_index=IGNORE)
    # every class is present in every image, so smp's means define the same thing
    assert m["miou"] == pytest.approx(smp.metrics.iou_score(tp, fp, fn, tn, reduction="macro").item(), abs=1e-6)
    assert m["miou_per_image"] == pytest.approx(
        smp.metrics.iou_score(tp, fp, fn, tn, reduction="macro-imagewise").item(), abs=1e-6
    )
    assert m["dice"] == pytest.approx(smp.metrics.f1_score(tp, fp, fn, tn, reduction="macro").item(), abs=1e-6)
    per_class = smp.metrics.iou_score(tp.sum(0), fp.sum(0), fn.sum(0), tn.sum(0), reduction="none")
    assert m["per_class"]["iou"] == pytest.approx(per_class.tolist(), abs=1e-6)


def test_agrees_with_smp_multilabel() -> None:
    g = torch.Generator().manual_seed(1)
    probs = torch.rand(4, 1, 32, 32, generator=g)
    target = (torch.rand(4, 1, 32, 32, generator=g) > 0.5).long()
    acc = MetricAccumulator(TaskType.MULTILABEL, 1, threshold=0.4)
    acc.update(probs, target, is_probs=True)
    m = acc.compute()
    tp, fp, fn, tn = smp.metrics.get_stats(probs, target, mode="multilabel", threshold=0.4)
    assert m["miou_per_image"] == pytest.approx(
        smp.metrics.iou_score(tp, fp, fn, tn, reduction="micro-imagewise").item(), abs=1e-6
    )
    assert m["miou"] == pytest.approx(smp.metrics.iou_score(tp, fp, fn, tn, reduction="micro").item(), abs=1e-6)
    assert m["pixel_accuracy"] == pytest.approx(smp.metrics.accuracy(tp, fp, fn, tn, reduction="micro").item(), abs=1e-6)


def test_bad_shapes_are_explained() -> None:
    acc = MetricAccumulator(TaskType.MULTICLASS, 3)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        acc.update(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"multiclass target"):
        acc.update(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))


def test_result_is_strict_json() -> None:
    acc = MetricAccumulator(TaskType.MULTICLASS, 4)
    acc.update(_onehot_logits(PRED, 4), TARGET)
    text = json.dumps(acc.compute(), allow_nan=False)  # raises on NaN or inf
    assert json.loads(text)["per_class"]["iou"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 5, 48, 48, generator=g)
    target = torch.randint(0, 5, (3, 48, 48), generator=g)
    cpu = MetricAccumulator(TaskType.MULTICLASS, 5)
    gpu = MetricAccumulator(TaskType.MULTICLASS, 5, device="cuda")
    cpu.update(logits, target)
    gpu.update(logits.cuda(), target.cuda())
    assert gpu.confusion.device.type == "cuda"
    c, d = cpu.compute(), gpu.compute()
    assert c["per_class"] == d["per_class"]
    assert [c[k] for k in METRIC_KEYS] == pytest.approx([d[k] for k in METRIC_KEYS])
