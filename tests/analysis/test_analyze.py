"""The one-pass orchestrator: per-image scores, worst images, confidence, folds, ignore, stores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segcore.analysis import AnalysisReport, analyze, analyze_store
from segcore.errors import ConfigError, DatasetError, StoreError

CLASSES = ["bg", "fg"]


def _gt() -> np.ndarray:
    gt = np.zeros((4, 4), dtype=np.uint8)
    gt[:2, :2] = 1  # 4 foreground pixels
    return gt


def _pred(n_right: int, extra: int = 0) -> np.ndarray:
    """Prediction covering ``n_right`` of the 4 foreground pixels plus ``extra`` background ones."""
    pred = np.zeros((4, 4), dtype=np.uint8)
    pred.flat[[0, 1, 4, 5][:n_right]] = 1
    pred.flat[[15, 14, 13, 12][:extra]] = 1
    return pred


def test_per_image_scores_and_worst_image_order() -> None:
    samples = [
        ("perfect", _pred(4), _gt()),  # fg IoU 1
        ("half", _pred(2), _gt()),  # fg IoU 2/4
        ("none", _pred(0), _gt()),  # fg IoU 0, 4 errors
        ("none_plus", _pred(0, extra=2), _gt()),  # fg IoU 0, 6 errors: worse than "none"
        ("empty", np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)),  # fg absent
    ]
    report = analyze(samples, task="multiclass", classes=CLASSES, boundary_px=1, worst_k=3)
    by_id = {img.image_id: img for img in report.images}
    assert [img.image_id for img in report.images] == [s[0] for s in samples]
    assert by_id["half"].iou == [pytest.approx(12 / 14), 0.5]
    assert by_id["half"].errors == [2, 2]
    assert by_id["half"].pixel_accuracy == pytest.approx(14 / 16)
    assert by_id["empty"].iou == [1.0, None]
    assert by_id["empty"].mean_iou == 1.0
    worst = report.worst_images["fg"]
    assert [(w.image_id, w.iou, w.errors) for w in worst] == [
        ("none_plus", 0.0, 6),
        ("none", 0.0, 4),
        ("half", 0.5, 2),
    ]
    # background IoU: none_plus 10/16, none 12/16, half 12/14; perfect and empty are 1
    assert [w.image_id for w in report.worst_images["bg"]] == ["none_plus", "none", "half"]


def test_folds_give_per_fold_and_pooled_metrics() -> None:
    samples = [("a", _pred(4), _gt()), ("b", _pred(2), _gt()), ("c", _pred(0), _gt())]
    folds = {"a": 0, "b": 1, "c": 1}
    report = analyze(samples, task="multiclass", classes=CLASSES, folds=folds, boundary_px=1)
    assert [f.fold for f in report.folds] == ["0", "1"]
    f0, f1 = report.folds
    assert (f0.n_images, f1.n_images) == (1, 2)
    assert f0.classes[1].iou == 1.0
    assert f1.classes[1].iou == pytest.approx(2 / 8)  # tp 2, fn 6
    assert report.pooled.classes[1].iou == pytest.approx(6 / 12)
    assert report.pooled.classes[1].support == 12
    assert [img.fold for img in report.images] == ["0", "1", "1"]
    with pytest.raises(ConfigError, match="no fold"):
        analyze(samples, task="multiclass", classes=CLASSES, folds={"a": 0})


def test_confidence_histograms_multiclass() -> None:
    p1 = np.array([[0.92, 0.65, 0.25, 0.04]], dtype=np.float32)
    probs = np.stack([1 - p1, p1])
    gt = np.array([[1, 0, 0, 1]], dtype=np.uint8)
    report = analyze(
        [("x", probs, gt)], task="multiclass", classes=CLASSES, confidence_bins=10, boundary_px=1
    )
    conf = report.confidence
    assert conf.bin_edges[0] == 0.0 and conf.bin_edges[-1] == 1.0 and len(conf.bin_edges) == 11
    bg, fg = conf.classes
    # predicted fg: 0.92 right (bin 9), 0.65 wrong (bin 6); predicted bg: 0.75 right, 0.96 wrong
    assert fg.correct == [0] * 9 + [1]
    assert fg.wrong == [0] * 6 + [1] + [0] * 3
    assert bg.correct == [0] * 7 + [1] + [0] * 2
    assert bg.wrong == [0] * 9 + [1]
    assert fg.mean_correct == pytest.approx(0.92) and fg.mean_wrong == pytest.approx(0.65)
    assert bg.mean_wrong == pytest.approx(0.96)


def test_confidence_histograms_multilabel_and_none_for_class_maps() -> None:
    probs = np.array([[[0.85, 0.35]]], dtype=np.float32)  # 1 class, 1x2 image
    gt = np.array([[[1, 1]]], dtype=np.uint8)
    report = analyze([("x", probs, gt)], task="multilabel", classes=["c"], confidence_bins=10, boundary_px=1)
    c = report.confidence.classes[0]
    assert c.correct == [0] * 8 + [1, 0] and c.wrong == [0, 0, 0, 1] + [0] * 6
    maps = analyze([("x", _pred(2), _gt())], task="multiclass", classes=CLASSES, boundary_px=1)
    assert maps.confidence is None


def test_ignored_pixels_are_excluded_everywhere() -> None:
    rng = np.random.default_rng(0)
    gt = np.zeros((32, 32), dtype=np.uint8)
    gt[4:20, 4:20] = 1
    gt[22:30, 2:12] = 2
    gt[10:14, :] = 255
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=(32, 32)).transpose(2, 0, 1).astype(np.float32)
    other = probs.copy()
    other[:, gt == 255] = rng.dirichlet([1.0, 1.0, 1.0], size=int((gt == 255).sum())).T
    kwargs = dict(task="multiclass", classes=["bg", "a", "b"], boundary_px=2)
    ra = analyze([("x", probs, gt)], **kwargs)
    rb = analyze([("x", other, gt)], **kwargs)
    assert ra.model_dump() == rb.model_dump()
    assert ra.pooled.n_pixels == 32 * 32 - 4 * 32
    assert int(np.sum(ra.confusion.counts)) == 32 * 32 - 4 * 32
    hist_total = sum(sum(c.correct) + sum(c.wrong) for c in ra.confidence.classes)
    assert hist_total == 32 * 32 - 4 * 32


def test_report_round_trips_through_json(tmp_path) -> None:
    report = analyze([("x", _pred(2), _gt())], task="multiclass", classes=CLASSES, boundary_px=1)
    path = tmp_path / "analysis.json"
    report.save(path)
    json.loads(path.read_text())  # plain JSON, no NaN
    assert AnalysisReport.load(path) == report
    path.write_text("{}")
    with pytest.raises(StoreError, match="run the analysis again"):
        AnalysisReport.load(path)


class FakeStore:
    """The probability store's reading interface: ``.ids`` and ``.read(id)``."""

    def __init__(self, probs: dict[str, np.ndarray]) -> None:
        self._probs = probs
        self.reads = 0

    @property
    def ids(self) -> list[str]:
        return sorted(self._probs)

    def read(self, image_id: str) -> np.ndarray:
        self.reads += 1
        return self._probs[image_id]


