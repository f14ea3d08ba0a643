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

from collections.abc import Sequence
from pathlib import Path

from segcore.config import CocoSource, MaskFolderSource, MultilabelJsonSource, TaskType
from segcore.data.formats._base import SegDataset, Source, as_task, resolve_root
from segcore.data.formats._coco import CocoDataset, coco_category_to_class, coco_class_names, coco_image_file, open_coco
from segcore.data.formats._files import IMAGE_EXTENSIONS, list_images, rasterize_polygons, read_image, read_image_size
from segcore.data.formats._mask_folder import (
    MaskFolderDataset,
    list_mask_files,
    mask_value_lut,
    open_mask_folder,
    read_mask_array,
)
from segcore.data.formats._multilabel_json import MultilabelJsonDataset, open_multilabel_json, read_multilabel_json
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
    task = as_task(task)
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
        return open_coco(source, root, classes, common)
    if isinstance(source, MaskFolderSource):
        return open_mask_folder(source, root, classes, common)
    if isinstance(source, MultilabelJsonSource):
        return open_multilabel_json(source, root, classes, common)
    raise DatasetError(f"unknown dataset source {type(source).__name__}; use coco, mask_folder or multilabel_json")
