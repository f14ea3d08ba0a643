"""Combining members' probabilities: member checks, the three methods, exact tie rules, streaming, stores."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from segcore.errors import EnsembleError
from segcore.inference.store import ProbabilityStore, StoreReader

Method = Literal["soft", "geometric", "vote"]
_METHODS = ("soft", "geometric", "vote")
_EPS = 1e-4

Member = StoreReader | str | Path
Weights = Sequence[float] | np.ndarray  # one per member
Thresholds = float | Sequence[float] | np.ndarray  # one for all classes, or one per class


# ---------------------------------------------------------------- validation


def _open(member: Member) -> StoreReader:
    if isinstance(member, StoreReader):
        return member
    return ProbabilityStore.open(member)


def member_name(reader: StoreReader) -> str:
    """A member's display name: its ``source``, else its folder name."""
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


def normalized_weights(weights: Weights | None, n: int) -> np.ndarray:
    """One weight per member, checked and normalised to sum 1; None gives equal weights."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(list(weights), dtype=np.float64)
    if w.ndim != 1 or w.shape[0] != n:
        raise EnsembleError(f"{w.size} weights for {n} members; give one weight per member")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise EnsembleError(f"weights must be finite, non-negative and not all zero, got {list(w)}")
    return w / w.sum()


def class_thresholds(thresholds: Thresholds | None, num_classes: int) -> np.ndarray:
    """One multilabel threshold per class in [0, 1]; a single value (default 0.5) applies to all."""
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


def check_method(method: str) -> str:
    """``method`` if it is a known ensemble method, else an error listing them."""
    if method not in _METHODS:
        raise EnsembleError(f"unknown ensemble method {method!r}; choose one of {', '.join(_METHODS)}")
    return method


# ---------------------------------------------------------------- combination (pure functions)


def ensemble_probs(
    probs: Sequence[np.ndarray],
    *,
    task: str,
    method: Method = "soft",
    weights: Weights | None = None,
    thresholds: Thresholds | None = None,
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
    w = normalized_weights(weights, len(probs))
    check_method(method)
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
    thr = class_thresholds(thresholds, probs[0].shape[0]).astype(np.float32)[:, None, None]
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
            at = (p.argmax(0), *pixels)
            votes[at] += float(wi)  # one vote per pixel and member
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
    weights: Weights | None = None,
    thresholds: Thresholds | None = None,
    ids: Sequence[str] | None = None,
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(image_id, C x H x W float32)`` of the ensemble, image by image.

    Raises:
        EnsembleError: members that do not fit, bad weights or thresholds.
        StoreError: a missing or corrupt entry in a member (names the entry and the store).
    """
    readers = check_members(members)
    check_method(method)
    w = normalized_weights(weights, len(readers))
    thr = class_thresholds(thresholds, readers[0].num_classes)
    task = readers[0].task
    for image_id in ids if ids is not None else readers[0].ids:
        probs = [r.read(image_id) for r in readers]
        yield image_id, ensemble_probs(probs, task=task, method=method, weights=w, thresholds=thr)


def iter_ensemble_labels(
    members: Sequence[Member],
    *,
    method: Method = "soft",
    weights: Weights | None = None,
    thresholds: Thresholds | None = None,
    ids: Sequence[str] | None = None,
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(image_id, labels)``: H x W class indices (multiclass) or C x H x W {0, 1} (multilabel).

    Multilabel soft/geometric labels are ``p >= thresholds[c]``; vote labels follow the tie
    rules of the module docstring.
    """
    readers = check_members(members)
    check_method(method)
    w = normalized_weights(weights, len(readers))
    thr = class_thresholds(thresholds, readers[0].num_classes)
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
    weights: Weights | None = None,
    thresholds: Thresholds | None = None,
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
    w = normalized_weights(weights, len(readers))
    thr = class_thresholds(thresholds, readers[0].num_classes)
    first = readers[0]
    ttas = {str(r.tta) for r in readers}
    record = {
        "members": [{"path": str(r.path), "source": r.source} for r in readers],
        "method": check_method(method),
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