def _onehot(pred: np.ndarray) -> np.ndarray:
    return np.stack([pred == 0, pred == 1]).astype(np.float32)


def test_analyze_store_with_folds_and_cache(tmp_path) -> None:
    store = FakeStore({"a": _onehot(_pred(4)), "b": _onehot(_pred(2))})
    cache = tmp_path / "cache" / "analysis.json"
    kwargs = dict(task="multiclass", classes=CLASSES, folds={"a": 0, "b": 1}, boundary_px=1)
    first = analyze_store(store, lambda _id: _gt(), cache_path=cache, **kwargs)
    assert store.reads == 2 and cache.exists()
    assert first.pooled.classes[1].iou == pytest.approx(6 / 8)
    assert [f.fold for f in first.folds] == ["0", "1"]
    again = analyze_store(store, lambda _id: _gt(), cache_path=cache, **kwargs)
    assert store.reads == 2 and again == first  # served from the cache
    changed = analyze_store(store, lambda _id: _gt(), cache_path=cache, **{**kwargs, "boundary_px": 2})
    assert store.reads == 4 and changed.parameters.boundary_px == 2
    subset = analyze_store(store, lambda _id: _gt(), ids=["b"], cache_path=cache, **kwargs)
    assert store.reads == 5 and subset.n_images == 1


def test_store_read_failure_is_a_store_error() -> None:
    store = FakeStore({"a": _onehot(_pred(4))})
    with pytest.raises(StoreError, match="predict again") as info:
        analyze_store(store, lambda _id: _gt(), ids=["missing"], task="multiclass", classes=CLASSES)
    assert isinstance(info.value.__cause__, KeyError)


