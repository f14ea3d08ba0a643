"""The multilabel JSON format (one file of labelled polygons per image): its reader and its validator."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segcore.config import MultilabelJsonSource, TaskType
from segcore.data.formats._base import SegDataset
from segcore.data.formats._files import list_images, rasterize_polygons, read_image_size
from segcore.data.formats._problems import Collector, ProblemCode, check_points, report_duplicates
from segcore.errors import DatasetError
from segcore.ids import looks_like_id

# ---------------------------------------------------------------- reading


def _shown(label: object) -> str:
    """A label quoted in a message only when it looks like a class name, never other file contents."""
    return repr(label) if looks_like_id(label) else "(a value that is not a class name)"


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
                    f"annotation {k} in {path} has label {_shown(label)}, which is not among the classes "
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


def open_multilabel_json(
    source: MultilabelJsonSource, root: Path, classes: Sequence[str] | None, common: dict[str, Any]
) -> MultilabelJsonDataset:
    """Open a multilabel JSON dataset; ``common`` holds the keyword arguments every :class:`SegDataset` takes."""
    task = common["task"]
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


# ---------------------------------------------------------------- validation


def validate_multilabel_json(
    source: MultilabelJsonSource, root: Path, classes: Sequence[str] | None, col: Collector, check_pixels: bool
) -> tuple[list[str] | None, int]:
    """Check every file of a multilabel JSON dataset into ``col``; returns (class names, usable images)."""
    images_dir, ann_dir = root / source.images, root / source.annotations
    missing = False
    for folder, field in ((images_dir, "images"), (ann_dir, "annotations")):
        if not folder.is_dir():
            col.add(ProblemCode.MISSING_FOLDER, f"the {field} folder does not exist; set source.{field}", folder)
            missing = True
    if missing:
        return (list(classes) if classes else None), 0
    images, dupes = list_images(images_dir)
    report_duplicates(col, dupes)
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
                    f"{where} has label {_shown(ann['label'])}, which is not among the classes "
                    f"({', '.join(names)}); add it to data.classes or fix the label",
                    path,
                )
            pts = ann["points"]
            if not isinstance(pts, list) or any(not isinstance(p, (list, tuple)) or len(p) != 2 for p in pts):
                col.add(ProblemCode.INVALID_SEGMENTATION, f"{where}: 'points' must be a list of [x, y] pairs", path)
                continue
            check_points(col, [tuple(p) for p in pts], w, h, where, path)
    return names, n
