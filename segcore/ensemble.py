"""Ensembles of stored predictions, and weight search on validation / out-of-fold probabilities.

Members are probability stores (:mod:`segcore.inference.store`) over the same images with the
same classes. Everything streams image by image: memory holds one image of every member
(plus the output), whatever the number of images.

Methods (``method=``):

- ``soft``: weighted arithmetic mean of probabilities.
- ``geometric``: weighted geometric mean, normalised: multiclass ``softmax(sum_m w_m log p_m)``,
  multilabel ``sigmoid(sum_m w_m logit p_m)`` (probabilities clipped to [1e-4, 1 - 1e-4]).
- ``vote``: hard voting. Multiclass: each member votes its argmax class with its weight.
  The class with the most weight wins; a tie goes to the tied class with the highest weighted
  mean probability, then to the lowest class index. Multilabel: each member votes per class
  ``p >= threshold[c]``; a pixel is in the class when more than half the weight votes for it,
  and at exactly half when the weighted mean probability reaches the threshold. The
  "probabilities" of a vote ensemble (what :func:`iter_ensemble` yields and stores) are the
  weighted vote shares; decode labels with :func:`iter_ensemble_labels` to get the tie rule.

Labels (:func:`iter_ensemble_labels`, :func:`evaluate`) compare weighted means and vote shares
exactly: they are summed in float64 from the members' stored values (uint8 codes, not their
float32 dequantization), so an exact tie follows the rule above (soft: the lowest class index)
instead of whichever class float32 rounding favours.

Weight search (:func:`greedy_selection`, :func:`optimize_weights`) scores the soft mean with the
dataset-level mIoU (multiclass) or mean Dice (multilabel), from a confusion matrix counted in
NumPy with the definitions of :mod:`segcore.metrics` (a class absent from both prediction and
ground truth is left out of the mean). Searching re-scores the ensemble hundreds of times,
so :class:`SearchCache` first caches every member and the ground truth on a reduced grid
(longest side ``max_side``, uint8); scores are reported at that resolution, and
``rescore=True`` adds the full-resolution scores from one streamed pass.

Example:
    >>> out = ensemble_to_store(["runs/a/pred", "runs/b/pred"], "ens", weights=[2, 1])  # doctest: +SKIP
    >>> cache = SearchCache.build(stores, load_mask)  # doctest: +SKIP
    >>> greedy_selection(cache).weights  # doctest: +SKIP
    [0.6, 0.4, 0.0]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from segcore.errors import EnsembleError
from segcore.inference.store import ProbabilityStore, StoreReader
from segcore.scores import class_scores, confusion, confusion_tp_fp_fn, nan_mean

__all__ = [
    "Method",
    "SearchCache",
    "WeightSearchResult",
    "check_members",
    "ensemble_probs",
    "ensemble_to_store",
    "evaluate",
    "greedy_selection",
    "iter_ensemble",
    "iter_ensemble_labels",
    "optimize_weights",
]

Method = Literal["soft", "geometric", "vote"]
_METHODS = ("soft", "geometric", "vote")
_EPS = 1e-4

Member = StoreReader | str | Path
Targets = Callable[[str], np.ndarray] | Mapping[str, np.ndarray]


# ---------------------------------------------------------------- validation


def _open(member: Member) -> StoreReader:
    if isinstance(member, StoreReader):
        return member
    return ProbabilityStore.open(member)


def _name(reader: StoreReader) -> str:
    return reader.source or reader.path.name


def check_members(members: Sequence[Member]) -> list[StoreReader]:
    """Open the members and check that they fit together.

    Returns:
        The readers, in the given order.

    Raises:
        EnsembleError: no members, or members with another task, other classes, other image ids
            or other image sizes than the first one.
        StoreError: a member cannot be opened.
    """
    if not members:
        raise EnsembleError("an ensemble needs at least one member store")
    readers = [_open(m) for m in members]
    first = readers[0]
    ids = set(first.ids)
    for r in readers[1:]:
        if r.task != first.task:
            raise EnsembleError(f"member {r.path} is {r.task}, {first.path} is {first.task}; ensemble like with like")
        if r.classes != first.classes:
            raise EnsembleError(
                f"member {r.path} has classes {r.classes}, {first.path} has {first.classes}; "
                "members must predict the same classes in the same order"
            )
        other = set(r.ids)
        if other != ids:
            missing = sorted(ids - other)[:5]
            extra = sorted(other - ids)[:5]
            raise EnsembleError(
                f"member {r.path} covers other images than {first.path}: missing {missing}"
                f"{'...' if len(ids - other) > 5 else ''}, extra {extra}{'...' if len(other - ids) > 5 else ''}; "
                "predict every member on the same image set"
            )
        for image_id in first.ids:
            if r.size(image_id) != first.size(image_id):
                raise EnsembleError(
                    f"image {image_id!r} is {r.size(image_id)} in {r.path} but {first.size(image_id)} in "
                    f"{first.path}; members must be predicted at the images' original sizes"
                )
    return readers


def _weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(list(weights), dtype=np.float64)
    if w.ndim != 1 or w.shape[0] != n:
        raise EnsembleError(f"{w.size} weights for {n} members; give one weight per member")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise EnsembleError(f"weights must be finite, non-negative and not all zero, got {list(w)}")
    return w / w.sum()


def _thresholds(thresholds: float | Sequence[float] | None, num_classes: int) -> np.ndarray:
    if thresholds is None:
        thresholds = 0.5
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim == 0:
        t = np.full(num_classes, float(t))
    if t.ndim != 1 or t.shape[0] != num_classes:
        raise EnsembleError(f"{t.size} thresholds for {num_classes} classes; give one per class or a single value")
    if not np.all((t >= 0) & (t <= 1)):
        raise EnsembleError(f"thresholds must lie in [0, 1], got {list(t)}")
    return t


def _method(method: str) -> str:
    if method not in _METHODS:
        raise EnsembleError(f"unknown ensemble method {method!r}; choose one of {', '.join(_METHODS)}")
    return method


# ---------------------------------------------------------------- combination (pure functions)


def ensemble_probs(
    probs: Sequence[np.ndarray],
    *,
    task: str,
    method: Method = "soft",
    weights: Sequence[float] | None = None,
    thresholds: float | Sequence[float] | None = None,
) -> np.ndarray:
    """Combine one image's member probabilities.

    Args:
        probs: one C x H x W float32 array per member.
        task: ``multiclass`` or ``multilabel``.
        method: ``soft``, ``geometric`` or ``vote`` (see the module docstring).
        weights: one non-negative weight per member (normalised); None for equal weights.
        thresholds: multilabel vote only: per-class (or one) threshold in [0, 1].

    Returns:
        C x H x W float32: probabilities (soft, geometric) or weighted vote shares (vote).
    """
    w = _weights(weights, len(probs))
    _method(method)
    if method == "soft":
        out = np.zeros_like(probs[0], dtype=np.float32)
        for wi, p in zip(w, probs):
            out += np.float32(wi) * p
        return out
    if method == "geometric":
        acc = np.zeros_like(probs[0], dtype=np.float32)
        for wi, p in zip(w, probs):
            q = np.clip(p, _EPS, 1 - _EPS)
            acc += np.float32(wi) * (np.log(q) if task == "multiclass" else np.log(q) - np.log1p(-q))
        if task == "multiclass":
            acc -= acc.max(0, keepdims=True)
            np.exp(acc, out=acc)
            acc /= acc.sum(0, keepdims=True)
            return acc
        return (1.0 / (1.0 + np.exp(-acc))).astype(np.float32)
    votes = np.zeros_like(probs[0], dtype=np.float32)
    if task == "multiclass":
        c = probs[0].shape[0]
        for wi, p in zip(w, probs):
            winner = p.argmax(0)
            for k in range(c):
                votes[k] += np.float32(wi) * (winner == k)
        return votes
    thr = _thresholds(thresholds, probs[0].shape[0]).astype(np.float32)[:, None, None]
    for wi, p in zip(w, probs):
        votes += np.float32(wi) * (p >= thr)
    return votes


# Weighted means (and vote shares) closer than this are equal. They are summed in float64 from the
# members' exact values (uint8 codes, see _weighted_mean), so an exact tie differs by rounding only
# (~1e-16), far below any difference that stored probabilities and practical weights produce.
_TIE = 1e-12


def _weighted_mean(probs: Sequence[np.ndarray], weights: np.ndarray, quantized: Sequence[bool]) -> np.ndarray:
    """C x H x W float64 weighted mean, summed one member at a time.

    A quantized member's values are snapped back to their integer codes (``rint(p * 255)`` is
    exact for dequantized uint8) and weighted by ``w / 255``, so members that tie in integers
    tie here up to float64 rounding.
    """
    acc = np.zeros(probs[0].shape, np.float64)
    for wi, p, q in zip(weights, probs, quantized):
        if q:
            acc += np.rint(p * np.float32(255.0)) * np.float64(wi / 255.0)
        else:
            acc += p * np.float64(wi)
    return acc


def _first_max(values: np.ndarray, among: np.ndarray | None = None) -> np.ndarray:
    """Per pixel, the lowest class index whose value ties with the largest (only classes in ``among``)."""
    if among is not None:
        values = np.where(among, values, -np.inf)
    return (values >= values.max(0, keepdims=True) - _TIE).argmax(0)


def _labels(
    probs: Sequence[np.ndarray],
    *,
    task: str,
    method: str,
    weights: np.ndarray,
    thresholds: np.ndarray,
    quantized: Sequence[bool] | None = None,
) -> np.ndarray:
    """Decode one image's ensemble into labels with the tie rules of the module docstring.

    Args:
        probs: one C x H x W array per member.
        quantized: per member, whether its values are uint8 codes / 255 (a uint8 store read at
            full resolution); those are summed exactly. None: no member is.
    """
    quantized = list(quantized) if quantized is not None else [False] * len(probs)
    c = probs[0].shape[0]
    dtype = np.uint8 if c <= 256 else np.uint16
    thr = thresholds.astype(np.float64)[:, None, None]
    if method == "geometric":
        combined = ensemble_probs(probs, task=task, method="geometric", weights=weights)
        if task == "multiclass":
            return combined.argmax(0).astype(dtype)
        return (combined >= thr.astype(np.float32)).astype(np.uint8)
    mean = _weighted_mean(probs, weights, quantized)
    if method == "soft":
        if task == "multiclass":
            return _first_max(mean).astype(dtype)
        return (mean >= thr - _TIE).astype(np.uint8)
    votes = np.zeros(probs[0].shape, np.float64)
    if task == "multiclass":
        pixels = np.indices(probs[0].shape[1:], sparse=True)
        for wi, p in zip(weights, probs):
            votes[(p.argmax(0), *pixels)] += float(wi)  # one vote per pixel and member
        tied = votes >= votes.max(0, keepdims=True) - _TIE
        return _first_max(mean, among=tied).astype(dtype)
    member_thr = thresholds.astype(np.float32)[:, None, None]  # each member votes as ensemble_probs counts it
    for wi, p in zip(weights, probs):
        votes += float(wi) * (p >= member_thr)
    half = np.abs(votes - 0.5) <= _TIE
    return np.where(half, mean >= thr - _TIE, votes > 0.5).astype(np.uint8)


# ---------------------------------------------------------------- streaming


def iter_ensemble(
    members: Sequence[Member],
    *,
    method: Method = "soft",
    weights: Sequence[float] | None = None,
    thresholds: float | Sequence[float] | None = None,
    ids: Sequence[str] | None = None,
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(image_id, C x H x W float32)`` of the ensemble, image by image.

    Raises:
        EnsembleError: members that do not fit, bad weights or thresholds.
        StoreError: a missing or corrupt entry in a member (names the entry and the store).
    """
    readers = check_members(members)
    _method(method)
    w = _weights(weights, len(readers))
    thr = _thresholds(thresholds, readers[0].num_classes)
    task = readers[0].task
    for image_id in ids if ids is not None else readers[0].ids:
        probs = [r.read(image_id) for r in readers]
        yield image_id, ensemble_probs(probs, task=task, method=method, weights=w, thresholds=thr)


