"""Checking a dataset on disk before anything trains on it.

:func:`validate_dataset` reads every annotation (and, with ``check_pixels``, every pixel) and
returns a :class:`DatasetReport` listing each problem with the file it is in and how to fix it.
Nothing is ever written.

Example:
    >>> report = validate_dataset(source, classes=["sky", "tree"])  # doctest: +SKIP
    >>> raise_if_invalid(report)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from segcore.config import CocoSource, MaskFolderSource, MultilabelJsonSource, TaskType
from segcore.data.formats._base import resolve_root
from segcore.data.formats._coco import validate_coco
from segcore.data.formats._files import list_images
from segcore.data.formats._mask_folder import validate_mask_folder
from segcore.data.formats._multilabel_json import validate_multilabel_json
from segcore.data.formats._problems import (
    COORD_TOLERANCE as COORD_TOLERANCE,  # importable as before the split
    Collector,
    DatasetReport,
    Problem,
    ProblemCode,
    Severity,
    raise_if_invalid,
    report_duplicates,
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
    col = Collector()
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
            report_duplicates(col, dupes)
            report.num_test_images = len(tests)
            for path in tests.values():
                col.image(path, check_pixels, count=False)

    if isinstance(source, CocoSource):
        classes, n = validate_coco(source, root, classes, col, check_pixels)
    elif isinstance(source, MaskFolderSource):
        classes, n = validate_mask_folder(source, root, classes, ignore_index, col, check_pixels)
    else:
        classes, n = validate_multilabel_json(source, root, classes, col, check_pixels)
    report.num_images = n
    missing = (ProblemCode.MISSING_FOLDER, ProblemCode.MISSING_ANNOTATION_FILE)
    if n == 0 and not any(p.code in missing for p in col.problems):
        col.add(ProblemCode.NO_IMAGES, "the dataset has no labelled images; add images with annotations", root)
    if task is TaskType.MULTICLASS and classes is not None and 0 <= ignore_index < len(classes):
        col.add(
            ProblemCode.CLASS_OUT_OF_RANGE,
            f"ignore_index {ignore_index} is also the index of class {classes[ignore_index]!r}; "
            "choose an ignore_index outside 0..num_classes-1 (e.g. 255)",
        )
    return _finish(report, col, classes, strict)


def _finish(report: DatasetReport, col: Collector, classes: Sequence[str] | None, strict: bool) -> DatasetReport:
    report.problems = col.problems
    report.image_sizes = dict(sorted(col.sizes.items()))
    report.classes = list(classes or [])
    if strict:
        raise_if_invalid(report)
    return report
