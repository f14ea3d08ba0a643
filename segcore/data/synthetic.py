"""Small synthetic datasets in each on-disk format, for tests, demos and smoke runs.

Objects are textured shapes (class ``k`` always has the same shape, colour and stripe pattern, so a
model can learn them) on noisy backgrounds. Class frequencies decay geometrically, like real
competition data where the commonest class has 100x the instances of the rarest.

Example:
    >>> src = make_synthetic_coco("/tmp/shapes", num_images=8, num_classes=3)  # doctest: +SKIP
    >>> src.format
    'coco'
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segcore.config import CocoSource, MaskFolderSource, MultilabelJsonSource
from segcore.data.formats import rasterize_polygons

__all__ = [
    "class_frequencies",
    "make_synthetic_coco",
    "make_synthetic_mask_folder",
    "make_synthetic_multilabel",
]

_SHAPES = ("circle", "rectangle", "triangle")


def class_frequencies(num_classes: int, imbalance: float) -> np.ndarray:
    """Relative frequency of classes ``1..num_classes``: geometric decay by ``imbalance`` per class.

    ``imbalance=1`` is balanced; ``0.6`` over 12 classes gives a ratio of about 275 between the
    commonest and the rarest class (like a 7000-to-50-instance trash dataset at 0.64).
    """
    if not 0 < imbalance <= 1:
        raise ValueError(f"imbalance must be in (0, 1], got {imbalance}")
    w = imbalance ** np.arange(num_classes, dtype=np.float64)
    return w / w.sum()


def _colour(cls: int) -> np.ndarray:
    # well separated hues, fixed per class
    hue = (cls * 0.61803398875) % 1.0
    r, g, b = (0.5 + 0.5 * math.cos(2 * math.pi * (hue + off)) for off in (0.0, 1 / 3, 2 / 3))
    return np.array([r, g, b]) * 200 + 40


def _texture(cls: int, size: int) -> np.ndarray:
    """``size x size x 3`` float texture of class ``cls``: its colour modulated by stripes."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = (cls * 37 % 180) * math.pi / 180
    period = 3 + cls % 5
    stripes = 0.5 + 0.5 * np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
    return _colour(cls)[None, None, :] * (0.65 + 0.35 * stripes[..., None])


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(60, 140)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    gx, gy = rng.uniform(-0.4, 0.4, size=2)
    img = base + gx * xx + gy * yy
    img = img[..., None] + rng.normal(0, 12, size=(size, size, 3))
    return img


def _shape_polygon(shape: str, cx: float, cy: float, r: float, rng: np.random.Generator) -> list[list[float]]:
    if shape == "circle":
        n = 16
        return [[cx + r * math.cos(2 * math.pi * i / n), cy + r * math.sin(2 * math.pi * i / n)] for i in range(n)]
    if shape == "rectangle":
        w, h = r * rng.uniform(0.7, 1.3), r * rng.uniform(0.7, 1.3)
        return [[cx - w, cy - h], [cx + w, cy - h], [cx + w, cy + h], [cx - w, cy + h]]
    a = rng.uniform(0, 2 * math.pi)
    return [[cx + r * math.cos(a + 2 * math.pi * i / 3), cy + r * math.sin(a + 2 * math.pi * i / 3)] for i in range(3)]


def _clip_polygon(poly: list[list[float]], size: int) -> list[list[float]]:
    return [[min(max(x, 0.0), size - 1.0), min(max(y, 0.0), size - 1.0)] for x, y in poly]


