"""Augmentation pipelines (albumentations 2.x): named presets, extra transforms from the config, normalisation.

A training pipeline is, in order: resize to ``data.image_size`` (if set), pad + random crop to
``data.crop_size`` (if set; a rare-class-aware crop with ``data.rare_class_crop.p`` > 0, see
:mod:`segcore.data.crops`), the preset's transforms, ``augmentation.transforms``, normalisation.
The evaluation pipeline is resize + normalisation. A config whose crop size or class weights are
still ``auto`` is resolved first (:func:`segcore.data.policy.resolve_data_policy`).

Masks are never interpolated (nearest neighbour) and pixels that a geometric transform invents
(padding, rotation corners) are filled with ``ignore_index`` in multiclass masks and 0 in multilabel
masks. Multiclass masks go in as ``mask=HxW``; multilabel masks as ``mask=HxWxC``.

Example:
    >>> t = build_train_transform(cfg)  # doctest: +SKIP
    >>> out = t(image=image, mask=mask)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from segcore import catalog
from segcore.config import ExperimentConfig, TaskType, TransformSpec
from segcore.errors import ConfigError
from segcore.registry import Registry

if TYPE_CHECKING:
    import albumentations as A

    from segcore.data.formats import SegDataset

__all__ = [
    "PresetContext",
    "PRESETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "normalization",
    "mask_fill_value",
    "build_transform_spec",
    "build_train_transform",
    "build_eval_transform",
    "apply_transform",
    "preview_augmentations",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _albumentations() -> Any:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # never phone home for a version check
    import albumentations

    return albumentations


@dataclass(frozen=True)
class PresetContext:
    """What a preset needs to know to build its transforms.

    Attributes:
        out_size: ``(height, width)`` every training sample has after resize/crop, None if images keep
            their own sizes.
        fill_mask: Value for mask pixels a geometric transform invents.
        task: Multiclass or multilabel.
    """

    out_size: tuple[int, int] | None
    fill_mask: int
    task: TaskType

    @property
    def square(self) -> bool:
        """True when every sample is known to be square (so 90-degree rotations keep the shape)."""
        return self.out_size is not None and self.out_size[0] == self.out_size[1]


PresetBuilder = Callable[[PresetContext], list[Any]]

PRESETS: Registry[PresetBuilder] = Registry("augmentation preset", plugins="augmentations")  # + installed presets


def _rotate90_or_vflip(ctx: PresetContext) -> Any:
    A = _albumentations()
    # A 90-degree turn swaps height and width; on non-square samples that would break batching.
    if ctx.square:
        return A.RandomRotate90(p=0.5)
    return A.VerticalFlip(p=0.5)


@PRESETS.register("none", description=catalog.AUGMENTATION_PRESETS["none"])
def _preset_none(ctx: PresetContext) -> list[Any]:
    return []


@PRESETS.register("flips", description=catalog.AUGMENTATION_PRESETS["flips"])
def _preset_flips(ctx: PresetContext) -> list[Any]:
    A = _albumentations()
    return [A.HorizontalFlip(p=0.5)]


@PRESETS.register("basic", description=catalog.AUGMENTATION_PRESETS["basic"])
def _preset_basic(ctx: PresetContext) -> list[Any]:
    A = _albumentations()
    return [
        # random scale around the crop: zoom in or out by up to 25%, invented pixels ignored
        A.Affine(scale=(0.75, 1.25), border_mode=0, fill=0, fill_mask=ctx.fill_mask, p=0.5),
        A.HorizontalFlip(p=0.5),
        _rotate90_or_vflip(ctx),
    ]


@PRESETS.register("strong", description=catalog.AUGMENTATION_PRESETS["strong"])
def _preset_strong(ctx: PresetContext) -> list[Any]:
    A = _albumentations()
    return [
        *_preset_basic(ctx),
        A.Affine(
            translate_percent=(-0.0625, 0.0625),
            scale=(0.9, 1.1),
            rotate=(-30, 30),
            border_mode=0,
            fill=0,
            fill_mask=ctx.fill_mask,
            p=0.5,
        ),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05, p=0.5),
        A.CLAHE(clip_limit=2.0, p=0.2),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.02, 0.08))], p=0.3),
        A.GridDropout(ratio=0.3, fill=0, fill_mask=None, p=0.2),
    ]


@PRESETS.register("xray", description=catalog.AUGMENTATION_PRESETS["xray"])
def _preset_xray(ctx: PresetContext) -> list[Any]:
    A = _albumentations()
    return [
        A.Affine(rotate=(-10, 10), scale=(0.9, 1.1), border_mode=0, fill=0, fill_mask=ctx.fill_mask, p=0.5),
        A.CLAHE(clip_limit=2.0, p=0.3),
        A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
        A.ElasticTransform(alpha=30, sigma=6, border_mode=0, fill=0, fill_mask=ctx.fill_mask, p=0.2),
    ]


def normalization(cfg: ExperimentConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` per channel on the 0..1 scale that the pipeline's normalisation uses."""
    if cfg.augmentation.normalize == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def mask_fill_value(cfg: ExperimentConfig) -> int:
    """Mask value of invented pixels: ``ignore_index`` (multiclass) or 0 (multilabel)."""
    return cfg.data.ignore_index if cfg.data.task is TaskType.MULTICLASS else 0


