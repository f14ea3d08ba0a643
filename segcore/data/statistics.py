"""Exploratory statistics of a dataset, computed in one pass over the labels.

What an EDA page shows: how the pixels split between classes, how many objects and images each
class has, how big the objects are, which image sizes occur, and which classes are rare enough
to need care (weighted losses, copy-paste, stratified splits). The result is plain JSON-able data;
the caller caches it (keyed by :meth:`SegDataset.fingerprint`).

Example:
    >>> stats = compute_statistics(ds)  # doctest: +SKIP
    >>> stats.rare_classes  # doctest: +SKIP
    ['mountain']
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field
from scipy import ndimage

from segcore.config import TaskType
from segcore.data.formats import CocoDataset, MultilabelJsonDataset, SegDataset

__all__ = [
    "AREA_BIN_EDGES",
    "PRESENCE_ROWS",
    "ClassStatistics",
    "DatasetStatistics",
    "compute_statistics",
    "frequency_weights",
    "pixel_shares",
    "polygon_area",
]

# Object areas in pixels are binned on a log2 scale: [1, 2), [2, 4), ... [2^20, inf).
AREA_BIN_EDGES: list[int] = [2**k for k in range(21)]
PRESENCE_ROWS = 300  # images whose per-class presence the statistics keep (what a heatmap can show)
_MAX_AREA_SAMPLES = 2000  # areas kept per class for quantiles (reservoir sample); the histogram is exact


class ClassStatistics(BaseModel):
    """Figures for one class.

    ``pixel_share``: multiclass: share of labelled (non-ignored) pixels; multilabel: share of all
    pixels covered by the class (shares may then add up to more than 1).
    """

    name: str
    index: int
    pixel_count: int
    pixel_share: float
    instance_count: int = Field(description="Objects: annotations (COCO, multilabel JSON) or connected components.")
    image_count: int = Field(description="Images in which the class occurs.")
    area_histogram: list[int] = Field(description="Object counts per AREA_BIN_EDGES bin.")
    area_min: int | None = None
    area_median: float | None = None
    area_max: int | None = None
    rare: bool = False


class DatasetStatistics(BaseModel):
    """Statistics of a dataset (or a sample of ``num_images`` of its images)."""

    task: TaskType
    num_images: int
    sampled: bool = Field(description="True when only a subset of the images was read (max_images).")
    total_pixels: int
    ignored_pixels: int = 0
    image_sizes: dict[str, int] = Field(description='"WxH" -> number of images')
    area_bin_edges: list[int] = Field(default_factory=lambda: list(AREA_BIN_EDGES))
    classes: list[ClassStatistics]
    rare_classes: list[str]
    classes_per_image: list[int] | None = Field(
        default=None, description="Images with 0, 1, 2, ... classes present (index = number of classes).")
    presence: dict[str, str] | None = Field(
        default=None, description=f"Class presence of the first {PRESENCE_ROWS} images (in id order): image id -> "
        "one '1' or '0' per class. Bounded, so the statistics stay small for any dataset size.")

    def class_weights(self, *, power: float = 0.5) -> list[float]:
        """Inverse-frequency weights ``share**-power`` normalised to mean 1 (absent classes get the max)."""
        return frequency_weights([c.pixel_share for c in self.classes], power=power)


def frequency_weights(
    shares: Sequence[float] | np.ndarray, *, power: float = 0.5, max_ratio: float | None = None
) -> list[float]:
    """Per-class weights that grow as a class gets rarer: ``w_c = share_c ** -power``, normalised to mean 1.

    ``power=0.5`` is inverse-sqrt frequency, ``power=1`` plain inverse frequency. A class that never
    occurs gets the largest weight of the others; with ``max_ratio`` no weight exceeds ``max_ratio``
    times the smallest (so a handful of pixels cannot dominate).

    Example:
        >>> [round(w, 3) for w in frequency_weights([0.81, 0.09, 0.1], power=0.5)][:2]
        [0.438, 1.315]
    """
    shares = np.asarray(shares, dtype=np.float64)
    w = np.ones_like(shares)
    present = shares > 0
    if present.any():
        w[present] = shares[present] ** -power
        w[~present] = w[present].max()
    if max_ratio is not None:
        w = np.minimum(w, max_ratio * w.min())
    return (w / w.mean()).tolist()


def pixel_shares(dataset: SegDataset, ids: Sequence[str] | None = None) -> np.ndarray:
    """Each class's share of the pixels of ``ids`` (default: every labelled image), from the masks alone.

    Shares are defined as :attr:`ClassStatistics.pixel_share`: multiclass, of the labelled (not ignored)
    pixels; multilabel, of all pixels. Cheaper than :func:`compute_statistics` (no object labelling),
    so a run can afford it over its whole training split.

    Returns:
        ``[C]`` float64; zeros when nothing is labelled.
    """
    c = dataset.num_classes
    counts = np.zeros(c, dtype=np.int64)
    denom = 0
    for image_id in dataset.ids if ids is None else ids:
        mask = dataset.load_mask(image_id)
        if dataset.task is TaskType.MULTILABEL:
            counts += mask.reshape(c, -1).sum(axis=1).astype(np.int64)
            denom += mask.shape[1] * mask.shape[2]
        else:
            binc = np.bincount(mask.ravel(), minlength=c)[:c]
            counts += binc
            denom += int(binc.sum())
    return counts / denom if denom else np.zeros(c)


def polygon_area(points: Sequence[Sequence[float]]) -> float:
    """Area of a simple polygon by the shoelace formula."""
    if len(points) < 3:
        return 0.0
    p = np.asarray(points, dtype=np.float64)
    x, y = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


class _AreaAccumulator:
    def __init__(self, num_classes: int, rng: np.random.Generator) -> None:
        self.hist = np.zeros((num_classes, len(AREA_BIN_EDGES)), dtype=np.int64)
        self.count = np.zeros(num_classes, dtype=np.int64)
        self.min = np.full(num_classes, np.iinfo(np.int64).max, dtype=np.int64)
        self.max = np.zeros(num_classes, dtype=np.int64)
        self.samples: list[list[int]] = [[] for _ in range(num_classes)]
        self.rng = rng

    def add(self, cls: int, areas: np.ndarray) -> None:
        areas = np.asarray(areas, dtype=np.int64)
        areas = areas[areas > 0]
        if areas.size == 0:
            return
        bins = np.clip(np.floor(np.log2(areas)).astype(np.int64), 0, len(AREA_BIN_EDGES) - 1)
        np.add.at(self.hist[cls], bins, 1)
        self.min[cls] = min(self.min[cls], int(areas.min()))
        self.max[cls] = max(self.max[cls], int(areas.max()))
        for a in areas.tolist():  # reservoir sampling keeps the memory bounded
            self.count[cls] += 1
            s = self.samples[cls]
            if len(s) < _MAX_AREA_SAMPLES:
                s.append(a)
            else:
                j = int(self.rng.integers(self.count[cls]))
                if j < _MAX_AREA_SAMPLES:
                    s[j] = a


def compute_statistics(
    dataset: SegDataset,
    *,
    max_images: int | None = None,
    rare_pixel_share: float = 0.01,
    rare_image_share: float = 0.05,
) -> DatasetStatistics:
    """Compute per-class and per-image statistics in one pass over the labels.

    Args:
        dataset: The dataset.
        max_images: Read at most this many images, evenly spread over the sorted ids.
        rare_pixel_share: A class with a smaller pixel share is rare.
        rare_image_share: A class present in a smaller share of the images is rare.

    Returns:
        :class:`DatasetStatistics`; classes that never occur are rare too.
    """
    ids = dataset.ids
    sampled = max_images is not None and max_images < len(ids)
    if sampled and max_images is not None:
        picks = np.unique(np.linspace(0, len(ids) - 1, num=max(max_images, 1)).round().astype(int))
        ids = [ids[i] for i in picks]
    c = dataset.num_classes
    multilabel = dataset.task is TaskType.MULTILABEL
    pixels = np.zeros(c, dtype=np.int64)
    instances = np.zeros(c, dtype=np.int64)
    images_with = np.zeros(c, dtype=np.int64)
    areas = _AreaAccumulator(c, np.random.default_rng(0))
    sizes: Counter[str] = Counter()
    per_image = np.zeros(c + 1, dtype=np.int64)
    presence: dict[str, str] = {}
    total = ignored = 0
    structure = np.ones((3, 3), dtype=bool)  # 8-connectivity: diagonal pixels belong to one object

    for image_id in ids:
        if isinstance(dataset, CocoDataset):
            h, w = dataset.image_size(image_id)
            mask: np.ndarray = np.zeros((h, w), dtype=np.uint8)
            for cls, m in dataset.instance_masks(image_id):
                mask[m.astype(bool)] = cls
                instances[cls] += 1
                areas.add(cls, np.array([int(m.sum())]))
        else:
            mask = dataset.load_mask(image_id)
        if multilabel:
            _, h, w = mask.shape
            counts = mask.reshape(c, -1).sum(axis=1).astype(np.int64)
            if isinstance(dataset, MultilabelJsonDataset):
                for cls, pts in dataset.polygons(image_id):
                    instances[cls] += 1
                    areas.add(cls, np.array([max(1, round(polygon_area(pts)))]))
        else:
            h, w = mask.shape
            binc = np.bincount(mask.ravel(), minlength=256)
            counts = binc[:c].astype(np.int64)
            ignored += int(binc[dataset.ignore_index]) if dataset.ignore_index < binc.size else 0
            if not isinstance(dataset, CocoDataset):
                for present in np.flatnonzero(counts):
                    labelled, n_objects = ndimage.label(mask == present, structure=structure)
                    instances[present] += n_objects
                    areas.add(int(present), np.bincount(labelled.ravel())[1:])
        sizes[f"{w}x{h}"] += 1
        total += h * w
        pixels += counts
        images_with += counts > 0
        per_image[int(np.count_nonzero(counts))] += 1
        if len(presence) < PRESENCE_ROWS:
            presence[image_id] = "".join("1" if n else "0" for n in counts)

    denom = (total - ignored) if not multilabel else total
    shares = pixels / denom if denom > 0 else np.zeros(c)
    n_img = max(len(ids), 1)
    stats: list[ClassStatistics] = []
    rare: list[str] = []
    for k, name in enumerate(dataset.classes):
        is_rare = bool(shares[k] < rare_pixel_share or images_with[k] / n_img < rare_image_share)
        if is_rare:
            rare.append(name)
        sample = areas.samples[k]
        stats.append(
            ClassStatistics(
                name=name,
                index=k,
                pixel_count=int(pixels[k]),
                pixel_share=float(shares[k]),
                instance_count=int(instances[k]),
                image_count=int(images_with[k]),
                area_histogram=areas.hist[k].tolist(),
                area_min=int(areas.min[k]) if sample else None,
                area_median=float(np.median(sample)) if sample else None,
                area_max=int(areas.max[k]) if sample else None,
                rare=is_rare,
            )
        )
    return DatasetStatistics(
        task=dataset.task,
        num_images=len(ids),
        sampled=sampled,
        total_pixels=int(total),
        ignored_pixels=int(ignored),
        image_sizes=dict(sorted(sizes.items())),
        classes=stats,
        rare_classes=rare,
        classes_per_image=per_image.tolist(),
        presence=presence,
    )