def test_inputs_that_do_not_fit_are_rejected_with_a_fix() -> None:
    good = [("x", _pred(2), _gt())]
    with pytest.raises(StoreError, match="3 channels but 2 classes"):
        analyze([("x", np.zeros((3, 4, 4), np.float32), _gt())], task="multiclass", classes=CLASSES)
    with pytest.raises(StoreError, match="mask's resolution"):
        analyze([("x", np.zeros((2, 5, 5), np.float32), _gt())], task="multiclass", classes=CLASSES)
    bad_gt = _gt()
    bad_gt[0, 0] = 7
    with pytest.raises(DatasetError, match=r"values \[7\]"):
        analyze([("x", _pred(2), bad_gt)], task="multiclass", classes=CLASSES)
    with pytest.raises(DatasetError, match="appears twice"):
        analyze(good + good, task="multiclass", classes=CLASSES)
    with pytest.raises(DatasetError, match="no images"):
        analyze([], task="multiclass", classes=CLASSES)
    with pytest.raises(ConfigError, match="background=5"):
        analyze(good, task="multiclass", classes=CLASSES, background=5)
    with pytest.raises(ConfigError, match="also a class index"):
        analyze(good, task="multiclass", classes=CLASSES, ignore_index=1)
    with pytest.raises(ConfigError, match="unknown task"):
        analyze(good, task="panoptic", classes=CLASSES)
    with pytest.raises(ConfigError, match="boundary_px >= 1"):
        analyze(good, task="multiclass", classes=CLASSES, boundary_px=0)


def test_multilabel_confidence_fast_path_matches_general_path() -> None:
    from segcore.analysis.confidence import multilabel_confidence_counts

    rng = np.random.default_rng(0)
    probs = rng.random((3, 64, 64), dtype=np.float32)
    probs[0, 0, :4] = [0.0, 1.0, 0.5, 0.95]  # the ends of the range
    gt = rng.random((3, 64, 64)) > 0.5
    fast = multilabel_confidence_counts(probs, probs >= 0.5, gt, n_bins=20)
    general = multilabel_confidence_counts(probs, probs >= 0.5, gt, n_bins=200)  # > 128 bins
    np.testing.assert_array_equal(fast[0], general[0].reshape(3, 2, 20, 10).sum(axis=-1))
    np.testing.assert_allclose(fast[1], general[1], rtol=1e-9)
    assert fast[0].sum() == 3 * 64 * 64


def test_dataset_and_per_image_means_follow_docs_metrics_example() -> None:
    # docs/metrics.md: A all background right; B all class 1, half predicted as background
    a_gt = np.zeros((2, 2), np.uint8)
    b_gt = np.ones((2, 2), np.uint8)
    b_pred = np.array([[1, 1], [0, 0]], np.uint8)
    report = analyze(
        [("A", a_gt.copy(), a_gt), ("B", b_pred, b_gt)], task="multiclass", classes=CLASSES, boundary_px=1
    )
    assert report.confusion.counts == [[4, 0], [2, 2]]
    assert report.pooled.mean_iou == pytest.approx((4 / 6 + 2 / 4) / 2)
    assert [img.mean_iou for img in report.images] == [1.0, 0.25]
    assert report.images[1].iou == [0.0, 0.5]  # predicted but absent: IoU 0, counted


def test_multilabel_pixel_accuracy_counts_decisions() -> None:
    gt = np.zeros((2, 1, 2), np.uint8)
    gt[0, 0, 0] = 1
    pred = np.zeros((2, 1, 2), bool)  # misses the one positive: 3 of 4 decisions right
    report = analyze([("m", pred, gt)], task="multilabel", classes=["c0", "c1"], boundary_px=1)
    assert report.pooled.pixel_accuracy == pytest.approx(0.75)
    assert report.images[0].pixel_accuracy == pytest.approx(0.75)


def test_analyze_store_reads_a_real_probability_store(tmp_path) -> None:
    from segcore.inference.store import ProbabilityStore

    path = tmp_path / "val_store"
    with ProbabilityStore.create(path, classes=CLASSES, task="multiclass") as writer:
        writer.write("a", _onehot(_pred(4)))
        writer.write("b", _onehot(_pred(2)))
    store = ProbabilityStore.open(path)
    report = analyze_store(store, lambda _id: _gt(), folds={"a": 0, "b": 1}, boundary_px=1)
    assert report.parameters.classes == CLASSES and report.parameters.task == "multiclass"
    assert report.pooled.classes[1].iou == pytest.approx(6 / 8)
    assert report.confidence is not None  # stored probabilities (uint8-quantised) give confidences
    with pytest.raises(StoreError, match="not in the probability store"):
        analyze_store(store, lambda _id: _gt(), ids=["zzz"])