def _context(cfg: ExperimentConfig) -> PresetContext:
    from segcore.data.policy import require_resolved

    require_resolved(cfg)
    # require_resolved: crop_size is no longer 'auto'
    out = cast("tuple[int, int] | None", cfg.data.crop_size or cfg.data.image_size)
    return PresetContext(out_size=out if out else None, fill_mask=mask_fill_value(cfg), task=cfg.data.task)


def build_transform_spec(spec: TransformSpec, ctx: PresetContext) -> Any:
    """Instantiate one :class:`~segcore.config.TransformSpec` as an albumentations transform.

    Geometric transforms get ``fill_mask`` = the mask fill value unless the spec sets it; crops
    without a size get the training size.

    Raises:
        ConfigError: for a name outside :data:`segcore.catalog.TRANSFORMS` or invalid params.
    """
    A = _albumentations()
    if spec.name not in catalog.TRANSFORMS:
        raise ConfigError(
            f"unknown transform {spec.name!r} in augmentation.transforms; valid choices: "
            f"{', '.join(catalog.TRANSFORMS)}"
        )
    cls = getattr(A, spec.name)
    accepted = inspect.signature(cls.__init__).parameters
    params = dict(spec.params)
    unknown = sorted(k for k in params if k not in accepted or k in ("self", "p"))
    if unknown:
        valid = [k for k in accepted if k not in ("self", "p", "always_apply")]
        raise ConfigError(
            f"transform {spec.name!r} has no parameter(s) {', '.join(unknown)} "
            f"(set the probability with 'p'); valid parameters: {', '.join(valid)}"
        )
    if "border_mode" in accepted and "fill_mask" in accepted and "fill_mask" not in params:
        params["fill_mask"] = ctx.fill_mask
    if spec.name == "RandomResizedCrop" and "size" not in params:
        if ctx.out_size is None:
            raise ConfigError("transform 'RandomResizedCrop' needs params.size, or set data.crop_size/image_size")
        params["size"] = tuple(ctx.out_size)
    if spec.name == "RandomCrop" and not {"height", "width"} & set(params):
        if ctx.out_size is None:
            raise ConfigError("transform 'RandomCrop' needs params height and width, or set data.crop_size")
        params["height"], params["width"] = ctx.out_size
    try:
        return cls(**params, p=spec.p)
    except Exception as exc:  # albumentations raises pydantic ValidationError, TypeError or ValueError
        raise ConfigError(f"invalid params for transform {spec.name!r}: {exc}") from exc


def _resize_and_crop(cfg: ExperimentConfig, *, train: bool) -> list[Any]:
    A = _albumentations()
    out: list[Any] = []
    if cfg.data.image_size is not None:
        h, w = cfg.data.image_size
        out.append(A.Resize(height=h, width=w, interpolation=1, mask_interpolation=0))
    if train and cfg.data.crop_size is not None:
        h, w = cast("tuple[int, int]", cfg.data.crop_size)  # resolved by the run before transforms are built
        fill_mask = mask_fill_value(cfg)
        # images smaller than the crop (mixed-size datasets) are padded, the padding ignored by the loss
        out.append(A.PadIfNeeded(min_height=h, min_width=w, border_mode=0, fill=0, fill_mask=fill_mask))
        rare = cfg.data.rare_class_crop
        if rare.p > 0:
            from segcore.data.crops import RareClassCrop

            weights = cast("list[float]", rare.class_weights)  # resolved by the run: no longer 'auto'
            out.append(RareClassCrop(height=h, width=w, class_weights=weights, rare_p=rare.p))
        else:
            out.append(A.RandomCrop(height=h, width=w))
    return out


