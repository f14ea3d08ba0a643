"""The format-independent dataset (:class:`SegDataset`) and what opening any format shares."""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segcore.config import CocoSource, MaskFolderSource, MultilabelJsonSource, TaskType
from segcore.data.formats._files import read_image, read_image_size, sha_file
from segcore.errors import DatasetError

Source = CocoSource | MaskFolderSource | MultilabelJsonSource


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


def as_task(task: TaskType | str) -> TaskType:
    """``task`` as a :class:`TaskType`, or an error naming the valid ones."""
    try:
        return TaskType(task)
    except ValueError as exc:
        raise DatasetError(f"unknown task {task!r}; use 'multiclass' or 'multilabel'") from exc


def check_classes(classes: Sequence[str] | None, derived: list[str], what: str) -> list[str]:
    """``classes`` when given (checked against the count the data defines), else the derived names."""
    if classes is None:
        return derived
    classes = list(classes)
    if len(classes) != len(derived):
        raise DatasetError(
            f"data.classes has {len(classes)} names but the {what} define {len(derived)} classes "
            f"({derived}); list one name per class index"
        )
    return classes


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
            return np.asarray(mask.reshape(mask.shape[0], -1).any(axis=1))
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
            sha_file(h, path)
        return h.hexdigest()
