"""Checking a dataset on disk before anything trains on it.

:func:`validate_dataset` reads every annotation (and, with ``check_pixels``, every pixel) and
returns a :class:`DatasetReport` listing each problem with the file it is in and how to fix it.
Nothing is ever written.

Example:
    >>> report = validate_dataset(source, classes=["sky", "tree"])  # doctest: +SKIP
    >>> raise_if_invalid(report)  # doctest: +SKIP
"""

from __future__ import annotations

import enum
import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field, computed_field

from segcore.config import CocoSource, MaskFolderSource, MultilabelJsonSource, TaskType
from segcore.data.formats import (
    coco_class_names,
    coco_image_file,
    list_images,
    list_mask_files,
    read_mask_array,
    resolve_root,
)
from segcore.errors import DatasetError

__all__ = [
    "ProblemCode",
    "Severity",
    "Problem",
    "DatasetReport",
    "validate_dataset",
    "raise_if_invalid",
]

COORD_TOLERANCE = 1.0  # polygon points may lie up to 1 px outside the image (annotation tools round)


class ProblemCode(str, enum.Enum):
    """What kind of problem a :class:`Problem` is."""

    MISSING_ROOT = "missing_root"
    MISSING_FOLDER = "missing_folder"
    MISSING_ANNOTATION_FILE = "missing_annotation_file"
    EMPTY_ANNOTATION_FILE = "empty_annotation_file"
    INVALID_ANNOTATION_FILE = "invalid_annotation_file"
    NO_IMAGES = "no_images"
    MISSING_IMAGE = "missing_image"
    MISSING_ANNOTATION = "missing_annotation"
    UNLISTED_IMAGE = "unlisted_image"
    UNREADABLE_IMAGE = "unreadable_image"
    UNREADABLE_MASK = "unreadable_mask"
    SIZE_MISMATCH = "size_mismatch"
    UNKNOWN_PIXEL_VALUE = "unknown_pixel_value"
    CLASS_OUT_OF_RANGE = "class_out_of_range"
    CLASS_COUNT_MISMATCH = "class_count_mismatch"
    POLYGON_OUT_OF_BOUNDS = "polygon_out_of_bounds"
    NONFINITE_COORDINATES = "nonfinite_coordinates"
    DEGENERATE_POLYGON = "degenerate_polygon"
    INVALID_SEGMENTATION = "invalid_segmentation"
    DUPLICATE_FILE_NAME = "duplicate_file_name"
    DUPLICATE_IMAGE_ENTRY = "duplicate_image_entry"
    DUPLICATE_CATEGORY = "duplicate_category"
    UNKNOWN_CATEGORY = "unknown_category"
    UNKNOWN_LABEL = "unknown_label"
    ANNOTATION_WITHOUT_IMAGE = "annotation_without_image"
    TASK_MISMATCH = "task_mismatch"


class Severity(str, enum.Enum):
    """``error``: the dataset cannot be used as is. ``warning``: usable, but probably not what you meant."""

    ERROR = "error"
    WARNING = "warning"


class Problem(BaseModel):
    """One problem found in a dataset; ``message`` says what is wrong and how to fix it."""

    code: ProblemCode
    message: str
    file: str | None = None
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        return f"[{self.severity.value} {self.code.value}] {where}{self.message}"


class DatasetReport(BaseModel):
    """What :func:`validate_dataset` found. JSON-able for the web app."""

    format: str
    root: str
    num_images: int = 0
    num_test_images: int = 0
    classes: list[str] = Field(default_factory=list)
    image_sizes: dict[str, int] = Field(default_factory=dict, description='"WxH" -> number of images')
    problems: list[Problem] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not any(p.severity is Severity.ERROR for p in self.problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.WARNING]

    def __str__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        """Every problem on its own line, errors first."""
        head = (
            f"dataset {self.root} ({self.format}): {self.num_images} images, "
            f"{len(self.errors)} errors, {len(self.warnings)} warnings"
        )
        lines = [str(p) for p in self.errors + self.warnings]
        return "\n".join([head, *(f"- {line}" for line in lines)])


