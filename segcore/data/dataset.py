"""The torch ``Dataset`` over a :class:`~segcore.data.formats.SegDataset`, with pseudo-labels and copy-paste.

Pseudo-label datasets (``data.pseudo_labels``) are folders in the mask-folder format whose mask
pixels are class indices and whose unlabelled pixels hold ``ignore_index``::

    <pseudo folder>/images/<stem>.png
    <pseudo folder>/masks/<stem>.png

:func:`open_pseudo_labels` opens them; :class:`TorchSegmentationDataset` serves the original
training images followed by every pseudo-labelled image.

Example:
    >>> train = TorchSegmentationDataset(ds, train_ids, build_train_transform(cfg))  # doctest: +SKIP
    >>> train[0]["image"].shape  # doctest: +SKIP
    torch.Size([3, 256, 256])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from segcore.config import ExperimentConfig, MaskFolderSource, TaskType
from segcore.data.formats import SegDataset, open_dataset
from segcore.data.mixing import CopyPaste
from segcore.data.transforms import apply_transform, build_eval_transform, build_train_transform
from segcore.errors import DatasetError
from segcore.ids import quote_ids

__all__ = [
    "TorchSegmentationDataset",
    "open_pseudo_labels",
    "make_train_dataset",
    "make_eval_dataset",
    "pseudo_label_datasets",
    "PSEUDO_ID_PREFIX",
]

PSEUDO_ID_PREFIX = "pseudo"


def open_pseudo_labels(
    paths: Sequence[str | Path],
    *,
    classes: Sequence[str],
    task: TaskType | str = TaskType.MULTICLASS,
    ignore_index: int = 255,
    dataset_root: str | Path | None = None,
) -> list[SegDataset]:
    """Open pseudo-label folders (``images/`` + ``masks/``, masks holding class indices or ``ignore_index``).

    Args:
        paths: Folders, absolute or relative to ``dataset_root``.
        classes: The experiment's classes; mask values must be class indices.
        task: Only multiclass pseudo-labels exist in this format.
        ignore_index: Mask value of pixels left unlabelled (low confidence).
        dataset_root: Folder relative paths are resolved against.

    Raises:
        DatasetError: when a folder is missing or the task is multilabel.
    """
    if TaskType(task) is not TaskType.MULTICLASS:
        raise DatasetError(
            "pseudo-label datasets are index-mask folders and serve multiclass tasks only; "
            "remove data.pseudo_labels for a multilabel experiment"
        )
    out = []
    for p in paths:
        source = MaskFolderSource(root=str(p), ignore_value=ignore_index)
        try:
            ds = open_dataset(source, classes=classes, task=TaskType.MULTICLASS, ignore_index=ignore_index,
                              dataset_root=dataset_root)
        except DatasetError as exc:
            raise DatasetError(f"cannot open pseudo-label dataset {p}: {exc}") from exc
        out.append(ds)
    return out


class TorchSegmentationDataset(Dataset[dict[str, Any]]):
    """Samples of a :class:`SegDataset` as tensors, ready for a ``DataLoader``.

    Each item is a dict:

    - ``image``: float32 ``[3, H, W]`` (normalised by the transform; plain /255 without one), or
      uint8 ``[3, H, W]`` with ``keep_uint8=True`` when the transform leaves uint8 pixels (training
      normalises them on the device);
    - ``mask``: int64 ``[H, W]`` (multiclass, ``ignore_index`` where unlabelled) or float32
      ``[K, H, W]`` (multilabel); absent with ``test=True``;
    - ``id``: the image id (``pseudo:<k>:<id>`` for the k-th pseudo-label dataset);
    - ``orig_size``: int64 ``[2]``, the image's (height, width) before the transform.

    An item can be asked for as ``ds[(index, seed)]``: its augmentations and copy-paste then draw from
    ``seed`` alone, whatever process serves it (see :class:`segcore.training._feed.SeededSampler`).

    Otherwise it works with ``num_workers`` 0 and above: each worker reseeds the transform and the copy-paste
    random state from its torch worker seed, so workers never repeat each other's augmentations
    and a seeded ``DataLoader`` generator repeats them. In the main process (``num_workers=0``)
    with ``seed=None``, every item draws its randomness from numpy's global state (the transform
    is reseeded from it unless it was built with its own seed), so seeding numpy repeats an epoch.

    Args:
        dataset: The labelled dataset.
        ids: Ids of ``dataset`` to serve (labelled ids, or test ids with ``test=True``).
        transform: An albumentations pipeline (or any callable taking ``image=``, ``mask=``).
        test: Serve unlabelled test images (no mask).
        copy_paste: Pastes bank objects before the transform (training only).
        pseudo: Pseudo-label datasets whose every image is served after ``ids``.
        seed: Random state of copy-paste in the main process (workers derive theirs); None follows
            numpy's global state.
        cfg: The experiment config; when given, its task and class count must match ``dataset``.
        keep_uint8: Serve uint8 images (and multiclass uint8 masks) as uint8, 4-8x less to copy, instead of
            converting them to float32 (int64).
    """

    def __init__(
        self,
        dataset: SegDataset,
        ids: Sequence[str],
        transform: Callable[..., dict[str, Any]] | None = None,
        *,
        test: bool = False,
        copy_paste: CopyPaste | None = None,
        pseudo: Sequence[SegDataset] | None = None,
        seed: int | None = None,
        cfg: ExperimentConfig | None = None,
        keep_uint8: bool = False,
    ) -> None:
        if cfg is not None and (cfg.data.task is not dataset.task or cfg.data.num_classes != dataset.num_classes):
            raise DatasetError(
                f"the config is for {cfg.data.num_classes} {cfg.data.task.value} classes but the dataset "
                f"{dataset.root} has {dataset.num_classes} {dataset.task.value} classes; open the dataset "
                "with the config's data.classes and data.task"
            )
        self.dataset = dataset
        self.transform = transform
        self.test = test
        self.copy_paste = None if test else copy_paste
        known = set(dataset.test_ids if test else dataset.ids)
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise DatasetError(
                f"{len(unknown)} {'test ' if test else ''}ids are not in the dataset {dataset.root}: "
                f"{quote_ids(unknown)}; use ids from dataset.{'test_ids' if test else 'ids'}"
            )
        self.items: list[tuple[SegDataset, str, str]] = [(dataset, i, i) for i in ids]
        if pseudo and test:
            raise DatasetError("pseudo-label datasets are for training; do not pass them with test=True")
        for k, pds in enumerate(pseudo or []):
            if pds.num_classes != dataset.num_classes or pds.task is not dataset.task:
                raise DatasetError(
                    f"pseudo-label dataset {pds.root} has {pds.num_classes} {pds.task.value} classes but the "
                    f"dataset has {dataset.num_classes} {dataset.task.value}; regenerate it for these classes"
                )
            self.items += [(pds, i, f"{PSEUDO_ID_PREFIX}:{k}:{i}") for i in pds.ids]
        self.keep_uint8 = keep_uint8
        self._follow_global = seed is None
        self._transform_has_seed = getattr(transform, "seed", None) is not None
        self._rng = np.random.default_rng(seed)
        self._rng_owner: tuple[int, int | None] = (os.getpid(), None)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def ids(self) -> list[str]:
        """The id of every item, in order."""
        return [key for _, _, key in self.items]

    def _worker_rng(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        if info is None and self._follow_global:
            seed = int(np.random.randint(0, 2**31 - 1))
            if not self._transform_has_seed:
                self._seed_transform(seed)
            return np.random.default_rng(seed)
        owner = (os.getpid(), None if info is None else info.id)
        if owner != self._rng_owner:
            self._rng_owner = owner
            if info is not None:
                seed = int(info.seed % (2**32))
                self._rng = np.random.default_rng(seed)
                self._seed_transform(seed)
        return self._rng

    def _seed_transform(self, seed: int) -> None:
        """Seed an albumentations pipeline's own generator; other transforms have none."""
        set_seed = getattr(self.transform, "set_random_seed", None)
        if set_seed is not None:
            set_seed(seed)

    def _seeded_rng(self, seed: int) -> np.random.Generator:
        self._seed_transform(seed)
        return np.random.default_rng(seed)

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(index, tuple):
            index, seed = index
            rng = self._seeded_rng(seed)
        else:
            rng = self._worker_rng()
        ds, image_id, key = self.items[index]
        if self.test:
            image = ds.load_test_image(image_id)
            mask = None
        else:
            image = ds.load_image(image_id)
            mask = ds.load_mask(image_id)
            if mask.shape[-2:] != image.shape[:2]:
                raise DatasetError(
                    f"mask of {image_id!r} in {ds.root} is {mask.shape[-1]}x{mask.shape[-2]} but the image is "
                    f"{image.shape[1]}x{image.shape[0]}; run validate_dataset and fix the mask"
                )
            if self.copy_paste is not None:
                image, mask = self.copy_paste(image, mask, rng)
        orig_size = torch.tensor(image.shape[:2], dtype=torch.int64)
        image, mask = apply_transform(self.transform, image, mask, self.dataset.task)
        if image.dtype == np.uint8 and not self.keep_uint8:
            image = image.astype(np.float32) / 255.0
        elif image.dtype != np.uint8:
            image = image.astype(np.float32, copy=False)
        item: dict[str, Any] = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "id": key,
            "orig_size": orig_size,
        }
        if mask is not None:
            if self.dataset.task is TaskType.MULTILABEL:
                item["mask"] = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))
            elif self.keep_uint8 and mask.dtype == np.uint8:
                item["mask"] = torch.from_numpy(np.ascontiguousarray(mask))  # class indices; int64 on the device
            else:
                item["mask"] = torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
        return item


