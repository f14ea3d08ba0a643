"""Reading the three on-disk dataset formats into one torch-free :class:`SegDataset`.

Formats (see ``docs/datasets.md`` for the layouts):

- ``coco``: a COCO instances JSON (polygons, compressed or uncompressed RLE) and an image folder.
  Class 0 is background; categories map to classes 1..N.
- ``mask_folder``: images and single-channel index PNG masks with the same file stem.
- ``multilabel_json``: one ``<stem>.json`` of labelled polygons per image; classes may overlap.

Example:
    >>> from segcore.config import MaskFolderSource
    >>> ds = open_dataset(MaskFolderSource(root="/data/sbd", ignore_value=255),
    ...                   classes=["sky", "tree"], task="multiclass")  # doctest: +SKIP
    >>> ds.load_mask(ds.ids[0]).shape  # doctest: +SKIP
    (240, 320)
"""

from __future__ import annotations

import abc
import hashlib
import json
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from segcore.config import CocoSource, MaskFolderSource, MultilabelJsonSource, TaskType
from segcore.errors import DatasetError

__all__ = [
    "IMAGE_EXTENSIONS",
    "SegDataset",
    "CocoDataset",
    "MaskFolderDataset",
    "MultilabelJsonDataset",
    "open_dataset",
    "resolve_root",
    "list_images",
    "read_image",
    "read_image_size",
    "coco_class_names",
    "coco_category_to_class",
    "rasterize_polygons",
    "coco_image_file",
    "list_mask_files",
    "mask_value_lut",
    "read_mask_array",
    "read_multilabel_json",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

Source = CocoSource | MaskFolderSource | MultilabelJsonSource


# ---------------------------------------------------------------- file helpers


def resolve_root(source: Source, dataset_root: str | Path | None = None) -> Path:
    """The dataset folder of ``source``: ``source.root`` if absolute, else under ``dataset_root``.

    Raises:
        DatasetError: when the root is relative and no ``dataset_root`` is given.
    """
    root = Path(source.root).expanduser()
    if root.is_absolute():
        return root
    if dataset_root is None:
        raise DatasetError(
            f"dataset root {source.root!r} is relative but no dataset_root was given; "
            "pass dataset_root= (the platform's dataset folder) or use an absolute path"
        )
    return Path(dataset_root).expanduser() / root


def list_images(folder: Path) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """Image files directly in ``folder`` by stem, and the stems that occur more than once.

    Returns:
        ``(by_stem, duplicates)``: for a duplicated stem ``by_stem`` keeps the first name in sort order.
    """
    by_stem: dict[str, Path] = {}
    duplicates: dict[str, list[Path]] = {}
    if not folder.is_dir():
        return by_stem, duplicates
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file() or path.name.startswith("."):
            continue
        if path.stem in by_stem:
            duplicates.setdefault(path.stem, [by_stem[path.stem]]).append(path)
        else:
            by_stem[path.stem] = path
    return by_stem, duplicates


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """High bit depth grey to uint8 with one fixed scale per dtype, so every image gets the same mapping."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        # float images are taken as 0..1 intensities
        return (np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    # 16-bit and 32-bit integer images (PIL "I;16", "I") hold 16-bit intensities
    return (np.clip(arr.astype(np.float32), 0, 65535) / 257.0).round().astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to ``HxWx3`` uint8 RGB; grey is replicated, alpha dropped, 16-bit scaled.

    Raises:
        DatasetError: when the file is missing, empty or cannot be decoded.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "RGB":
                arr = np.asarray(im)
            elif im.mode.startswith(("I", "F")):  # I;16, I;16B, I, F: high bit depth grey
                arr = _to_uint8(np.asarray(im))
            else:  # L, P, RGBA, LA, CMYK, 1, ...: PIL knows how to make RGB
                arr = np.asarray(im.convert("RGB"))
    except FileNotFoundError as exc:
        raise DatasetError(f"image file {path} does not exist; check the dataset folder") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(
            f"cannot decode image {path} ({exc}); the file is empty, truncated or not an image: "
            "replace it or remove it from the dataset"
        ) from exc
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] > 3:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def read_image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` read from the file header only.

    Raises:
        DatasetError: when the file is missing or its header cannot be read.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError as exc:
        raise DatasetError(f"image file {path} does not exist; check the dataset folder") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(
            f"cannot read the header of image {path} ({exc}); the file is empty or not an image"
        ) from exc
    return h, w


def rasterize_polygons(polygons: Iterable[Sequence[Sequence[float]]], height: int, width: int) -> np.ndarray:
    """Fill polygons (each a list of ``[x, y]`` points in pixel units) into an ``HxW`` uint8 {0,1} mask.

    Pixel ``(row r, col c)`` covers ``[c, c+1) x [r, r+1)``; PIL fills the polygon outline inclusively.
    """
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        pts = [(float(x), float(y)) for x, y in poly]
        if len(pts) >= 3:
            draw.polygon(pts, fill=1, outline=1)
        elif len(pts) == 2:
            draw.line(pts, fill=1)
        elif len(pts) == 1:
            draw.point(pts, fill=1)
    return np.asarray(canvas, dtype=np.uint8)


def _sha_file(h: Any, path: Path) -> None:
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)


def _task(task: TaskType | str) -> TaskType:
    try:
        return TaskType(task)
    except ValueError as exc:
        raise DatasetError(f"unknown task {task!r}; use 'multiclass' or 'multilabel'") from exc


# ---------------------------------------------------------------- the dataset


class SegDataset(abc.ABC):
    """A labelled image set (and optional unlabelled test images) in one of the on-disk formats.

    Torch-free; the torch ``Dataset`` over it is :class:`segcore.data.dataset.TorchSegmentationDataset`.
    Create it with :func:`open_dataset`.

    Attributes:
        source: The source config it was opened from.
        root: The resolved dataset folder.
        classes: Class names in index order.
        task: Multiclass (one class per pixel) or multilabel (overlapping channels).
        ignore_index: Label value of unlabelled pixels in multiclass masks.
    """

    format: str = ""

    def __init__(
        self,
        *,
        source: Source,
        root: Path,
        classes: Sequence[str],
        task: TaskType,
        ignore_index: int,
        images: dict[str, Path],
        test_images: dict[str, Path],
    ) -> None:
        self.source = source
        self.root = root
        self.classes = list(classes)
        self.task = task
        self.ignore_index = int(ignore_index)
        self._images = dict(sorted(images.items()))
        self._test_images = dict(sorted(test_images.items()))
        self._presence: np.ndarray | None = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, images={len(self._images)}, "
            f"test_images={len(self._test_images)}, classes={len(self.classes)}, task={self.task.value!r})"
        )

    def __len__(self) -> int:
        return len(self._images)

    @property
    def ids(self) -> list[str]:
        """Labelled image ids (file stems), sorted."""
        return list(self._images)

    @property
    def test_ids(self) -> list[str]:
        """Unlabelled test image ids (file stems), sorted; empty when the source has none."""
        return list(self._test_images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _check_id(self, image_id: str, table: dict[str, Path], what: str) -> Path:
        try:
            return table[image_id]
        except KeyError:
            raise DatasetError(
                f"unknown {what} id {image_id!r} in dataset {self.root}; use one of the ids listed by "
                f"{'test_ids' if what == 'test image' else 'ids'}"
            ) from None

    def image_path(self, image_id: str) -> Path:
        """The file of labelled image ``image_id``."""
        return self._check_id(image_id, self._images, "image")

    def test_image_path(self, image_id: str) -> Path:
        """The file of test image ``image_id``."""
        return self._check_id(image_id, self._test_images, "test image")

    def load_image(self, image_id: str) -> np.ndarray:
        """``HxWx3`` uint8 RGB pixels of a labelled image."""
        return read_image(self.image_path(image_id))

    def load_test_image(self, image_id: str) -> np.ndarray:
        """``HxWx3`` uint8 RGB pixels of a test image."""
        return read_image(self.test_image_path(image_id))

    def image_size(self, image_id: str) -> tuple[int, int]:
        """``(height, width)`` of a labelled image, from its file header."""
        return read_image_size(self.image_path(image_id))

    def test_image_size(self, image_id: str) -> tuple[int, int]:
        """``(height, width)`` of a test image, from its file header."""
        return read_image_size(self.test_image_path(image_id))

    def load_mask(self, image_id: str) -> np.ndarray:
        """The label of ``image_id``.

        Returns:
            Multiclass: ``HxW`` uint8 class indices, ``ignore_index`` where unlabelled.
            Multilabel: ``CxHxW`` uint8 in {0, 1}.
        """
        path = self.image_path(image_id)
        return self._load_mask(image_id, path)

    @abc.abstractmethod
    def _load_mask(self, image_id: str, image_path: Path) -> np.ndarray:
        """The format's own mask reading (``image_id`` is known to exist)."""

    def _class_presence_row(self, image_id: str) -> np.ndarray:
        mask = self.load_mask(image_id)
        if self.task is TaskType.MULTILABEL:
            return mask.reshape(mask.shape[0], -1).any(axis=1)
        counts = np.bincount(mask.ravel(), minlength=256)[: self.num_classes]
        return counts > 0

    def class_presence(self) -> np.ndarray:
        """``[N, C]`` bool: whether class ``c`` occurs in image ``ids[n]``. Computed once, then cached."""
        if self._presence is None:
            presence = np.zeros((len(self._images), self.num_classes), dtype=bool)
            for n, image_id in enumerate(self._images):
                presence[n] = self._class_presence_row(image_id)
            self._presence = presence
        return self._presence.copy()

    @abc.abstractmethod
    def _annotation_files(self) -> list[Path]:
        """The files whose content defines the labels (hashed by :meth:`fingerprint`)."""

    def fingerprint(self) -> str:
        """sha256 over the sorted image file names and sizes and the annotation files' content.

        Stable across copies of the dataset (no paths above the root, no times).
        """
        h = hashlib.sha256()
        h.update(f"format={self.format}\n".encode())
        for label, table in (("image", self._images), ("test", self._test_images)):
            for path in sorted(table.values()):
                rel = path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else path.name
                h.update(f"{label}:{rel}:{path.stat().st_size}\n".encode())
        for path in sorted(self._annotation_files()):
            rel = path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else path.name
            h.update(f"annotation:{rel}\n".encode())
            _sha_file(h, path)
        return h.hexdigest()


# ---------------------------------------------------------------- COCO


def coco_category_to_class(
    categories: Sequence[dict[str, Any]], category_map: dict[int, int] | None
) -> dict[int, int]:
    """COCO category id -> class index: ``category_map`` if given, else sorted ids -> 1..N."""
    if category_map is not None:
        return {int(k): int(v) for k, v in category_map.items()}
    ids = sorted({int(c["id"]) for c in categories if isinstance(c, dict) and "id" in c})
    return {cid: i + 1 for i, cid in enumerate(ids)}


def coco_class_names(categories: Sequence[dict[str, Any]], category_map: dict[int, int] | None) -> list[str]:
    """Class names derived from the categories: ``background`` then one name per class index."""
    mapping = coco_category_to_class(categories, category_map)
    names_by_id = {int(c["id"]): str(c.get("name", c["id"])) for c in categories if "id" in c}
    n = max(mapping.values(), default=0)
    names = ["background"] + [f"class_{i}" for i in range(1, n + 1)]
    for cid, idx in sorted(mapping.items(), key=lambda kv: kv[0], reverse=True):
        if cid in names_by_id:
            names[idx] = names_by_id[cid]
    return names


def _coco_decode(segmentation: Any, height: int, width: int) -> np.ndarray:
    """One annotation's segmentation (polygons, compressed or uncompressed RLE) as an ``HxW`` uint8 mask."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        polys = [list(map(float, p)) for p in segmentation if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict):
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    else:
        raise ValueError(f"unsupported segmentation of type {type(segmentation).__name__}")
    with warnings.catch_warnings():  # pycocotools' decode trips numpy 2's __array__ copy deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.asarray(mask_utils.decode(rle), dtype=np.uint8)


class CocoDataset(SegDataset):
    """COCO instances: masks are painted from the annotations.

    Overlaps are resolved deterministically: instances are painted in order of decreasing pixel area
    (ties by annotation id), so a smaller object lying on a larger one stays visible. Crowd
    annotations (``iscrowd=1``) are painted with their class like any other. Categories left out of
    a given ``category_map`` are not painted (their pixels stay background).
    """

    format = "coco"

    def __init__(self, *, coco: dict[str, Any], cat_to_class: dict[int, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cat_to_class = cat_to_class
        self._annotation_path = self.root / self.source.annotations
        self._records: dict[str, dict[str, Any]] = {}
        anns_by_image: dict[Any, list[dict[str, Any]]] = {}
        for ann in coco.get("annotations") or []:
            anns_by_image.setdefault(ann.get("image_id"), []).append(ann)
        for img in coco.get("images") or []:
            stem = Path(str(img.get("file_name", ""))).stem
            if stem in self._images and stem not in self._records:
                self._records[stem] = {
                    "height": int(img["height"]),
                    "width": int(img["width"]),
                    "annotations": sorted(anns_by_image.get(img.get("id"), []), key=lambda a: a.get("id", 0)),
                }

    def _annotation_files(self) -> list[Path]:
        return [self._annotation_path]

    def annotations(self, image_id: str) -> list[dict[str, Any]]:
        """The raw COCO annotations of ``image_id``, sorted by annotation id."""
        self.image_path(image_id)
        return list(self._records[image_id]["annotations"])

    def class_of(self, annotation: dict[str, Any]) -> int | None:
        """The class index of an annotation, or None when its category is not mapped."""
        return self._cat_to_class.get(int(annotation.get("category_id", -1)))

    def instance_masks(self, image_id: str) -> list[tuple[int, np.ndarray]]:
        """``(class index, HxW uint8 mask)`` of each mapped annotation, in painting order."""
        rec = self._records[image_id]
        h, w = rec["height"], rec["width"]
        out: list[tuple[int, np.ndarray, int, int]] = []
        for ann in rec["annotations"]:
            cid = int(ann.get("category_id", -1))
            if cid not in self._cat_to_class:
                if self.source.category_map is not None:
                    continue  # dropped on purpose by the category map
                raise DatasetError(
                    f"annotation {ann.get('id')} of image {image_id!r} in {self._annotation_path} has category "
                    f"id {cid}, which is not in the categories list; add the category or remove the annotation"
                )
            try:
                m = _coco_decode(ann.get("segmentation"), h, w)
            except (ValueError, TypeError, KeyError) as exc:
                raise DatasetError(
                    f"annotation {ann.get('id')} of image {image_id!r} in {self._annotation_path} has an "
                    f"unreadable segmentation ({exc}); fix it or run validate_dataset for details"
                ) from exc
            out.append((self._cat_to_class[cid], m, int(m.sum()), int(ann.get("id", 0))))
        out.sort(key=lambda t: (-t[2], t[3]))
        return [(c, m) for c, m, _, _ in out]

    def _load_mask(self, image_id: str, image_path: Path) -> np.ndarray:
        if self.task is not TaskType.MULTICLASS:  # pragma: no cover - rejected in open_dataset
            raise DatasetError("COCO datasets are multiclass")
        rec = self._records[image_id]
        mask = np.zeros((rec["height"], rec["width"]), dtype=np.uint8)
        for cls, m in self.instance_masks(image_id):
            mask[m.astype(bool)] = cls
        return mask

    def image_size(self, image_id: str) -> tuple[int, int]:
        """``(height, width)`` as recorded in the annotation file."""
        self.image_path(image_id)
        rec = self._records[image_id]
        return rec["height"], rec["width"]


# ---------------------------------------------------------------- mask folder


def mask_value_lut(
    value_map: dict[int, int] | None, ignore_value: int | None, num_classes: int, ignore_index: int, max_value: int
) -> np.ndarray:
    """Lookup table pixel value -> class index for values ``0..max_value``; unmapped values -> ignore."""
    size = max(256, max_value + 1)
    lut = np.full(size, ignore_index, dtype=np.uint8)
    mapping = value_map if value_map is not None else {i: i for i in range(num_classes)}
    for value, cls in mapping.items():
        if 0 <= int(value) < size:
            lut[int(value)] = int(cls)
    if ignore_value is not None and 0 <= ignore_value < size:
        lut[ignore_value] = ignore_index
    return lut


def read_mask_array(path: Path) -> np.ndarray:
    """Raw ``HxW`` integer pixel values of an index mask (palette indices for ``P`` images).

    Raises:
        DatasetError: when the file cannot be decoded or has colour channels that differ.
    """
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except FileNotFoundError as exc:
        raise DatasetError(f"mask file {path} does not exist") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(
            f"cannot decode mask {path} ({exc}); the file is empty, truncated or not an image: replace it"
        ) from exc
    if arr.ndim == 3:
        if arr.shape[2] >= 3 and not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise DatasetError(
                f"mask {path} is a colour image; masks must be single-channel index images "
                "(convert colours to class indices first)"
            )
        arr = arr[..., 0]
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    return arr


class MaskFolderDataset(SegDataset):
    """Images and index masks with the same stem; pixel values map to classes through ``value_map``."""

    format = "mask_folder"

    def __init__(self, *, masks: dict[str, Path], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._masks = masks
        src: MaskFolderSource = self.source
        self._lut = mask_value_lut(src.value_map, src.ignore_value, self.num_classes, self.ignore_index, 255)

    def mask_path(self, image_id: str) -> Path:
        """The mask file of ``image_id``."""
        self.image_path(image_id)
        return self._masks[image_id]

    def _annotation_files(self) -> list[Path]:
        return [self._masks[i] for i in self._images]

    def _load_mask(self, image_id: str, image_path: Path) -> np.ndarray:
        raw = read_mask_array(self._masks[image_id])
        lut = self._lut
        if raw.size and int(raw.max()) >= lut.shape[0]:
            src: MaskFolderSource = self.source
            lut = mask_value_lut(src.value_map, src.ignore_value, self.num_classes, self.ignore_index, int(raw.max()))
        if raw.min(initial=0) < 0:
            raise DatasetError(f"mask {self._masks[image_id]} has negative pixel values; use unsigned index masks")
        return lut[raw]


# ---------------------------------------------------------------- multilabel JSON


def read_multilabel_json(path: Path) -> list[dict[str, Any]]:
    """The ``annotations`` list of one multilabel JSON file.

    Raises:
        DatasetError: when the file is empty, not JSON, or lacks an ``annotations`` list.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"cannot read annotation file {path}: {exc.strerror}") from exc
    if not text.strip():
        raise DatasetError(
            f"annotation file {path} is empty; write {{\"annotations\": []}} for an image without objects"
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"annotation file {path} is not valid JSON ({exc}); fix or regenerate it") from exc
    anns = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(anns, list):
        raise DatasetError(
            f"annotation file {path} has no 'annotations' list; the format is "
            "{\"annotations\": [{\"label\": \"<class>\", \"points\": [[x, y], ...]}]}"
        )
    return anns