def iter_ensemble_labels(
    members: Sequence[Member],
    *,
    method: Method = "soft",
    weights: Sequence[float] | None = None,
    thresholds: float | Sequence[float] | None = None,
    ids: Sequence[str] | None = None,
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(image_id, labels)``: H x W class indices (multiclass) or C x H x W {0, 1} (multilabel).

    Multilabel soft/geometric labels are ``p >= thresholds[c]``; vote labels follow the tie
    rules of the module docstring.
    """
    readers = check_members(members)
    _method(method)
    w = _weights(weights, len(readers))
    thr = _thresholds(thresholds, readers[0].num_classes)
    task = readers[0].task
    for image_id in ids if ids is not None else readers[0].ids:
        probs = [r.read(image_id) for r in readers]
        quantized = [r.dtype == "uint8" and r.stored_size(image_id) == r.size(image_id) for r in readers]
        yield image_id, _labels(probs, task=task, method=method, weights=w, thresholds=thr, quantized=quantized)


def ensemble_to_store(
    members: Sequence[Member],
    out_path: str | Path,
    *,
    method: Method = "soft",
    weights: Sequence[float] | None = None,
    thresholds: float | Sequence[float] | None = None,
    dtype: str = "uint8",
    max_side: int | None = None,
    meta: Mapping[str, Any] | None = None,
    source: str | None = None,
    overwrite: bool = False,
) -> StoreReader:
    """Write the ensemble of ``members`` to a new store (atomically) and open it.

    The manifest's ``meta.ensemble`` records the member stores, the method, the weights and the
    thresholds; ``tta`` is the members' policy when they all share it.
    """
    readers = check_members(members)
    w = _weights(weights, len(readers))
    thr = _thresholds(thresholds, readers[0].num_classes)
    first = readers[0]
    ttas = {str(r.tta) for r in readers}
    record = {
        "members": [{"path": str(r.path), "source": r.source} for r in readers],
        "method": _method(method),
        "weights": [float(x) for x in w],
        "thresholds": [float(x) for x in thr],
    }
    with ProbabilityStore.create(
        out_path,
        classes=first.classes,
        task=first.task,
        dtype=dtype,
        max_side=max_side,
        meta={**(meta or {}), "ensemble": record},
        tta=first.tta if len(ttas) == 1 else None,
        source=source,
        overwrite=overwrite,
    ) as writer:
        for image_id, probs in iter_ensemble(readers, method=method, weights=w, thresholds=thr):
            writer.write(image_id, probs)
    return ProbabilityStore.open(out_path)


# ---------------------------------------------------------------- scoring


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
            names=[_name(r) for r in readers],
            ids=ids,
            task=task,
            num_classes=c,
            probs=probs,
            target=target,
            valid=valid,
            thresholds=_thresholds(thresholds, c),
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

    def score(self, weights: Sequence[float]) -> float:
        """Dataset-level mIoU / mean Dice of the soft ensemble with ``weights`` on the grid."""
        w = _weights(weights, self.probs.shape[0])
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
    w = _weights(init, m)
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