def _normalize(cfg: ExperimentConfig) -> Any:
    A = _albumentations()
    mean, std = normalization(cfg)
    return A.Normalize(mean=mean, std=std, max_pixel_value=255.0)


def build_train_transform(
    cfg: ExperimentConfig, *, normalize: bool = True, seed: int | None = None
) -> A.Compose:
    """The training pipeline of ``cfg``.

    Args:
        cfg: The experiment config (``data`` sizes, ``augmentation`` preset and transforms).
        normalize: False leaves uint8 pixels (for previews).
        seed: Seed of the pipeline's own random state; None draws one from the OS.

    Raises:
        ConfigError: for an unknown preset or transform, or invalid transform params.
    """
    A = _albumentations()
    ctx = _context(cfg)
    try:
        preset = PRESETS.get(cfg.augmentation.preset).obj
    except KeyError as exc:
        raise ConfigError(str(exc)) from exc
    steps = [*_resize_and_crop(cfg, train=True), *preset(ctx)]
    steps += [build_transform_spec(spec, ctx) for spec in cfg.augmentation.transforms]
    if normalize:
        steps.append(_normalize(cfg))
    return A.Compose(steps, seed=seed)


def build_eval_transform(cfg: ExperimentConfig, *, normalize: bool = True) -> A.Compose:
    """The validation/inference pipeline: resize to ``data.image_size`` (if set) and normalise."""
    A = _albumentations()
    steps = _resize_and_crop(cfg, train=False)
    if normalize:
        steps.append(_normalize(cfg))
    return A.Compose(steps, seed=0)


def apply_transform(
    transform: Callable[..., dict[str, Any]] | None, image: np.ndarray, mask: np.ndarray | None, task: TaskType
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run ``transform`` on an image and a mask in the dataset's layout.

    Args:
        transform: An albumentations pipeline, or None for no change.
        image: ``HxWx3`` uint8.
        mask: Multiclass ``HxW`` or multilabel ``CxHxW``, or None.
        task: Decides the mask layout.

    Returns:
        The transformed image and mask, the mask in the same layout as given.
    """
    if transform is None:
        return image, mask
    if mask is None:
        return transform(image=image)["image"], None
    multilabel = task is TaskType.MULTILABEL
    m = np.ascontiguousarray(mask.transpose(1, 2, 0)) if multilabel else mask
    out = transform(image=image, mask=m)
    m = out["mask"]
    if multilabel:
        m = m[:, :, None] if m.ndim == 2 else m
        m = np.ascontiguousarray(m.transpose(2, 0, 1))
    return out["image"], m


def preview_augmentations(
    dataset: SegDataset, cfg: ExperimentConfig, ids: Sequence[str], n: int, *, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` augmented samples, cycling through ``ids``, as the training pipeline makes them but not normalised.

    Returns:
        ``(image HxWx3 uint8, mask)`` pairs; the mask in the dataset's layout (``HxW`` or ``CxHxW``).

    Raises:
        ConfigError: for an invalid augmentation config; ValueError for an empty ``ids``.
    """
    if not ids:
        raise ValueError("preview_augmentations needs at least one image id")
    from segcore.data.policy import resolve_data_policy

    cfg, _ = resolve_data_policy(cfg, dataset, ids)  # 'auto' values as a run on these ids would choose them
    transform = build_train_transform(cfg, normalize=False, seed=seed)
    out = []
    for k in range(n):
        image_id = ids[k % len(ids)]
        img, mask = apply_transform(transform, dataset.load_image(image_id), dataset.load_mask(image_id), dataset.task)
        out.append((np.asarray(img, dtype=np.uint8), np.asarray(mask)))
    return out
