"""One streaming pass over ``(image_id, prediction, ground truth)`` that fills an AnalysisReport."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from segcore.analysis._accumulator import Accumulator
from segcore.analysis._inputs import as_task
from segcore.analysis.boundary import _kernel
from segcore.analysis.objects import DEFAULT_SIZE_BINS, check_size_bins
from segcore.analysis.report import AnalysisParameters, AnalysisReport
from segcore.config import TaskType
from segcore.errors import ConfigError, SegcoreError, StoreError

__all__ = ["ProbabilitySource", "analyze", "analyze_store"]

Sample = tuple[str, np.ndarray, np.ndarray]


class ProbabilitySource(Protocol):
    """What :func:`analyze_store` reads: e.g. ``segcore.inference.ProbabilityStore.open(path)``."""

    @property
    def ids(self) -> Sequence[str]: ...

    def read(self, image_id: str) -> np.ndarray: ...


def _check_parameters(p: AnalysisParameters) -> None:
    c = len(p.classes)
    if c == 0:
        raise ConfigError("classes is empty; pass the dataset's class names in index order")
    if p.background is not None and not 0 <= p.background < c:
        raise ConfigError(
            f"background={p.background} is not a class index (0..{c - 1}); pass the background "
            "class's index, or None when the dataset has no background class"
        )
    if p.task is TaskType.MULTICLASS and p.ignore_index is not None and 0 <= p.ignore_index < c:
        raise ConfigError(
            f"ignore_index={p.ignore_index} is also a class index; pass the value that marks "
            "unlabelled pixels (e.g. 255), or None"
        )
    if not 0.0 < p.found_share <= 1.0:
        raise ConfigError(f"found_share must be in (0, 1], got {p.found_share}")
    if not 0.0 < p.threshold < 1.0:
        raise ConfigError(f"threshold must be in (0, 1), got {p.threshold}")
    if p.worst_k < 0:
        raise ConfigError(f"worst_k must be >= 0, got {p.worst_k}")
    if p.confidence_bins < 1:
        raise ConfigError(f"confidence_bins must be >= 1, got {p.confidence_bins}")
    if p.connectivity not in (4, 8):
        raise ConfigError(f"connectivity must be 4 or 8, got {p.connectivity}")
    _kernel(p.boundary_px)
    check_size_bins(p.size_bins)


def analyze(
    samples: Iterable[Sample],
    *,
    task: TaskType | str,
    classes: Sequence[str],
    ignore_index: int | None = 255,
    background: int | None = 0,
    boundary_px: int = 3,
    size_bins: Sequence[int] = DEFAULT_SIZE_BINS,
    folds: Mapping[str, int | str] | None = None,
    found_share: float = 0.5,
    connectivity: int = 8,
    threshold: float = 0.5,
    confidence_bins: int = 20,
    worst_k: int = 10,
) -> AnalysisReport:
    """Analyse predictions against the ground truth in one streaming pass.

    Only one image is held at a time; what is kept per image is a small summary.

    Args:
        samples: ``(image_id, prediction, ground_truth)`` triples. The prediction is ``CxHxW``
            float32 probabilities, or a multiclass ``HxW`` integer class map, or a multilabel
            ``CxHxW`` bool mask; the ground truth is multiclass ``HxW`` integer (``ignore_index``
            where unlabelled) or multilabel ``CxHxW`` {0, 1}.
        task: ``"multiclass"`` or ``"multilabel"``.
        classes: ``C`` class names in index order.
        ignore_index: multiclass ground-truth value of unlabelled pixels, left out of every figure
            (``None``: none). Unused for multilabel.
        background: multiclass background class index; ``None`` when the dataset has none, in
            which case under- and over-prediction are undefined and only wrong class is reported.
        boundary_px: width ``k`` of the boundary band (pixels, Chebyshev distance), also the
            contour width ``d`` of boundary IoU.
        size_bins: increasing lower edges (pixels) of the object-size bins.
        folds: image id -> fold, for per-fold metrics (every image must have one); ``None``: pooled
            only.
        found_share: share of an object's pixels that must be predicted as its class for it to be
            found.
        connectivity: 4 or 8, for the objects' connected components.
        threshold: multilabel decision threshold on probabilities.
        confidence_bins: number of confidence-histogram bins on ``[0, 1]``.
        worst_k: how many worst images to list per class.

    Returns:
        The :class:`AnalysisReport`.

    Raises:
        ConfigError: an argument is invalid.
        DatasetError: a ground truth does not fit the classes, or an image id repeats.
        StoreError: a prediction does not fit the classes or its ground truth's size.

    Example:
        >>> gt = np.zeros((8, 8), np.uint8); gt[2:6, 2:6] = 1
        >>> report = analyze([("a", gt.copy(), gt)], task="multiclass", classes=["bg", "fg"])
        >>> report.pooled.mean_iou
        1.0
    """
    params = _make_parameters(
        task=task,
        classes=classes,
        ignore_index=ignore_index,
        background=background,
        boundary_px=boundary_px,
        size_bins=size_bins,
        found_share=found_share,
        connectivity=connectivity,
        threshold=threshold,
        confidence_bins=confidence_bins,
        worst_k=worst_k,
    )
    acc = Accumulator(params)
    for sample in samples:
        try:
            image_id, pred, gt = sample
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                "each sample must be a tuple (image_id, prediction, ground_truth)"
            ) from exc
        fold = None
        if folds is not None:
            if image_id not in folds:
                raise ConfigError(
                    f"image {image_id!r} has no fold in folds; give every analysed image a fold "
                    "or pass folds=None"
                )
            fold = str(folds[image_id])
        acc.add(str(image_id), pred, gt, fold)
    return acc.finish()


def _read_samples(
    store: ProbabilitySource, load_gt: Callable[[str], np.ndarray], ids: Sequence[str]
) -> Iterator[Sample]:
    for image_id in ids:
        try:
            probs = store.read(image_id)
        except SegcoreError:
            raise
        except (OSError, KeyError, ValueError) as exc:
            raise StoreError(
                f"cannot read the probabilities of image {image_id!r}: {exc}; check that the store "
                "is complete, or predict again"
            ) from exc
        yield image_id, probs, load_gt(image_id)


def analyze_store(
    store: ProbabilitySource,
    load_gt: Callable[[str], np.ndarray],
    *,
    ids: Sequence[str] | None = None,
    cache_path: str | Path | None = None,
    **kwargs: Any,
) -> AnalysisReport:
    """Analyse a probability store (a run's or an ensemble's) against the ground truth.

    Args:
        store: an object with ``.ids`` and ``.read(id) -> CxHxW float32``, e.g.
            ``ProbabilityStore.open(path)``.
        load_gt: image id -> ground truth (e.g. ``dataset.load_mask``).
        ids: the images to analyse (default: every id of the store).
        cache_path: a JSON file; when it holds a report computed with the same parameters on the
            same images it is returned as is, otherwise the analysis runs and is written there.
        **kwargs: the keyword arguments of :func:`analyze` (``task``, ``classes``, ``folds``, ...);
            ``task`` and ``classes`` default to the store's own when it has them.

    Returns:
        The :class:`AnalysisReport`.
    """
    ids = list(store.ids if ids is None else ids)
    for name in ("task", "classes"):  # a ProbabilityStore reader knows both
        if name not in kwargs and getattr(store, name, None) is not None:
            kwargs[name] = getattr(store, name)
    if cache_path is not None and Path(cache_path).exists():
        try:
            cached = AnalysisReport.load(cache_path)
        except StoreError:
            cached = None  # unreadable or of another schema: computed again and overwritten
        if cached is not None and _same_request(cached, ids, kwargs):
            return cached
    report = analyze(_read_samples(store, load_gt, ids), **kwargs)
    if cache_path is not None:
        report.save(cache_path)
    return report


def _same_request(report: AnalysisReport, ids: Sequence[str], kwargs: Mapping[str, Any]) -> bool:
    try:
        wanted = _parameters_of(kwargs)
    except (TypeError, ValueError, SegcoreError):
        return False
    folds = kwargs.get("folds")
    images = [(img.image_id, img.fold) for img in report.images]
    asked = [(i, None if folds is None else str(folds.get(i))) for i in ids]
    return report.parameters == wanted and images == asked


def _parameters_of(kwargs: Mapping[str, Any]) -> AnalysisParameters:
    bound = inspect.signature(analyze).bind((), **kwargs)
    bound.apply_defaults()
    args = dict(bound.arguments)
    for name in ("samples", "folds"):
        args.pop(name)
    return _make_parameters(**args)


def _make_parameters(
    *, task: TaskType | str, classes: Sequence[str], size_bins: Sequence[int], **rest: Any
) -> AnalysisParameters:
    task = as_task(task)
    params = AnalysisParameters(
        task=task, classes=list(classes), size_bins=[int(b) for b in size_bins], **rest
    )
    if task is TaskType.MULTILABEL:
        # multilabel masks are {0, 1}: nothing is ignored and no class is background
        params = params.model_copy(update={"ignore_index": None, "background": None})
    _check_parameters(params)
    return params