def pseudo_label_datasets(
    cfg: ExperimentConfig,
    transform: Callable[..., dict[str, Any]] | None,
    *,
    dataset_root: str | Path | None = None,
) -> list[TorchSegmentationDataset]:
    """One torch dataset per folder in ``data.pseudo_labels`` (empty list when none), for ``ConcatDataset``.

    Their item ids are the plain stems; :func:`make_train_dataset` serves them inside the training
    dataset instead, with ``pseudo:<k>:<stem>`` ids.
    """
    if not cfg.data.pseudo_labels:
        return []
    opened = open_pseudo_labels(
        cfg.data.pseudo_labels,
        classes=cfg.data.classes,
        task=cfg.data.task,
        ignore_index=cfg.data.ignore_index,
        dataset_root=dataset_root,
    )
    return [TorchSegmentationDataset(ds, ds.ids, transform) for ds in opened]


def make_train_dataset(
    cfg: ExperimentConfig,
    dataset: SegDataset,
    train_ids: Sequence[str],
    *,
    dataset_root: str | Path | None = None,
    seed: int | None = None,
) -> TorchSegmentationDataset:
    """The training dataset of ``cfg``: train transform, copy-paste and pseudo-labels as configured."""
    seed = cfg.training.seed if seed is None else seed
    pseudo = (
        open_pseudo_labels(
            cfg.data.pseudo_labels,
            classes=cfg.data.classes,
            task=cfg.data.task,
            ignore_index=cfg.data.ignore_index,
            dataset_root=dataset_root,
        )
        if cfg.data.pseudo_labels
        else None
    )
    copy_paste = CopyPaste.from_config(dataset, train_ids, cfg.augmentation.mixing, seed=seed)
    return TorchSegmentationDataset(
        dataset,
        train_ids,
        build_train_transform(cfg, seed=seed),
        copy_paste=copy_paste,
        pseudo=pseudo,
        seed=seed,
    )


def make_eval_dataset(
    cfg: ExperimentConfig, dataset: SegDataset, ids: Sequence[str], *, test: bool = False
) -> TorchSegmentationDataset:
    """A validation (or, with ``test=True``, test) dataset with the evaluation transform."""
    return TorchSegmentationDataset(dataset, ids, build_eval_transform(cfg), test=test)