class MultilabelJsonDataset(SegDataset):
    """Per-image JSON polygons rasterised into one channel per class (channels may overlap)."""

    format = "multilabel_json"

    def __init__(self, *, annotations: dict[str, Path], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._annotations = annotations
        self._class_index = {c: i for i, c in enumerate(self.classes)}

    def annotation_path(self, image_id: str) -> Path:
        """The JSON file of ``image_id``."""
        self.image_path(image_id)
        return self._annotations[image_id]

    def _annotation_files(self) -> list[Path]:
        return [self._annotations[i] for i in self._images]

    def polygons(self, image_id: str) -> list[tuple[int, list[list[float]]]]:
        """``(class index, points)`` of each annotation of ``image_id``, in file order."""
        path = self.annotation_path(image_id)
        out = []
        for k, ann in enumerate(read_multilabel_json(path)):
            label = ann.get("label") if isinstance(ann, dict) else None
            if label not in self._class_index:
                raise DatasetError(
                    f"annotation {k} in {path} has label {label!r}, which is not among the classes "
                    f"{self.classes}; add it to data.classes or fix the label"
                )
            pts = ann.get("points") or []
            try:
                finite = all(len(p) == 2 and all(math.isfinite(float(v)) for v in p) for p in pts)
            except (TypeError, ValueError) as exc:
                raise DatasetError(
                    f"annotation {k} in {path} has points that are not [x, y] number pairs; fix the points"
                ) from exc
            if not finite:
                raise DatasetError(
                    f"annotation {k} in {path} has NaN, infinite or malformed coordinates; fix the points"
                )
            out.append((self._class_index[label], pts))
        return out

    def _load_mask(self, image_id: str, image_path: Path) -> np.ndarray:
        h, w = read_image_size(image_path)
        mask = np.zeros((self.num_classes, h, w), dtype=np.uint8)
        by_class: dict[int, list[list[list[float]]]] = {}
        for cls, pts in self.polygons(image_id):
            by_class.setdefault(cls, []).append(pts)
        for cls, polys in by_class.items():
            mask[cls] = rasterize_polygons(polys, h, w)
        return mask

    def _class_presence_row(self, image_id: str) -> np.ndarray:
        row = np.zeros(self.num_classes, dtype=bool)
        for cls, pts in self.polygons(image_id):
            if len(pts) >= 1:
                row[cls] = True
        return row


# ---------------------------------------------------------------- open


def _load_coco_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(
            f"COCO annotation file {path} does not exist; set source.annotations to the JSON file "
            "(relative to the dataset root)"
        )
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise DatasetError(f"COCO annotation file {path} is empty; export the annotations again")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"COCO annotation file {path} is not valid JSON ({exc}); export it again") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(
            f"COCO annotation file {path} has no 'images' list; it must hold 'images', 'annotations' "
            "and 'categories' as in the COCO instances format"
        )
    return data


