"""The mask-folder format (images and index masks with the same stem): its reader and its validator."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segcore.config import MaskFolderSource, TaskType
from segcore.data.formats._base import SegDataset
from segcore.data.formats._files import list_images
from segcore.data.formats._problems import Collector, ProblemCode, report_duplicates
from segcore.errors import DatasetError

# ---------------------------------------------------------------- reading


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
        same = np.array_equal  # a colour mask: three or more channels that are not all equal
        if arr.shape[2] >= 3 and not (same(arr[..., 0], arr[..., 1]) and same(arr[..., 0], arr[..., 2])):
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
    source: MaskFolderSource

    def __init__(self, *, masks: dict[str, Path], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._masks = masks
        src = self.source
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
            src = self.source
            lut = mask_value_lut(src.value_map, src.ignore_value, self.num_classes, self.ignore_index, int(raw.max()))
        if raw.min(initial=0) < 0:
            raise DatasetError(f"mask {self._masks[image_id]} has negative pixel values; use unsigned index masks")
        return lut[raw]


def list_mask_files(masks_dir: Path, suffix: str) -> dict[str, Path]:
    """Mask files in ``masks_dir`` ending in ``suffix``, by the stem they belong to."""
    out: dict[str, Path] = {}
    if not masks_dir.is_dir():
        return out
    for p in sorted(masks_dir.iterdir()):
        if p.is_file() and p.name.endswith(suffix) and not p.name.startswith("."):
            out.setdefault(p.name[: -len(suffix)] if suffix else p.stem, p)
    return out


def open_mask_folder(
    source: MaskFolderSource, root: Path, classes: Sequence[str] | None, common: dict[str, Any]
) -> MaskFolderDataset:
    """Open a mask-folder dataset; ``common`` holds the keyword arguments every :class:`SegDataset` takes."""
    task = common["task"]
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


# ---------------------------------------------------------------- validation


def validate_mask_folder(
    source: MaskFolderSource,
    root: Path,
    classes: Sequence[str] | None,
    ignore_index: int,
    col: Collector,
    check_pixels: bool,
) -> tuple[list[str] | None, int]:
    """Check every file of a mask-folder dataset into ``col``; returns (class names, usable images)."""
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
    report_duplicates(col, dupes)
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
