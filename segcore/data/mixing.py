"""Mixing augmentations: CutMix and MixUp on batches, and copy-paste of rare-class objects.

CutMix for segmentation pastes a box of another image *and the same box of its mask*, so the mixed
mask is exact and the loss needs no interpolation: :func:`cutmix` returns the mixed mask as
``mask_a``, ``mask_b = None`` and ``lam = 1``. MixUp blends whole images, so its loss is
``lam * L(pred, mask_a) + (1 - lam) * L(pred, mask_b)`` (:func:`mixed_loss`).

A :class:`MixedBatch` unpacks as ``images, mask_a, mask_b, lam``.

Copy-paste cuts connected objects of chosen (by default the rarest) classes out of training images
into an :class:`ObjectBank`, and :class:`CopyPaste` pastes a few of them at random positions onto
other training images, with their labels.

Example:
    >>> mixer = BatchMixer(cfg.augmentation.mixing, seed=0)  # doctest: +SKIP
    >>> batch = mixer(images, masks)  # doctest: +SKIP
    >>> loss = mixed_loss(criterion, model(batch.images), batch)  # doctest: +SKIP
    >>> images, mask_a, mask_b, lam = mixer(images, masks)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from segcore.config import MixingConfig, TaskType
from segcore.data.formats import SegDataset
from segcore.errors import ConfigError

__all__ = [
    "MixedBatch",
    "cutmix",
    "mixup",
    "mixed_loss",
    "BatchMixer",
    "PasteObject",
    "ObjectBank",
    "CopyPaste",
]


@dataclass
class MixedBatch:
    """A batch after mixing.

    Attributes:
        images: ``[B, C, H, W]`` float.
        mask_a: Target the loss weighs by ``lam`` (``[B, H, W]`` int64 or ``[B, K, H, W]`` float).
        mask_b: Target the loss weighs by ``1 - lam``; None when ``mask_a`` alone is the exact
            target (no mixing, or CutMix).
        lam: Mixing weight in [0, 1]; 1 when ``mask_b`` is None.
    """

    images: torch.Tensor
    mask_a: torch.Tensor
    mask_b: torch.Tensor | None
    lam: float

    def __iter__(self) -> Iterator[object]:
        """Unpack as ``images, mask_a, mask_b, lam``."""
        return iter((self.images, self.mask_a, self.mask_b, self.lam))


def _box(h: int, w: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box covering about ``1 - lam`` of an ``h x w`` image: ``(y0, y1, x0, x1)``."""
    cut = math.sqrt(max(0.0, 1.0 - lam))
    bh, bw = int(round(h * cut)), int(round(w * cut))
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - bh // 2, 0), min(cy + bh - bh // 2, h)
    x0, x1 = max(cx - bw // 2, 0), min(cx + bw - bw // 2, w)
    return y0, y1, x0, x1


def cutmix(
    images: torch.Tensor, masks: torch.Tensor, *, alpha: float = 1.0, rng: np.random.Generator | None = None
) -> MixedBatch:
    """Paste a random box of a shuffled partner into each image, mask included.

    Args:
        images: ``[B, C, H, W]``.
        masks: ``[B, H, W]`` (multiclass) or ``[B, K, H, W]`` (multilabel).
        alpha: Box size ``1 - lam`` with ``lam ~ Beta(alpha, alpha)``.
        rng: Random state; None draws a fresh one.

    Returns:
        A :class:`MixedBatch` with the exact mixed mask in ``mask_a``, ``mask_b = None``, ``lam = 1``.
    """
    rng = rng or np.random.default_rng()
    b, _, h, w = images.shape
    perm = torch.from_numpy(rng.permutation(b)).to(images.device)
    lam = float(rng.beta(alpha, alpha))
    y0, y1, x0, x1 = _box(h, w, lam, rng)
    out_img = images.clone()
    out_mask = masks.clone()
    out_img[..., y0:y1, x0:x1] = images[perm][..., y0:y1, x0:x1]
    out_mask[..., y0:y1, x0:x1] = masks[perm][..., y0:y1, x0:x1]
    return MixedBatch(out_img, out_mask, None, 1.0)


def mixup(
    images: torch.Tensor, masks: torch.Tensor, *, alpha: float = 0.4, rng: np.random.Generator | None = None
) -> MixedBatch:
    """Blend each image with a shuffled partner: ``lam * x + (1 - lam) * x[perm]``, ``lam ~ Beta(alpha, alpha)``.

    Returns:
        A :class:`MixedBatch` with ``mask_a = masks``, ``mask_b = masks[perm]`` and ``lam``.
    """
    rng = rng or np.random.default_rng()
    b = images.shape[0]
    perm = torch.from_numpy(rng.permutation(b)).to(images.device)
    lam = float(rng.beta(alpha, alpha))
    mixed = lam * images + (1.0 - lam) * images[perm]
    return MixedBatch(mixed, masks, masks[perm], lam)


def mixed_loss(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], logits: torch.Tensor, batch: MixedBatch
) -> torch.Tensor:
    """``lam * loss(logits, mask_a) + (1 - lam) * loss(logits, mask_b)``; one term without ``mask_b``."""
    loss = loss_fn(logits, batch.mask_a)
    if batch.mask_b is None:
        return loss
    return batch.lam * loss + (1.0 - batch.lam) * loss_fn(logits, batch.mask_b)