def raise_if_invalid(report: DatasetReport) -> None:
    """Raise :class:`DatasetError` listing every problem when ``report`` has errors.

    Raises:
        DatasetError: with one line per problem (file, what is wrong, how to fix it).
    """
    if not report.ok:
        raise DatasetError("the dataset is invalid; fix these problems and validate again:\n" + report.summary())


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.sizes: Counter[str] = Counter()

    def add(self, code: ProblemCode, message: str, file: Path | str | None = None, *, warning: bool = False) -> None:
        self.problems.append(
            Problem(
                code=code,
                message=message,
                file=None if file is None else str(file),
                severity=Severity.WARNING if warning else Severity.ERROR,
            )
        )

    def image(self, path: Path, check_pixels: bool, *, count: bool = True) -> tuple[int, int] | None:
        """Check one image file; ``(height, width)`` or None when unreadable."""
        try:
            if path.stat().st_size == 0:
                self.add(ProblemCode.UNREADABLE_IMAGE, "the image file is empty (0 bytes); replace or remove it", path)
                return None
            with Image.open(path) as im:
                w, h = im.size
                if check_pixels:
                    im.load()
        except FileNotFoundError:
            self.add(ProblemCode.MISSING_IMAGE, "the image file does not exist; add it or remove its entry", path)
            return None
        except (OSError, ValueError, SyntaxError) as exc:
            self.add(
                ProblemCode.UNREADABLE_IMAGE,
                f"the image cannot be decoded ({exc}); it is truncated or not an image: replace or remove it",
                path,
            )
            return None
        if count:
            self.sizes[f"{w}x{h}"] += 1
        return h, w


def validate_dataset(
    source: CocoSource | MaskFolderSource | MultilabelJsonSource,
    *,
    classes: Sequence[str] | None = None,
    task: TaskType | str = TaskType.MULTICLASS,
    ignore_index: int = 255,
    dataset_root: str | Path | None = None,
    check_pixels: bool = True,
    strict: bool = False,
) -> DatasetReport:
    """Check every file of a dataset and report each problem found.

    Args:
        source: The dataset source config.
        classes: Expected class names in index order; None derives them from the data (COCO
            categories, multilabel labels) or the ``value_map``.
        task: ``multiclass`` or ``multilabel``; checked against the format.
        ignore_index: The label value of unlabelled pixels (must not be a class index).
        dataset_root: Folder a relative ``source.root`` is resolved against.
        check_pixels: Decode every image and mask fully (finds truncated files and unknown mask
            values); False reads file headers only.
        strict: Raise instead of returning a report with errors.

    Returns:
        A :class:`DatasetReport`; ``report.ok`` is False when any problem is an error.

    Raises:
        DatasetError: only with ``strict=True``, listing every problem.
    """
    col = _Collector()
    try:
        task = TaskType(task)
    except ValueError:
        col.add(ProblemCode.TASK_MISMATCH, f"unknown task {task!r}; use 'multiclass' or 'multilabel'")
        task = TaskType.MULTICLASS
    report = DatasetReport(format=source.format, root=str(source.root))
    try:
        root = resolve_root(source, dataset_root)
    except DatasetError as exc:
        col.add(ProblemCode.MISSING_ROOT, str(exc), source.root)
        return _finish(report, col, classes, strict)
    report.root = str(root)
    if not root.is_dir():
        col.add(
            ProblemCode.MISSING_ROOT,
            "the dataset folder does not exist; check source.root and the dataset root",
            root,
        )
        return _finish(report, col, classes, strict)

    expected_task = TaskType.MULTILABEL if isinstance(source, MultilabelJsonSource) else TaskType.MULTICLASS
    if task is not expected_task:
        col.add(
            ProblemCode.TASK_MISMATCH,
            f"the {source.format} format is {expected_task.value} but the task is {task.value}; "
            f"set data.task to '{expected_task.value}' or convert the dataset",
        )

    if source.test_images is not None:
        test_dir = root / source.test_images
        if not test_dir.is_dir():
            col.add(
                ProblemCode.MISSING_FOLDER,
                "the test image folder does not exist; fix source.test_images or set it to null",
                test_dir,
            )
        else:
            tests, dupes = list_images(test_dir)
            _report_duplicates(col, dupes)
            report.num_test_images = len(tests)
            for path in tests.values():
                col.image(path, check_pixels, count=False)

    if isinstance(source, CocoSource):
        classes, n = _validate_coco(source, root, classes, col, check_pixels)
    elif isinstance(source, MaskFolderSource):
        classes, n = _validate_mask_folder(source, root, classes, ignore_index, col, check_pixels)
    else:
        classes, n = _validate_multilabel(source, root, classes, col, check_pixels)
    report.num_images = n
    if n == 0 and not any(p.code in (ProblemCode.MISSING_FOLDER, ProblemCode.MISSING_ANNOTATION_FILE) for p in col.problems):
        col.add(ProblemCode.NO_IMAGES, "the dataset has no labelled images; add images with annotations", root)
    if task is TaskType.MULTICLASS and classes is not None and 0 <= ignore_index < len(classes):
        col.add(
            ProblemCode.CLASS_OUT_OF_RANGE,
            f"ignore_index {ignore_index} is also the index of class {classes[ignore_index]!r}; "
            "choose an ignore_index outside 0..num_classes-1 (e.g. 255)",
        )
    return _finish(report, col, classes, strict)