def coco_image_file(images_dir: Path, file_name: str) -> Path:
    """Where a COCO ``file_name`` lives: under the image folder, else its base name there."""
    direct = images_dir / file_name
    if direct.is_file():
        return direct
    return images_dir / Path(file_name).name


def _check_classes(classes: Sequence[str] | None, derived: list[str], what: str) -> list[str]:
    if classes is None:
        return derived
    classes = list(classes)
    if len(classes) != len(derived):
        raise DatasetError(
            f"data.classes has {len(classes)} names but the {what} define {len(derived)} classes "
            f"({derived}); list one name per class index"
        )
    return classes


def open_dataset(
    source: Source,
    *,
    classes: Sequence[str] | None,
    task: TaskType | str = TaskType.MULTICLASS,
    ignore_index: int = 255,
    dataset_root: str | Path | None = None,
) -> SegDataset:
    """Open a dataset described by ``source``.

    Args:
        source: A :class:`~segcore.config.CocoSource`, :class:`~segcore.config.MaskFolderSource` or
            :class:`~segcore.config.MultilabelJsonSource`.
        classes: Class names in index order; None derives them from the data where it can (COCO
            categories with ``background`` first; the labels found in multilabel JSON, sorted).
            A mask folder without ``value_map`` needs them.
        task: ``multiclass`` (COCO, mask folder) or ``multilabel`` (multilabel JSON).
        ignore_index: Label value written where a multiclass pixel is unlabelled.
        dataset_root: The folder a relative ``source.root`` is resolved against.

    Returns:
        A :class:`SegDataset`. Only the folder structure is checked here;
        :func:`segcore.data.validation.validate_dataset` checks every file.

    Raises:
        DatasetError: when folders or annotation files are missing, or the task does not fit the format.
    """
    task = _task(task)
    root = resolve_root(source, dataset_root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; check source.root and the dataset root")
    test_images: dict[str, Path] = {}
    if source.test_images is not None:
        test_dir = root / source.test_images
        if not test_dir.is_dir():
            raise DatasetError(
                f"test image folder {test_dir} does not exist; fix source.test_images or set it to null"
            )
        test_images, _ = list_images(test_dir)
    common = {"source": source, "root": root, "task": task, "ignore_index": ignore_index, "test_images": test_images}

    if isinstance(source, CocoSource):
        if task is not TaskType.MULTICLASS:
            raise DatasetError(
                "COCO datasets are multiclass (one class per pixel); set data.task to 'multiclass', "
                "or convert the data to the multilabel_json format for overlapping classes"
            )
        data = _load_coco_json(root / source.annotations)
        images_dir = root / source.images
        if not images_dir.is_dir():
            raise DatasetError(f"image folder {images_dir} does not exist; set source.images")
        categories = [c for c in data.get("categories") or [] if isinstance(c, dict)]
        cat_to_class = coco_category_to_class(categories, source.category_map)
        names = _check_classes(classes, coco_class_names(categories, source.category_map), "COCO categories")
        if max(cat_to_class.values(), default=0) >= len(names):
            raise DatasetError(
                f"category_map sends a category to class {max(cat_to_class.values())} but there are only "
                f"{len(names)} classes; add class names or fix the map"
            )
        images: dict[str, Path] = {}
        for img in data["images"]:
            if not isinstance(img, dict) or "file_name" not in img:
                continue
            path = coco_image_file(images_dir, str(img["file_name"]))
            stem = path.stem
            if path.is_file() and stem not in images and "height" in img and "width" in img:
                images[stem] = path
        return CocoDataset(coco=data, cat_to_class=cat_to_class, classes=names, images=images, **common)

    if isinstance(source, MaskFolderSource):
        if task is not TaskType.MULTICLASS:
            raise DatasetError(
                "mask-folder datasets hold one class per pixel; set data.task to 'multiclass', or use the "
                "multilabel_json format for overlapping classes"
            )
        images_dir, masks_dir = root / source.images, root / source.masks
        for folder, field in ((images_dir, "images"), (masks_dir, "masks")):
            if not folder.is_dir():
                raise DatasetError(f"{field} folder {folder} does not exist; set source.{field}")
        if classes is None:
            if source.value_map is None:
                raise DatasetError(
                    "a mask-folder dataset needs its class names (data.classes) or a value_map to count them"
                )
            classes = [f"class_{i}" for i in range(max(source.value_map.values()) + 1)]
        all_images, _ = list_images(images_dir)
        masks = list_mask_files(masks_dir, source.mask_suffix)
        images = {s: p for s, p in all_images.items() if s in masks}
        return MaskFolderDataset(masks=masks, classes=list(classes), images=images, **common)

    if isinstance(source, MultilabelJsonSource):
        if task is not TaskType.MULTILABEL:
            raise DatasetError(
                "multilabel_json datasets have overlapping classes; set data.task to 'multilabel'"
            )
        images_dir, ann_dir = root / source.images, root / source.annotations
        for folder, field in ((images_dir, "images"), (ann_dir, "annotations")):
            if not folder.is_dir():
                raise DatasetError(f"{field} folder {folder} does not exist; set source.{field}")
        ann_files = {p.stem: p for p in sorted(ann_dir.glob("*.json"))}
        all_images, _ = list_images(images_dir)
        images = {s: p for s, p in all_images.items() if s in ann_files}
        if classes is None:
            labels: set[str] = set()
            for stem in images:
                try:
                    labels.update(str(a.get("label")) for a in read_multilabel_json(ann_files[stem]) if isinstance(a, dict))
                except DatasetError:
                    continue
            classes = sorted(labels)
            if not classes:
                raise DatasetError(f"no labels found in {ann_dir}; give data.classes explicitly")
        return MultilabelJsonDataset(annotations=ann_files, classes=list(classes), images=images, **common)

    raise DatasetError(f"unknown dataset source {type(source).__name__}; use coco, mask_folder or multilabel_json")


def list_mask_files(masks_dir: Path, suffix: str) -> dict[str, Path]:
    """Mask files in ``masks_dir`` ending in ``suffix``, by the stem they belong to."""
    out: dict[str, Path] = {}
    if not masks_dir.is_dir():
        return out
    for p in sorted(masks_dir.iterdir()):
        if p.is_file() and p.name.endswith(suffix) and not p.name.startswith("."):
            out.setdefault(p.name[: -len(suffix)] if suffix else p.stem, p)
    return out