class BatchMixer:
    """Applies CutMix or MixUp to a batch with the probabilities of a :class:`MixingConfig`.

    CutMix is tried first (``cutmix_p``), then MixUp (``mixup_p``); otherwise the batch passes
    unchanged (``mask_b = None``).

    Args:
        cfg: ``augmentation.mixing``.
        task: When given, the masks' layout is checked against it (``[B, H, W]`` for multiclass,
            ``[B, K, H, W]`` for multilabel).
        ignore_index: The label of unlabelled pixels. Neither mix has to treat it specially (CutMix
            moves labels with their pixels; each MixUp term ignores its own unlabelled pixels), so
            it is only recorded for callers.
        seed: Seed of the mixer's own random state. None draws every batch's randomness from
            numpy's global state, so a loop that seeds numpy per epoch repeats its mixes on resume.
    """

    def __init__(
        self,
        cfg: MixingConfig,
        *,
        task: TaskType | str | None = None,
        ignore_index: int | None = None,
        seed: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.task = None if task is None else TaskType(task)
        self.ignore_index = ignore_index
        self._rng = None if seed is None else np.random.default_rng(seed)

    @property
    def enabled(self) -> bool:
        return self.cfg.cutmix_p > 0 or self.cfg.mixup_p > 0

    def _generator(self) -> np.random.Generator:
        if self._rng is not None:
            return self._rng
        return np.random.default_rng(np.random.randint(0, 2**31 - 1))

    def _check(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        if self.task is None:
            return
        want = 4 if self.task is TaskType.MULTILABEL else 3
        if masks.ndim != want or masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
            layout = "[B, K, H, W]" if want == 4 else "[B, H, W]"
            raise ValueError(
                f"{self.task.value} masks must be {layout} matching images {tuple(images.shape)}, "
                f"got {tuple(masks.shape)}"
            )

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> MixedBatch:
        self._check(images, masks)
        if self.enabled and images.shape[0] > 1:
            rng = self._generator()
            if self.cfg.cutmix_p > 0 and rng.random() < self.cfg.cutmix_p:
                return cutmix(images, masks, alpha=self.cfg.cutmix_alpha, rng=rng)
            if self.cfg.mixup_p > 0 and rng.random() < self.cfg.mixup_p:
                return mixup(images, masks, alpha=self.cfg.mixup_alpha, rng=rng)
        return MixedBatch(images, masks, None, 1.0)


# ---------------------------------------------------------------- copy-paste


@dataclass
class PasteObject:
    """One object cut out of a training image.

    Attributes:
        cls: The class it was cut for.
        image: ``h x w x 3`` uint8 crop around the object.
        region: ``h x w`` bool, the object's pixels in the crop.
        label: Multiclass: ``h x w`` uint8 class indices; multilabel: ``K x h x w`` uint8 {0,1}
            (the object's pixels only; the rest is 0).
        source_id: The image it came from.
    """

    cls: int
    image: np.ndarray
    region: np.ndarray
    label: np.ndarray
    source_id: str


class ObjectBank:
    """Objects of chosen classes cut from training images, for :class:`CopyPaste`."""

    def __init__(self, objects: Sequence[PasteObject], classes: Sequence[int], task: TaskType) -> None:
        self.objects = list(objects)
        self.classes = list(classes)
        self.task = task
        self._by_class: dict[int, list[int]] = {}
        for k, obj in enumerate(self.objects):
            self._by_class.setdefault(obj.cls, []).append(k)

    def __len__(self) -> int:
        return len(self.objects)

    @staticmethod
    def rarest_classes(dataset: SegDataset, ids: Sequence[str]) -> list[int]:
        """The rarest third of the classes by pixel share over ``ids`` (classes with no pixel left out)."""
        counts = np.zeros(dataset.num_classes, dtype=np.int64)
        for image_id in ids:
            m = dataset.load_mask(image_id)
            if dataset.task is TaskType.MULTILABEL:
                counts += m.reshape(m.shape[0], -1).sum(axis=1)
            else:
                counts += np.bincount(m.ravel(), minlength=256)[: dataset.num_classes]
        present = [c for c in np.argsort(counts, kind="stable") if counts[c] > 0]
        k = max(1, math.ceil(dataset.num_classes / 3))
        return sorted(int(c) for c in present[:k])

    @classmethod
    def build(
        cls,
        dataset: SegDataset,
        ids: Sequence[str],
        *,
        classes: Sequence[str] | None = None,
        bank_size: int = 256,
        min_area: int = 16,
        seed: int = 0,
    ) -> ObjectBank:
        """Cut connected components of ``classes`` out of the images ``ids``.

        Args:
            dataset: The labelled dataset.
            ids: Training image ids (never validation ones).
            classes: Class names to collect; None or empty takes the rarest third by pixel share.
            bank_size: Most objects kept, shared evenly between the classes.
            min_area: Smaller components (in pixels) are skipped.
            seed: Order in which images are visited.

        Raises:
            ConfigError: for a class name that is not among the dataset's classes.
        """
        if classes:
            unknown = [c for c in classes if c not in dataset.classes]
            if unknown:
                raise ConfigError(
                    f"copy_paste_classes {unknown} are not among the classes {dataset.classes}; fix the names"
                )
            chosen = sorted(dataset.classes.index(c) for c in classes)
        else:
            chosen = cls.rarest_classes(dataset, ids)
        per_class = max(1, bank_size // max(len(chosen), 1))
        rng = np.random.default_rng(seed)
        presence = dataset.class_presence()
        row = {i: n for n, i in enumerate(dataset.ids)}
        multilabel = dataset.task is TaskType.MULTILABEL
        kept: dict[int, list[PasteObject]] = {c: [] for c in chosen}
        structure = np.ones((3, 3), dtype=bool)
        for image_id in [ids[k] for k in rng.permutation(len(ids))]:
            wanted = [c for c in chosen if presence[row[image_id], c] and len(kept[c]) < per_class]
            if not wanted:
                continue
            image, mask = dataset.load_image(image_id), dataset.load_mask(image_id)
            for c in wanted:
                binary = mask[c].astype(bool) if multilabel else mask == c
                labelled, n = ndimage.label(binary, structure=structure)
                for k, sl in enumerate(ndimage.find_objects(labelled), start=1):
                    if sl is None or len(kept[c]) >= per_class:
                        continue
                    region = labelled[sl] == k
                    if int(region.sum()) < min_area:
                        continue
                    if multilabel:
                        at = (slice(None), *sl)
                        label = (mask[at] * region[None]).astype(np.uint8)
                    else:
                        label = np.where(region, np.uint8(c), np.uint8(0)).astype(np.uint8)
                    kept[c].append(PasteObject(c, image[sl].copy(), region, label, image_id))
            if all(len(v) >= per_class for v in kept.values()):
                break
        objects = [o for c in chosen for o in kept[c]]
        return cls(objects, chosen, dataset.task)

    def sample(self, rng: np.random.Generator) -> PasteObject | None:
        """A random object: a random class first (so rare classes get equal turns), then one of its objects."""
        classes = [c for c in self.classes if self._by_class.get(c)]
        if not classes:
            return None
        c = classes[int(rng.integers(len(classes)))]
        idx = self._by_class[c]
        return self.objects[idx[int(rng.integers(len(idx)))]]


class CopyPaste:
    """Pastes up to ``max_objects`` bank objects onto an image and its mask with probability ``p``.

    Objects keep their size, may be mirrored, and are placed uniformly where they fit; an object
    larger than the image is skipped. The pasted pixels replace the image's pixels and labels
    (multilabel: every channel under the object is replaced by the object's own labels).
    """

    def __init__(self, bank: ObjectBank, *, p: float = 0.5, max_objects: int = 3) -> None:
        self.bank = bank
        self.p = p
        self.max_objects = max_objects

    @classmethod
    def from_config(
        cls, dataset: SegDataset, train_ids: Sequence[str], cfg: MixingConfig, *, seed: int = 0
    ) -> CopyPaste | None:
        """Build from ``augmentation.mixing``; None when ``copy_paste_p`` is 0 or the bank comes out empty."""
        if cfg.copy_paste_p <= 0:
            return None
        bank = ObjectBank.build(
            dataset, train_ids, classes=cfg.copy_paste_classes, bank_size=cfg.copy_paste_bank_size, seed=seed
        )
        if not len(bank):
            return None
        return cls(bank, p=cfg.copy_paste_p, max_objects=cfg.copy_paste_max_objects)

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return copies of ``image`` (``HxWx3``) and ``mask`` (``HxW`` or ``KxHxW``) with objects pasted."""
        if not len(self.bank) or rng.random() >= self.p:
            return image, mask
        image, mask = image.copy(), mask.copy()
        multilabel = mask.ndim == 3
        h, w = image.shape[:2]
        for _ in range(int(rng.integers(1, self.max_objects + 1))):
            obj = self.bank.sample(rng)
            if obj is None:
                break
            crop, region, label = obj.image, obj.region, obj.label
            if rng.random() < 0.5:
                crop, region, label = crop[:, ::-1], region[:, ::-1], label[..., ::-1]
            oh, ow = region.shape
            if oh > h or ow > w:
                continue
            y, x = int(rng.integers(h - oh + 1)), int(rng.integers(w - ow + 1))
            target = image[y : y + oh, x : x + ow]
            target[region] = crop[region]
            if multilabel:
                sub = mask[:, y : y + oh, x : x + ow]
                sub[:, region] = label[:, region]
            else:
                sub = mask[y : y + oh, x : x + ow]
                sub[region] = label[region]
        return image, mask