def _finish(report: DatasetReport, col: _Collector, classes: Sequence[str] | None, strict: bool) -> DatasetReport:
    report.problems = col.problems
    report.image_sizes = dict(sorted(col.sizes.items()))
    report.classes = list(classes or [])
    if strict:
        raise_if_invalid(report)
    return report


def _report_duplicates(col: _Collector, dupes: dict[str, list[Path]]) -> None:
    for stem, paths in sorted(dupes.items()):
        col.add(
            ProblemCode.DUPLICATE_FILE_NAME,
            f"image id {stem!r} has several files ({', '.join(p.name for p in paths)}); "
            "keep one file per stem (rename or delete the others)",
            paths[1],
        )


def _check_classes(
    col: _Collector, classes: Sequence[str] | None, derived: list[str], what: str
) -> list[str]:
    if classes is None:
        return derived
    if len(classes) != len(derived):
        col.add(
            ProblemCode.CLASS_COUNT_MISMATCH,
            f"data.classes has {len(classes)} names but the {what} define {len(derived)} classes "
            f"({', '.join(derived)}); list one name per class index",
        )
    return list(classes)


def _check_points(
    col: _Collector, points: list[tuple[Any, Any]], w: int, h: int, where: str, file: Path
) -> bool:
    """Check a polygon's points; True when it can be rasterised."""
    try:
        xy = [(float(x), float(y)) for x, y in points]
    except (TypeError, ValueError):
        col.add(ProblemCode.INVALID_SEGMENTATION, f"{where} has points that are not numbers; fix the polygon", file)
        return False
    if any(not (math.isfinite(x) and math.isfinite(y)) for x, y in xy):
        col.add(
            ProblemCode.NONFINITE_COORDINATES,
            f"{where} has NaN or infinite coordinates; fix or delete the polygon",
            file,
        )
        return False
    if len(xy) < 3:
        col.add(
            ProblemCode.DEGENERATE_POLYGON,
            f"{where} has {len(xy)} points; a polygon needs at least 3: fix or delete it",
            file,
        )
        return False
    t = COORD_TOLERANCE
    bad = [(x, y) for x, y in xy if x < -t or y < -t or x > w + t or y > h + t]
    if bad:
        x, y = bad[0]
        col.add(
            ProblemCode.POLYGON_OUT_OF_BOUNDS,
            f"{where} has {len(bad)} points outside the {w}x{h} image (e.g. x={x:g}, y={y:g}); "
            "the annotation may belong to another image or use another scale: fix or clip it",
            file,
        )
        return False
    return True


