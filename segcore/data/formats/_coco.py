"""The COCO instances format: its reader (:class:`CocoDataset`) and its validator."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segcore.config import CocoSource, TaskType
from segcore.data.formats._base import SegDataset, check_classes
from segcore.data.formats._files import list_images
from segcore.data.formats._problems import Collector, ProblemCode, check_class_count, check_points, report_duplicates
from segcore.errors import DatasetError
from segcore.ids import quote_id

# ---------------------------------------------------------------- reading


def _as_int(value: Any) -> int | None:
    """A COCO id as an int, or None when it is not one (text, NaN, a mapping, a bool)."""
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _shown_size(size: Any) -> str:
    """``[h, w]`` of an RLE when it is two plain integers, else a description that does not quote it."""
    if isinstance(size, list) and len(size) == 2 and all(_as_int(v) == v and abs(v) < 10**9 for v in size):
        return f"[{int(size[0])}, {int(size[1])}]"
    return "(not two integers)"


def _category_ids(categories: Sequence[Any]) -> list[int]:
    ids = [_as_int(c.get("id")) for c in categories if isinstance(c, dict)]
    return [i for i in ids if i is not None]


def coco_category_to_class(
    categories: Sequence[dict[str, Any]], category_map: dict[int, int] | None
) -> dict[int, int]:
    """COCO category id -> class index: ``category_map`` if given, else sorted ids -> 1..N."""
    if category_map is not None:
        return {int(k): int(v) for k, v in category_map.items()}
    ids = sorted(set(_category_ids(categories)))
    return {cid: i + 1 for i, cid in enumerate(ids)}


def coco_class_names(categories: Sequence[dict[str, Any]], category_map: dict[int, int] | None) -> list[str]:
    """Class names derived from the categories: ``background`` then one name per class index."""
    mapping = coco_category_to_class(categories, category_map)
    names_by_id: dict[int, str] = {}
    for c in categories:
        cid = _as_int(c.get("id")) if isinstance(c, dict) else None
        if cid is not None:
            names_by_id[cid] = str(c.get("name", cid))
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
    source: CocoSource

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
            h, w = _as_int(img.get("height")), _as_int(img.get("width"))
            if h is None or w is None:  # never quoted: validate_dataset reports the entry
                if stem not in self._records:
                    self._images.pop(stem, None)
                continue
            if stem in self._images and stem not in self._records:
                self._records[stem] = {
                    "height": h,
                    "width": w,
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


def open_coco(
    source: CocoSource, root: Path, classes: Sequence[str] | None, common: dict[str, Any]
) -> CocoDataset:
    """Open a COCO dataset; ``common`` holds the keyword arguments every :class:`SegDataset` takes."""
    task = common["task"]
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
    names = check_classes(classes, coco_class_names(categories, source.category_map), "COCO categories")
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


# ---------------------------------------------------------------- validation


def validate_coco(
    source: CocoSource, root: Path, classes: Sequence[str] | None, col: Collector, check_pixels: bool
) -> tuple[list[str] | None, int]:
    """Check every file of a COCO dataset into ``col``; returns (class names, usable images)."""
    ann_path = root / source.annotations
    images_dir = root / source.images
    if not ann_path.is_file():
        col.add(
            ProblemCode.MISSING_ANNOTATION_FILE,
            "the COCO annotation file does not exist; set source.annotations (relative to the root)",
            ann_path,
        )
        return (list(classes) if classes else None), 0
    text = ann_path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        col.add(ProblemCode.EMPTY_ANNOTATION_FILE, "the COCO annotation file is empty; export it again", ann_path)
        return (list(classes) if classes else None), 0
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        col.add(ProblemCode.INVALID_ANNOTATION_FILE, f"not valid JSON ({exc}); export it again", ann_path)
        return (list(classes) if classes else None), 0
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        col.add(
            ProblemCode.INVALID_ANNOTATION_FILE,
            "no 'images' list; a COCO instances file holds 'images', 'annotations' and 'categories'",
            ann_path,
        )
        return (list(classes) if classes else None), 0
    if not images_dir.is_dir():
        col.add(ProblemCode.MISSING_FOLDER, "the image folder does not exist; set source.images", images_dir)

    raw_categories = data.get("categories") or []
    if not isinstance(raw_categories, list):
        col.add(ProblemCode.INVALID_ANNOTATION_FILE, "'categories' is not a list; export the file again", ann_path)
        raw_categories = []
    categories = []
    for k, c in enumerate(raw_categories):
        if isinstance(c, dict) and _as_int(c.get("id")) is not None:
            categories.append(c)
        else:
            col.add(ProblemCode.INVALID_ANNOTATION_FILE, f"categories[{k}] has no integer 'id'; fix the entry",
                    ann_path)
    cat_counts = Counter(_category_ids(categories))
    for cid, k in sorted(cat_counts.items()):
        if k > 1:
            col.add(ProblemCode.DUPLICATE_CATEGORY, f"category id {cid} is listed {k} times; keep one", ann_path)
    cat_ids = set(cat_counts)
    derived = coco_class_names(categories, source.category_map)
    names = check_class_count(col, classes, derived, "COCO categories")
    if source.category_map is not None:
        for cid, idx in sorted(source.category_map.items()):
            if cid not in cat_ids:
                col.add(
                    ProblemCode.UNKNOWN_CATEGORY,
                    f"category_map names category id {cid}, which is not in the categories list; remove it",
                    ann_path,
                )
            if not 1 <= idx < len(names):
                col.add(
                    ProblemCode.CLASS_OUT_OF_RANGE,
                    f"category_map sends category {cid} to class {idx}; class indices of objects are "
                    f"1..{len(names) - 1} (0 is background): fix the map or add class names",
                    ann_path,
                )

    on_disk, dupes = list_images(images_dir)
    report_duplicates(col, dupes)
    sizes: dict[Any, tuple[int, int]] = {}
    seen_ids: set[Any] = set()
    seen_stems: dict[str, str] = {}
    listed: set[Path] = set()
    for k, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "file_name" not in img or "id" not in img:
            col.add(
                ProblemCode.INVALID_ANNOTATION_FILE, f"images[{k}] lacks 'id' or 'file_name'; fix the entry", ann_path
            )
            continue
        iid, fname = img["id"], str(img["file_name"])
        if not isinstance(iid, (int, str)) or isinstance(iid, bool):
            col.add(ProblemCode.INVALID_ANNOTATION_FILE, f"images[{k}] has an 'id' that is neither a number nor "
                    "text; fix the entry", ann_path)
            continue
        shown = f"{quote_id(fname, what=f'images[{k}]')} (id {quote_id(iid, what='not shown')})"
        if iid in seen_ids:
            col.add(
                ProblemCode.DUPLICATE_IMAGE_ENTRY,
                f"image id {quote_id(iid)} is used by several entries "
                f"(again by {quote_id(fname, what=f'images[{k}]')}); give each image its own id",
                ann_path,
            )
            continue
        seen_ids.add(iid)
        stem = Path(fname).stem
        if stem in seen_stems:
            col.add(
                ProblemCode.DUPLICATE_IMAGE_ENTRY,
                f"image {shown} repeats the file stem of an earlier entry; "
                "merge the two entries or rename one of the files",
                ann_path,
            )
            continue
        seen_stems[stem] = fname
        try:
            jh, jw = int(img["height"]), int(img["width"])
        except (KeyError, TypeError, ValueError):
            col.add(
                ProblemCode.INVALID_ANNOTATION_FILE,
                f"image {shown} lacks a valid 'height' and 'width'; add them",
                ann_path,
            )
            continue
        path = coco_image_file(images_dir, fname)
        listed.add(path)
        if not path.is_file():
            col.add(
                ProblemCode.MISSING_IMAGE,
                f"image {shown} is listed in {ann_path.name} but the file does not exist; "
                "add the file or remove the entry and its annotations",
                path,
            )
            continue
        hw = col.image(path, check_pixels)
        if hw is None:
            continue
        if hw != (jh, jw):
            col.add(
                ProblemCode.SIZE_MISMATCH,
                f"the file is {hw[1]}x{hw[0]} but {ann_path.name} says {jw}x{jh}; "
                "fix width/height in the JSON (annotations must match the real pixels)",
                path,
            )
        sizes[iid] = (jh, jw)
    for stem, path in sorted(on_disk.items()):
        if path not in listed and stem not in seen_stems:
            col.add(
                ProblemCode.UNLISTED_IMAGE,
                f"the image is not listed in {ann_path.name}, so it is not used; add an entry or move it "
                "to the test folder",
                path,
                warning=True,
            )

    anns = data.get("annotations")
    if anns is None:
        anns = []
    if not isinstance(anns, list):
        col.add(ProblemCode.INVALID_ANNOTATION_FILE, "'annotations' is not a list; export the file again", ann_path)
        anns = []
    for k, ann in enumerate(anns):
        if not isinstance(ann, dict):
            col.add(ProblemCode.INVALID_ANNOTATION_FILE, f"annotations[{k}] is not an object", ann_path)
            continue
        where = f"annotation {quote_id(ann.get('id'), what=f'#{k}')}"
        iid = ann.get("image_id")
        if not isinstance(iid, (int, str)) or isinstance(iid, bool) or iid not in seen_ids:
            col.add(
                ProblemCode.ANNOTATION_WITHOUT_IMAGE,
                f"{where} refers to image id {quote_id(iid)}, which is not in 'images'; remove it or add the image",
                ann_path,
            )
            continue
        cat_id = ann.get("category_id")
        if not isinstance(cat_id, (int, str)) or isinstance(cat_id, bool) or cat_id not in cat_ids:
            col.add(
                ProblemCode.UNKNOWN_CATEGORY,
                f"{where} has category id {quote_id(cat_id)}, which is not in the categories list "
                f"({', '.join(map(str, sorted(cat_ids))) or 'empty'}); add the category or fix the annotation",
                ann_path,
            )
        if iid not in sizes:
            continue  # image problem already reported
        h, w = sizes[iid]
        _check_coco_segmentation(col, ann.get("segmentation"), h, w, where, ann_path)
    return names, len(sizes)


def _check_coco_segmentation(col: Collector, seg: Any, h: int, w: int, where: str, file: Path) -> None:
    if isinstance(seg, list):
        if not seg:
            col.add(ProblemCode.INVALID_SEGMENTATION, f"{where} has an empty segmentation; delete it", file)
        for j, poly in enumerate(seg):
            if not isinstance(poly, list) or len(poly) % 2:
                col.add(
                    ProblemCode.INVALID_SEGMENTATION,
                    f"{where} polygon {j} is not a flat list of x, y pairs; fix it",
                    file,
                )
                continue
            check_points(col, list(zip(poly[0::2], poly[1::2])), w, h, f"{where} polygon {j}", file)
        return
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        size = seg["size"]
        if not isinstance(size, list) or size != [h, w]:
            col.add(
                ProblemCode.SIZE_MISMATCH,
                f"{where} has an RLE of size {_shown_size(size)} but its image is [{h}, {w}] (height, width); "
                "the annotation belongs to another image or size",
                file,
            )
            return
        counts = seg["counts"]
        if isinstance(counts, list):
            if any(not isinstance(c, (int, float)) or c < 0 for c in counts) or sum(counts) != h * w:
                col.add(
                    ProblemCode.INVALID_SEGMENTATION,
                    f"{where} has uncompressed RLE counts that do not add up to {h}x{w} pixels; fix the counts",
                    file,
                )
            return
        try:
            from pycocotools import mask as mask_utils

            rle = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
            mask_utils.area(rle)
        except Exception as exc:  # noqa: BLE001 - pycocotools raises bare exceptions on bad strings
            col.add(ProblemCode.INVALID_SEGMENTATION, f"{where} has an undecodable RLE ({exc}); fix it", file)
        return
    col.add(
        ProblemCode.INVALID_SEGMENTATION,
        f"{where} has no polygon or RLE segmentation; add one or delete the annotation",
        file,
    )