def _render(
    rng: np.random.Generator, size: int, objects: Sequence[tuple[int, list[list[float]]]]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Paint ``(class, polygon)`` objects in order onto a noisy background; returns image and object masks."""
    img = _background(rng, size)
    masks = []
    for cls, poly in objects:
        m = rasterize_polygons([poly], size, size).astype(bool)
        img[m] = _texture(cls, size)[m] + rng.normal(0, 6, size=(int(m.sum()), 3))
        masks.append(m)
    return np.clip(img, 0, 255).astype(np.uint8), masks


def _random_objects(
    rng: np.random.Generator, size: int, classes: Sequence[int], radius: tuple[float, float]
) -> list[tuple[int, list[list[float]]]]:
    out = []
    for cls in classes:
        r = rng.uniform(*radius) * size
        cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
        poly = _clip_polygon(_shape_polygon(_SHAPES[(cls - 1) % 3], cx, cy, r, rng), size)
        out.append((cls, poly))
    return out


def _write_test_images(folder: Path, rng: np.random.Generator, n: int, size: int, num_classes: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        k = int(rng.integers(1, 4))
        objs = _random_objects(rng, size, [int(c) for c in rng.integers(1, num_classes + 1, size=k)], (0.1, 0.22))
        img, _ = _render(rng, size, objs)
        Image.fromarray(img).save(folder / f"test_{i:04d}.png")


def make_synthetic_coco(
    path: str | Path,
    *,
    num_images: int = 24,
    num_classes: int = 4,
    size: int = 64,
    imbalance: float = 0.5,
    objects_per_image: tuple[int, int] = (1, 4),
    num_test_images: int = 4,
    rle_every: int = 0,
    seed: int = 0,
) -> CocoSource:
    """Write a COCO-format dataset of textured shapes with geometrically decaying class frequencies.

    Layout: ``images/img_0000.png ...``, ``annotations.json``, ``test/test_0000.png ...``.
    The first ``num_classes`` images each hold one object of class ``1..num_classes`` so that every
    class occurs at least once; all other objects draw their class from :func:`class_frequencies`.

    Args:
        path: Folder to create (may exist).
        num_images: Labelled images.
        num_classes: Object classes; the dataset has ``num_classes + 1`` classes with background.
        size: Image side in pixels.
        imbalance: Frequency ratio between consecutive classes, in (0, 1]; 1 is balanced.
        objects_per_image: Inclusive range of objects per image.
        num_test_images: Unlabelled images written to ``test/``.
        rle_every: When > 0, every ``rle_every``-th annotation is stored as uncompressed RLE with
            ``iscrowd=1`` instead of a polygon.
        seed: Everything written is a function of the arguments and this seed.

    Returns:
        The :class:`~segcore.config.CocoSource` describing it (absolute ``root``).
    """
    root = Path(path)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    freqs = class_frequencies(num_classes, imbalance)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    ann_id = 1
    lo, hi = objects_per_image
    for i in range(num_images):
        k = int(rng.integers(lo, hi + 1))
        classes = [int(c) + 1 for c in rng.choice(num_classes, size=k, p=freqs)]
        if i < num_classes:
            classes[0] = i + 1
        objs = _random_objects(rng, size, classes, (0.08, 0.2))
        img, masks = _render(rng, size, objs)
        name = f"img_{i:04d}.png"
        Image.fromarray(img).save(images_dir / name)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for (cls, poly), m in zip(objs, masks):
            ys, xs = np.nonzero(m)
            if xs.size == 0:
                continue
            bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
            ann: dict[str, Any] = {
                "id": ann_id,
                "image_id": i + 1,
                "category_id": cls,
                "area": float(m.sum()),
                "bbox": bbox,
                "iscrowd": 0,
            }
            if rle_every and ann_id % rle_every == 0:
                ann["segmentation"] = {"size": [size, size], "counts": _uncompressed_rle(m)}
                ann["iscrowd"] = 1
            else:
                ann["segmentation"] = [[round(v, 2) for xy in poly for v in xy]]
            annotations.append(ann)
            ann_id += 1
    categories = [
        {"id": c, "name": f"{_SHAPES[(c - 1) % 3]}_{c}", "supercategory": "shape"} for c in range(1, num_classes + 1)
    ]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations.json").write_text(json.dumps(coco), encoding="utf-8")
    test = None
    if num_test_images:
        _write_test_images(root / "test", rng, num_test_images, size, num_classes)
        test = "test"
    return CocoSource(root=str(root.resolve()), test_images=test)


def _uncompressed_rle(mask: np.ndarray) -> list[int]:
    """COCO uncompressed RLE counts (column-major, starting with a run of zeros)."""
    flat = mask.astype(np.uint8).ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        runs = [0, *runs]
    return [int(r) for r in runs]


def make_synthetic_mask_folder(
    path: str | Path,
    *,
    num_images: int = 12,
    num_classes: int = 3,
    size: int = 64,
    imbalance: float = 0.6,
    value_step: int = 1,
    ignore_value: int | None = 255,
    num_test_images: int = 2,
    write_splits: bool = False,
    seed: int = 0,
) -> MaskFolderSource:
    """Write a mask-folder dataset: ``images/*.png``, ``masks/*.png`` (and ``test/``, ``splits/``).

    Class 0 is the background; shapes of classes ``1..num_classes-1`` are painted on it. A thin
    strip along the bottom row is written with ``ignore_value`` when that is set.

    Args:
        path: Folder to create (may exist).
        num_images: Labelled images.
        num_classes: Classes including the background.
        size: Image side in pixels.
        imbalance: Frequency ratio between consecutive object classes.
        value_step: Mask pixel value of class ``c`` is ``c * value_step`` (255 with 2 classes gives
            ISBI-style 0/255 masks); the returned source carries the matching ``value_map``.
        ignore_value: Pixel value of unlabelled pixels, or None for none.
        num_test_images: Unlabelled images written to ``test/``.
        write_splits: Also write ``splits/train.txt`` and ``splits/val.txt`` (every 4th image in val).
        seed: Everything written is a function of the arguments and this seed.
    """
    root = Path(path)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_obj = max(num_classes - 1, 1)
    freqs = class_frequencies(n_obj, imbalance)
    stems = []
    for i in range(num_images):
        k = int(rng.integers(1, 4))
        classes = [int(c) + 1 for c in rng.choice(n_obj, size=k, p=freqs)] if num_classes > 1 else []
        if classes and i < n_obj:
            classes[0] = i + 1
        objs = _random_objects(rng, size, classes, (0.1, 0.25))
        img, masks = _render(rng, size, objs)
        label = np.zeros((size, size), dtype=np.uint8)
        for (cls, _), m in zip(objs, masks):
            label[m] = cls * value_step
        if ignore_value is not None:
            label[-1, :] = ignore_value
        stem = f"img_{i:04d}"
        stems.append(stem)
        Image.fromarray(img).save(root / "images" / f"{stem}.png")
        Image.fromarray(label).save(root / "masks" / f"{stem}.png")
    test = None
    if num_test_images:
        _write_test_images(root / "test", rng, num_test_images, size, max(num_classes - 1, 1))
        test = "test"
    if write_splits:
        (root / "splits").mkdir(exist_ok=True)
        val = stems[::4]
        train = [s for s in stems if s not in val]
        (root / "splits" / "train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
        (root / "splits" / "val.txt").write_text("\n".join(val) + "\n", encoding="utf-8")
    value_map = None if value_step == 1 else {c * value_step: c for c in range(num_classes)}
    return MaskFolderSource(root=str(root.resolve()), test_images=test, value_map=value_map, ignore_value=ignore_value)


def make_synthetic_multilabel(
    path: str | Path,
    *,
    num_images: int = 8,
    classes: Sequence[str] = ("bone", "joint", "implant"),
    size: int = 64,
    num_test_images: int = 2,
    seed: int = 0,
) -> MultilabelJsonSource:
    """Write a multilabel-JSON dataset whose classes overlap: ``images/``, ``annotations/``, ``test/``.

    Each image has one large object of the first class and smaller objects of the other classes
    placed over it, so pixels belong to several classes at once.
    """
    root = Path(path)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(num_images):
        r0 = size * rng.uniform(0.25, 0.35)
        cx, cy = rng.uniform(r0, size - r0, size=2)
        objs = [(1, _clip_polygon(_shape_polygon("rectangle", cx, cy, r0, rng), size))]
        for c in range(2, len(classes) + 1):
            if rng.random() < 0.8 or i < 2:
                r = size * rng.uniform(0.08, 0.15)
                ox, oy = cx + rng.uniform(-r0 / 2, r0 / 2), cy + rng.uniform(-r0 / 2, r0 / 2)
                objs.append((c, _clip_polygon(_shape_polygon(_SHAPES[(c - 1) % 3], ox, oy, r, rng), size)))
        img, _ = _render(rng, size, objs)
        grey = img.mean(axis=2).astype(np.uint8)  # X-ray style single channel
        stem = f"img_{i:04d}"
        Image.fromarray(grey).save(root / "images" / f"{stem}.png")
        anns = [{"label": classes[c - 1], "points": [[round(x, 2), round(y, 2)] for x, y in poly]} for c, poly in objs]
        (root / "annotations" / f"{stem}.json").write_text(json.dumps({"annotations": anns}), encoding="utf-8")
    test = None
    if num_test_images:
        (root / "test").mkdir(exist_ok=True)
        for i in range(num_test_images):
            objs = _random_objects(rng, size, [1, 2], (0.1, 0.25))
            img, _ = _render(rng, size, objs)
            Image.fromarray(img.mean(axis=2).astype(np.uint8)).save(root / "test" / f"test_{i:04d}.png")
        test = "test"
    return MultilabelJsonSource(root=str(root.resolve()), test_images=test)