# ---------------------------------------------------------------- COCO


def _validate_coco(
    source: CocoSource, root: Path, classes: Sequence[str] | None, col: _Collector, check_pixels: bool
) -> tuple[list[str] | None, int]:
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

    categories = [c for c in data.get("categories") or [] if isinstance(c, dict) and "id" in c]
    cat_counts = Counter(int(c["id"]) for c in categories)
    for cid, k in sorted(cat_counts.items()):
        if k > 1:
            col.add(ProblemCode.DUPLICATE_CATEGORY, f"category id {cid} is listed {k} times; keep one", ann_path)
    cat_ids = set(cat_counts)
    derived = coco_class_names(categories, source.category_map)
    names = _check_classes(col, classes, derived, "COCO categories")
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
    _report_duplicates(col, dupes)
    sizes: dict[Any, tuple[int, int]] = {}
    seen_ids: set[Any] = set()
    seen_stems: dict[str, str] = {}
    listed: set[Path] = set()
    for k, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "file_name" not in img or "id" not in img:
            col.add(ProblemCode.INVALID_ANNOTATION_FILE, f"images[{k}] lacks 'id' or 'file_name'; fix the entry", ann_path)
            continue
        iid, fname = img["id"], str(img["file_name"])
        if iid in seen_ids:
            col.add(
                ProblemCode.DUPLICATE_IMAGE_ENTRY,
                f"image id {iid} is used by several entries (again by {fname!r}); give each image its own id",
                ann_path,
            )
            continue
        seen_ids.add(iid)
        stem = Path(fname).stem
        if stem in seen_stems:
            col.add(
                ProblemCode.DUPLICATE_IMAGE_ENTRY,
                f"file_name {fname!r} (image id {iid}) repeats the image {seen_stems[stem]!r}; "
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
                f"image {fname!r} (id {iid}) lacks a valid 'height' and 'width'; add them",
                ann_path,
            )
            continue
        path = coco_image_file(images_dir, fname)
        listed.add(path)
        if not path.is_file():
            col.add(
                ProblemCode.MISSING_IMAGE,
                f"image {fname!r} (id {iid}) is listed in {ann_path.name} but the file does not exist; "
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
        aid = ann.get("id", f"#{k}")
        where = f"annotation {aid}"
        iid = ann.get("image_id")
        if iid not in seen_ids:
            col.add(
                ProblemCode.ANNOTATION_WITHOUT_IMAGE,
                f"{where} refers to image id {iid}, which is not in 'images'; remove it or add the image",
                ann_path,
            )
            continue
        cid = ann.get("category_id")
        if cid not in cat_ids:
            col.add(
                ProblemCode.UNKNOWN_CATEGORY,
                f"{where} has category id {cid}, which is not in the categories list "
                f"({', '.join(map(str, sorted(cat_ids))) or 'empty'}); add the category or fix the annotation",
                ann_path,
            )
        if iid not in sizes:
            continue  # image problem already reported
        h, w = sizes[iid]
        _check_coco_segmentation(col, ann.get("segmentation"), h, w, where, ann_path)
    return names, len(sizes)


def _check_coco_segmentation(col: _Collector, seg: Any, h: int, w: int, where: str, file: Path) -> None:
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
            _check_points(col, list(zip(poly[0::2], poly[1::2])), w, h, f"{where} polygon {j}", file)
        return
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        size = seg["size"]
        if list(size) != [h, w]:
            col.add(
                ProblemCode.SIZE_MISMATCH,
                f"{where} has an RLE of size {size} but its image is [{h}, {w}] (height, width); "
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


# ---------------------------------------------------------------- mask folder


def _validate_mask_folder(
    source: MaskFolderSource,
    root: Path,
    classes: Sequence[str] | None,
    ignore_index: int,
    col: _Collector,
    check_pixels: bool,
) -> tuple[list[str] | None, int]:
    images_dir, masks_dir = root / source.images, root / source.masks
    missing = False
    for folder, field in ((images_dir, "images"), (masks_dir, "masks")):
        if not folder.is_dir():
            col.add(ProblemCode.MISSING_FOLDER, f"the {field} folder does not exist; set source.{field}", folder)
            missing = True
    if classes is None:
        if source.value_map is None:
            col.add(
                ProblemCode.CLASS_COUNT_MISMATCH,
                "give data.classes (or a value_map): the class count cannot be read from index masks",
            )
            names: list[str] | None = None
        else:
            names = [f"class_{i}" for i in range(max(source.value_map.values()) + 1)]
    else:
        names = list(classes)
    n_cls = len(names) if names is not None else 256
    value_map = source.value_map if source.value_map is not None else {i: i for i in range(n_cls)}
    for value, cls in sorted(value_map.items()):
        if not 0 <= cls < n_cls:
            col.add(
                ProblemCode.CLASS_OUT_OF_RANGE,
                f"value_map sends pixel value {value} to class {cls}, outside 0..{n_cls - 1}; "
                "fix the map or add class names",
            )
    if source.ignore_value is not None and source.ignore_value in value_map:
        col.add(
            ProblemCode.CLASS_OUT_OF_RANGE,
            f"ignore_value {source.ignore_value} is also mapped to class {value_map[source.ignore_value]} "
            "by value_map; remove it from one of them",
        )
    if missing:
        return names, 0
    images, dupes = list_images(images_dir)
    _report_duplicates(col, dupes)
    masks = list_mask_files(masks_dir, source.mask_suffix)
    for stem in sorted(set(images) - set(masks)):
        col.add(
            ProblemCode.MISSING_ANNOTATION,
            f"image {stem!r} has no mask {stem}{source.mask_suffix} in {masks_dir}; add the mask or move "
            "the image to the test folder",
            images[stem],
        )
    for stem in sorted(set(masks) - set(images)):
        col.add(
            ProblemCode.MISSING_IMAGE,
            f"mask {masks[stem].name} has no image with stem {stem!r} in {images_dir}; add the image or "
            "delete the mask",
            masks[stem],
        )
    allowed = set(value_map)
    if source.ignore_value is not None:
        allowed.add(source.ignore_value)
    n = 0
    for stem in sorted(set(images) & set(masks)):
        hw = col.image(images[stem], check_pixels)
        mpath = masks[stem]
        try:
            if mpath.stat().st_size == 0:
                raise DatasetError("the file is empty (0 bytes)")
            if check_pixels:
                raw = read_mask_array(mpath)
                mhw = raw.shape[:2]
            else:
                with Image.open(mpath) as im:
                    mhw = (im.size[1], im.size[0])
                raw = None
        except (DatasetError, OSError, ValueError, SyntaxError) as exc:
            col.add(ProblemCode.UNREADABLE_MASK, f"the mask cannot be read ({exc}); replace it", mpath)
            continue
        if hw is None:
            continue
        n += 1
        if tuple(mhw) != tuple(hw):
            col.add(
                ProblemCode.SIZE_MISMATCH,
                f"the mask is {mhw[1]}x{mhw[0]} but its image {images[stem].name} is {hw[1]}x{hw[0]}; "
                "masks must have the image's size",
                mpath,
            )
        if raw is not None:
            values = np.unique(raw)
            unknown = [int(v) for v in values if int(v) not in allowed]
            if unknown:
                col.add(
                    ProblemCode.UNKNOWN_PIXEL_VALUE,
                    f"the mask has pixel values {unknown[:10]}{' ...' if len(unknown) > 10 else ''} that are "
                    f"neither in the value_map ({sorted(value_map)[:10]}) nor the ignore_value "
                    f"({source.ignore_value}); add them to source.value_map or set source.ignore_value",
                    mpath,
                )
    return names, n


# ---------------------------------------------------------------- multilabel JSON


def _validate_multilabel(
    source: MultilabelJsonSource, root: Path, classes: Sequence[str] | None, col: _Collector, check_pixels: bool
) -> tuple[list[str] | None, int]:
    images_dir, ann_dir = root / source.images, root / source.annotations
    missing = False
    for folder, field in ((images_dir, "images"), (ann_dir, "annotations")):
        if not folder.is_dir():
            col.add(ProblemCode.MISSING_FOLDER, f"the {field} folder does not exist; set source.{field}", folder)
            missing = True
    if missing:
        return (list(classes) if classes else None), 0
    images, dupes = list_images(images_dir)
    _report_duplicates(col, dupes)
    ann_files = {p.stem: p for p in sorted(ann_dir.glob("*.json"))}
    for stem in sorted(set(images) - set(ann_files)):
        col.add(
            ProblemCode.MISSING_ANNOTATION,
            f"image {stem!r} has no annotation file {stem}.json in {ann_dir}; add one (an empty "
            "'annotations' list for an image without objects) or move the image to the test folder",
            images[stem],
        )
    for stem in sorted(set(ann_files) - set(images)):
        col.add(
            ProblemCode.MISSING_IMAGE,
            f"annotation file {ann_files[stem].name} has no image with stem {stem!r} in {images_dir}; "
            "add the image or delete the file",
            ann_files[stem],
        )
    parsed: dict[str, list[Any]] = {}
    for stem in sorted(set(images) & set(ann_files)):
        path = ann_files[stem]
        text = path.read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            col.add(
                ProblemCode.EMPTY_ANNOTATION_FILE,
                'the annotation file is empty; write {"annotations": []} for an image without objects',
                path,
            )
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            col.add(ProblemCode.INVALID_ANNOTATION_FILE, f"not valid JSON ({exc}); fix or regenerate it", path)
            continue
        anns = data.get("annotations") if isinstance(data, dict) else None
        if not isinstance(anns, list):
            col.add(
                ProblemCode.INVALID_ANNOTATION_FILE,
                "no 'annotations' list; the format is "
                '{"annotations": [{"label": "<class>", "points": [[x, y], ...]}]}',
                path,
            )
            continue
        parsed[stem] = anns
    if classes is None:
        found = {str(a.get("label")) for anns in parsed.values() for a in anns if isinstance(a, dict) and "label" in a}
        names = sorted(found)
    else:
        names = list(classes)
    known = set(names)
    n = 0
    for stem, anns in parsed.items():
        path = ann_files[stem]
        hw = col.image(images[stem], check_pixels)
        if hw is None:
            continue
        n += 1
        h, w = hw
        for k, ann in enumerate(anns):
            where = f"annotation {k}"
            if not isinstance(ann, dict) or "label" not in ann or "points" not in ann:
                col.add(ProblemCode.INVALID_ANNOTATION_FILE, f"{where} needs 'label' and 'points'; fix it", path)
                continue
            if ann["label"] not in known:
                col.add(
                    ProblemCode.UNKNOWN_LABEL,
                    f"{where} has label {ann['label']!r}, which is not among the classes "
                    f"({', '.join(names)}); add it to data.classes or fix the label",
                    path,
                )
            pts = ann["points"]
            if not isinstance(pts, list) or any(not isinstance(p, (list, tuple)) or len(p) != 2 for p in pts):
                col.add(ProblemCode.INVALID_SEGMENTATION, f"{where}: 'points' must be a list of [x, y] pairs", path)
                continue
            _check_points(col, [tuple(p) for p in pts], w, h, where, path)
    return names, n
