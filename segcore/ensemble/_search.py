"""Scoring an ensemble against the ground truth, and searching member weights on a reduced grid."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from segcore.ensemble._combine import (
    Member,
    Method,
    Weights,
    check_members,
    class_thresholds,
    iter_ensemble_labels,
    member_name,
    normalized_weights,
)
from segcore.errors import EnsembleError
from segcore.inference.store import StoreReader
from segcore.scores import class_scores, confusion, confusion_tp_fp_fn, nan_mean

Targets = Callable[[str], np.ndarray] | Mapping[str, np.ndarray]


def _mean_iou(cm: np.ndarray) -> tuple[float, np.ndarray]:
    iou = class_scores(*confusion_tp_fp_fn(cm))["iou"]
    return nan_mean(iou), iou


def _mean_dice(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[float, np.ndarray]:
    dice = class_scores(tp, fp, fn)["dice"]
    return nan_mean(dice), dice


def _target(targets: Targets, image_id: str) -> np.ndarray:
    try:
        return np.asarray(targets[image_id] if isinstance(targets, Mapping) else targets(image_id))
    except KeyError as exc:
        raise EnsembleError(f"no ground truth for image {image_id!r}; give a target for every member image") from exc


def _check_target(t: np.ndarray, image_id: str, task: str, c: int, size: tuple[int, int]) -> None:
    want = size if task == "multiclass" else (c, *size)
    if tuple(t.shape) != tuple(want):
        raise EnsembleError(
            f"ground truth of {image_id!r} has shape {t.shape}, expected {want} "
            f"({'H x W class indices' if task == 'multiclass' else 'C x H x W {0,1}'})"
        )


def evaluate(
    members: Sequence[Member],
    targets: Targets,
    *,
    method: Method = "soft",
    weights: Sequence[float] | None = None,
    thresholds: float | Sequence[float] | None = None,
    ignore_index: int = 255,
) -> dict[str, Any]:
    """Score an ensemble at full resolution in one streamed pass.

    Args:
        members: member stores (one member scores that store alone).
        targets: image id -> ground truth: H x W class indices (``ignore_index`` not counted)
            for multiclass, C x H x W {0, 1} for multilabel.

    Returns:
        ``{"metric": "miou" | "dice", "score": float, "per_class": [float | None, ...]}``.
    """
    readers = check_members(members)
    task, c = readers[0].task, readers[0].num_classes
    cm = np.zeros((c, c), np.int64)
    tp, fp, fn = (np.zeros(c, np.int64) for _ in range(3))
    for image_id, labels in iter_ensemble_labels(readers, method=method, weights=weights, thresholds=thresholds):
        t = _target(targets, image_id)
        _check_target(t, image_id, task, c, readers[0].size(image_id))
        if task == "multiclass":
            keep = (t != ignore_index) & (t >= 0) & (t < c)
            cm += confusion(labels[keep], t[keep], c)
        else:
            p, g = labels.astype(bool), t.astype(bool)
            tp += (p & g).sum((1, 2))
            fp += (p & ~g).sum((1, 2))
            fn += (~p & g).sum((1, 2))
    score, per = _mean_iou(cm) if task == "multiclass" else _mean_dice(tp, fp, fn)
    return {
        "metric": "miou" if task == "multiclass" else "dice",
        "score": score,
        "per_class": [None if math.isnan(x) else float(x) for x in per],
    }


def _resize(arr: np.ndarray, shape: tuple[int, int], nearest: bool) -> np.ndarray:
    import cv2

    h, w = shape
    if arr.shape[-2:] == (h, w):
        return arr
    if arr.ndim == 2:
        interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
        return cv2.resize(arr, (w, h), interpolation=interp)
    return np.stack([_resize(a, shape, nearest) for a in arr])


@dataclass
class SearchCache:
    """Members and ground truth on a reduced grid, for fast repeated scoring.

    Each image is resized to longest side ``max_side`` (probabilities by area averaging, the
    ground truth by nearest neighbour) and placed on a ``max_side x max_side`` canvas whose
    padding is not counted. Memory: members x images x classes x max_side^2 bytes (uint8),
    e.g. 5 x 400 x 12 x 64^2 = 98 MB.

    Attributes:
        names: member names (their ``source`` or folder name).
        ids: image ids.
        task: ``multiclass`` or ``multilabel``.
        num_classes: C.
        probs: M x N x C x S x S uint8 (probability x 255).
        target: N x S x S int16 class indices (multiclass) or N x C x S x S bool (multilabel).
        valid: N x S x S bool: pixels that count.
        thresholds: C multilabel thresholds.
        max_side: S.
    """

    names: list[str]
    ids: list[str]
    task: str
    num_classes: int
    probs: np.ndarray
    target: np.ndarray
    valid: np.ndarray
    thresholds: np.ndarray
    max_side: int
    readers: list[StoreReader] = field(repr=False, default_factory=list)
    targets: Targets | None = field(repr=False, default=None)
    ignore_index: int = 255
    _chunk: int = 64

    @classmethod
    def build(
        cls,
        members: Sequence[Member],
        targets: Targets,
        *,
        max_side: int = 64,
        ignore_index: int = 255,
        thresholds: float | Sequence[float] | None = None,
        ids: Sequence[str] | None = None,
    ) -> SearchCache:
        """Read every member and target once, image by image, onto the reduced grid.

        Args:
            members: member stores of validation (or out-of-fold) predictions.
            targets: image id -> ground truth (see :func:`evaluate`).
            max_side: the grid's side; 64 keeps most of the ranking information at a fraction
                of the cost (see ``docs/inference.md`` for measurements).
            ignore_index: multiclass ground-truth value that is not counted.
            thresholds: multilabel per-class thresholds.
            ids: a subset of the members' images; None for all.
        """
        readers = check_members(members)
        first = readers[0]
        task, c = first.task, first.num_classes
        ids = list(ids) if ids is not None else list(first.ids)
        m, n, s = len(readers), len(ids), int(max_side)
        if s < 4:
            raise EnsembleError(f"max_side must be at least 4, got {max_side}")
        probs = np.zeros((m, n, c, s, s), np.uint8)
        valid = np.zeros((n, s, s), bool)
        target = np.zeros((n, s, s), np.int16) if task == "multiclass" else np.zeros((n, c, s, s), bool)
        for i, image_id in enumerate(ids):
            h, w = first.size(image_id)
            scale = min(1.0, s / max(h, w))
            gh, gw = max(1, round(h * scale)), max(1, round(w * scale))
            t = _target(targets, image_id)
            _check_target(t, image_id, task, c, (h, w))
            if task == "multiclass":
                small = _resize(t.astype(np.int32 if t.dtype.itemsize > 2 else t.dtype), (gh, gw), nearest=True)
                keep = (small != ignore_index) & (small >= 0) & (small < c)
                target[i, :gh, :gw] = np.where(keep, small, 0)
                valid[i, :gh, :gw] = keep
            else:
                target[i, :, :gh, :gw] = _resize(t.astype(np.uint8), (gh, gw), nearest=True) > 0
                valid[i, :gh, :gw] = True
            for j, r in enumerate(readers):
                p = r.read(image_id, resolution="stored")
                probs[j, i, :, :gh, :gw] = np.rint(_resize(p, (gh, gw), nearest=False) * 255.0).astype(np.uint8)
        return cls(
            names=[member_name(r) for r in readers],
            ids=ids,
            task=task,
            num_classes=c,
            probs=probs,
            target=target,
            valid=valid,
            thresholds=class_thresholds(thresholds, c),
            max_side=s,
            readers=readers,
            targets=targets,
            ignore_index=ignore_index,
        )

    def score_sum(self, total: np.ndarray, weight_sum: float) -> float:
        """Score of a weighted sum ``total`` (N x C x S x S float32 of uint8 units) of members."""
        if self.task == "multiclass":
            cm = np.zeros((self.num_classes, self.num_classes), np.int64)
            for a in range(0, total.shape[0], self._chunk):
                t = total[a : a + self._chunk]
                best = t[:, 0].copy()
                pred = np.zeros(best.shape, np.int16)
                for k in range(1, self.num_classes):  # strict '>' keeps the lowest index on ties, like argmax
                    better = t[:, k] > best
                    pred[better] = k
                    np.maximum(best, t[:, k], out=best)
                v = self.valid[a : a + self._chunk]
                cm += confusion(pred[v], self.target[a : a + self._chunk][v], self.num_classes)
            return _mean_iou(cm)[0]
        thr = (self.thresholds * 255.0 * weight_sum).astype(np.float32)[None, :, None, None]
        pred = total >= thr - 1e-3
        g = self.target
        v = self.valid[:, None]
        tp = (pred & g & v).sum((0, 2, 3))
        fp = (pred & ~g & v).sum((0, 2, 3))
        fn = (~pred & g & v).sum((0, 2, 3))
        return _mean_dice(tp, fp, fn)[0]

    def weighted_sum(self, weights: np.ndarray) -> np.ndarray:
        total = np.zeros(self.probs.shape[1:], np.float32)
        for j, wj in enumerate(weights):
            if wj > 0:
                total += np.float32(wj) * self.probs[j]
        return total

    def score(self, weights: Weights) -> float:
        """Dataset-level mIoU / mean Dice of the soft ensemble with ``weights`` on the grid."""
        w = normalized_weights(weights, self.probs.shape[0])
        return self.score_sum(self.weighted_sum(w), 1.0)

    def member_scores(self) -> list[float]:
        return [self.score_sum(self.probs[j].astype(np.float32), 1.0) for j in range(self.probs.shape[0])]


@dataclass
class WeightSearchResult:
    """The outcome of a weight search.

    Attributes:
        method: ``greedy`` or ``optimize``.
        metric: ``miou`` (multiclass) or ``dice`` (multilabel).
        names: member names.
        weights: one normalised weight per member (0 for unused members).
        score: the ensemble's score on the search grid.
        member_scores: each member's score on the same grid.
        counts: greedy only: how many times each member was selected.
        history: the best score after each round / improvement.
        max_side: the search grid's side.
        evaluations: how many weight vectors were scored.
        seconds: search time (the cache not included).
        full_score, full_member_scores: full-resolution scores when ``rescore=True``.
    """

    method: str
    metric: str
    names: list[str]
    weights: list[float]
    score: float
    member_scores: list[float]
    counts: list[int] | None
    history: list[float]
    max_side: int
    evaluations: int
    seconds: float
    full_score: float | None = None
    full_member_scores: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rescore(cache: SearchCache, result: WeightSearchResult) -> None:
    targets, ignore_index = cache.targets, cache.ignore_index
    if targets is None:
        raise EnsembleError("rescore=True needs the cache's targets; build the cache with SearchCache.build")
    thr = list(cache.thresholds)
    result.full_score = evaluate(
        cache.readers, targets, weights=result.weights, thresholds=thr, ignore_index=ignore_index
    )["score"]
    result.full_member_scores = [
        evaluate([r], targets, thresholds=thr, ignore_index=ignore_index)["score"] for r in cache.readers
    ]


def greedy_selection(
    cache: SearchCache,
    *,
    max_rounds: int = 20,
    patience: int = 5,
    rescore: bool = False,
) -> WeightSearchResult:
    """Forward selection with replacement (Caruana et al., 2004).

    Starts from the best single member; each round adds the member (any, again or not) whose
    addition gives the best score; the result is the best ensemble seen, so its score is never
    below the best member's. Weights are selection counts / rounds.

    Args:
        cache: a :class:`SearchCache`.
        max_rounds: most members in the final bag (with repeats).
        patience: stop after this many rounds without improvement.
        rescore: also score the result and each member at full resolution (one streamed pass
            per member and one for the ensemble); grid scores rank well but read lower than
            full-resolution ones (small objects and boundaries shrink away).
    """
    start = time.perf_counter()
    m = cache.probs.shape[0]
    member_scores = cache.member_scores()
    evaluations = m
    best_j = int(np.nanargmax(member_scores))
    counts = np.zeros(m, np.int64)
    counts[best_j] = 1
    running = cache.probs[best_j].astype(np.float32)
    best_score, best_counts = member_scores[best_j], counts.copy()
    history = [best_score]
    stale = 0
    for _ in range(max_rounds - 1):
        n = counts.sum()
        trial_scores = []
        for j in range(m):
            trial = running + cache.probs[j]
            trial_scores.append(cache.score_sum(trial, float(n + 1)))
            evaluations += 1
        j = int(np.nanargmax(trial_scores))
        running += cache.probs[j]
        counts[j] += 1
        if trial_scores[j] > best_score + 1e-12:
            best_score, best_counts, stale = trial_scores[j], counts.copy(), 0
        else:
            stale += 1
        history.append(best_score)
        if stale >= patience:
            break
    weights = (best_counts / best_counts.sum()).tolist()
    result = WeightSearchResult(
        method="greedy",
        metric="miou" if cache.task == "multiclass" else "dice",
        names=cache.names,
        weights=[float(x) for x in weights],
        score=float(best_score),
        member_scores=[float(x) for x in member_scores],
        counts=[int(x) for x in best_counts],
        history=[float(x) for x in history],
        max_side=cache.max_side,
        evaluations=evaluations,
        seconds=time.perf_counter() - start,
    )
    if rescore:
        _rescore(cache, result)
    return result


def optimize_weights(
    cache: SearchCache,
    *,
    init: Sequence[float] | None = None,
    step: float = 0.2,
    min_step: float = 0.0125,
    max_evaluations: int = 400,
    rescore: bool = False,
) -> WeightSearchResult:
    """Coordinate search on the simplex of weights.

    From ``init`` (default: equal weights, or the best member when that scores higher), try
    moving each weight up and down by ``step`` (weights renormalised, never negative); keep any
    move that improves the score; halve the step when none does, until ``min_step``. The score
    is piecewise constant in the weights (argmax / thresholds), so a gradient-free search fits.
    """
    start = time.perf_counter()
    m = cache.probs.shape[0]
    member_scores = cache.member_scores()
    evaluations = m
    w = normalized_weights(init, m)
    score = cache.score(w)
    evaluations += 1
    best_j = int(np.nanargmax(member_scores))
    if init is None and member_scores[best_j] > score:
        w = np.eye(m)[best_j]
        score = member_scores[best_j]
    history = [score]
    while step >= min_step - 1e-12 and evaluations < max_evaluations:
        improved = False
        for j in range(m):
            for sign in (1.0, -1.0):
                trial = w.copy()
                trial[j] = max(0.0, trial[j] + sign * step)
                if trial.sum() <= 0 or np.allclose(trial / trial.sum(), w):
                    continue
                trial /= trial.sum()
                s = cache.score(trial)
                evaluations += 1
                if s > score + 1e-12:
                    w, score, improved = trial, s, True
                    history.append(score)
                if evaluations >= max_evaluations:
                    break
        if not improved:
            step /= 2
    result = WeightSearchResult(
        method="optimize",
        metric="miou" if cache.task == "multiclass" else "dice",
        names=cache.names,
        weights=[float(x) for x in w],
        score=float(score),
        member_scores=[float(x) for x in member_scores],
        counts=None,
        history=[float(x) for x in history],
        max_side=cache.max_side,
        evaluations=evaluations,
        seconds=time.perf_counter() - start,
    )
    if rescore:
        _rescore(cache, result)
    return result
