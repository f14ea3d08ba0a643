"""The data section of the experiment config: dataset sources, splits, rare-class crops, ``DataConfig``.

Split out of :mod:`segcore.config`, which re-exports every public name here; import them from there.
Also home of the strict base model and :class:`TaskType`, because the data section is the bottom of the
config and every other section builds on it. No torch import here (see :mod:`segcore.config`).
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from segcore import limits

__all__ = [
    "TaskType",
    "CocoSource",
    "MaskFolderSource",
    "MultilabelJsonSource",
    "DatasetSource",
    "PredefinedSplit",
    "HoldoutSplit",
    "KFoldSplit",
    "SplitConfig",
    "RareClassCropConfig",
    "DataConfig",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)


PathText = Annotated[str, AfterValidator(limits.check_path_text)]
"""A path or URL: no control characters, bounded length (where it may point is the service layer's check)."""
Seed = Annotated[int, Field(ge=0, le=limits.MAX_SEED)]
PixelValue = Annotated[int, Field(ge=0, le=limits.MAX_PIXEL_VALUE)]
ClassIndex = Annotated[int, Field(ge=0, le=limits.MAX_CLASSES)]


def _check_regex(v: str | None) -> str | None:
    if v is None:
        return v
    try:
        re.compile(v)
    except re.error as exc:
        raise ValueError(f"group_key is not a valid regular expression ({exc}); e.g. '^(\\w+)_'") from None
    return v


GroupKey = Annotated[str | None, Field(max_length=200), AfterValidator(_check_regex)]


class TaskType(str, enum.Enum):
    """``multiclass``: one class per pixel (softmax). ``multilabel``: classes may overlap (sigmoid)."""

    MULTICLASS = "multiclass"
    MULTILABEL = "multilabel"


# ---------------------------------------------------------------- dataset sources


class _SourceBase(_Strict):
    root: PathText = Field(
        description="Dataset folder: absolute or relative to the dataset root. Local only; SegBoard workers "
        "mirror an fsspec URL (s3://...) first."
    )
    test_images: PathText | None = Field(
        default=None, description="Folder (relative to root) of unlabeled test images, if any."
    )


class CocoSource(_SourceBase):
    """COCO instances JSON (polygons or RLE) + an image folder. Background is class 0."""

    format: Literal["coco"] = "coco"
    annotations: PathText = Field(default="annotations.json", description="COCO JSON, relative to root.")
    images: PathText = Field(default="images", description="Image folder, relative to root.")
    category_map: dict[Annotated[int, Field(ge=-limits.MAX_SEED, le=limits.MAX_SEED)], ClassIndex] | None = Field(
        default=None,
        description="COCO category id -> class index (>=1). Default: categories sorted by id map to 1..N.",
    )


class MaskFolderSource(_SourceBase):
    """Images + single-channel index PNG masks with the same file stem (CamVid / VOC style)."""

    format: Literal["mask_folder"] = "mask_folder"
    images: PathText = "images"
    masks: PathText = "masks"
    mask_suffix: str = Field(default=".png", min_length=1, max_length=32,
                             description="Ending of each mask's file name after the image stem.")
    value_map: dict[PixelValue, ClassIndex] | None = Field(
        default=None,
        description="Pixel value -> class index. Default: identity for 0..num_classes-1. "
        "ISBI-style 0/255 masks need {0: 0, 255: 1}.",
    )
    ignore_value: PixelValue | None = Field(
        default=None, description="Pixel value that means 'unlabelled' (e.g. 255); becomes ignore_index."
    )

    @field_validator("mask_suffix")
    @classmethod
    def _plain_suffix(cls, v: str) -> str:
        if any(c in v for c in "/\\") or ".." in v or any(ord(c) < 32 for c in v):
            raise ValueError(f"mask_suffix must be the end of a file name such as '.png' or '_mask.png', got {v!r}")
        return v


class MultilabelJsonSource(_SourceBase):
    """Per-image JSON of class polygons where classes overlap (hand-bone X-ray style)."""

    format: Literal["multilabel_json"] = "multilabel_json"
    images: PathText = "images"
    annotations: PathText = Field(
        default="annotations",
        description="Folder of <image stem>.json files: {'annotations': [{'label': str, 'points': [[x, y], ...]}]}",
    )


DatasetSource = Annotated[
    CocoSource | MaskFolderSource | MultilabelJsonSource, Field(discriminator="format")
]


# ---------------------------------------------------------------- splits


class PredefinedSplit(_Strict):
    """Train/val lists shipped with the dataset: text files of image stems, relative to root."""

    kind: Literal["predefined"] = "predefined"
    train: PathText = "splits/train.txt"
    val: PathText = "splits/val.txt"


class HoldoutSplit(_Strict):
    """A random hold-out, stratified by class presence."""

    kind: Literal["holdout"] = "holdout"
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: Seed = 0
    stratify: bool = True
    group_key: GroupKey = Field(
        default=None, description="Regex with one group capturing a group id from the file stem (e.g. patient)."
    )


class KFoldSplit(_Strict):
    """k-fold cross-validation; ``fold`` is the validation fold of this run."""

    kind: Literal["kfold"] = "kfold"
    n_folds: int = Field(default=5, ge=2, le=limits.MAX_FOLDS)
    fold: int = Field(default=0, ge=0)
    seed: Seed = 0
    stratify: bool = True
    group_key: GroupKey = None

    @model_validator(mode="after")
    def _fold_in_range(self) -> KFoldSplit:
        if self.fold >= self.n_folds:
            raise ValueError(f"fold {self.fold} is out of range: use 0..{self.n_folds - 1}")
        return self


SplitConfig = Annotated[PredefinedSplit | HoldoutSplit | KFoldSplit, Field(discriminator="kind")]


class RareClassCropConfig(_Strict):
    """Training crops placed on rare classes more often (needs ``data.crop_size``).

    With probability ``p`` a crop is placed around a pixel of one class present in the image, drawn
    with probability proportional to ``class_weights``; otherwise the crop is uniform.
    """

    p: float = Field(
        default=0.0, ge=0, le=1,
        description="Chance that a training crop is placed on a rare-class pixel instead of uniformly; 0 disables.",
    )
    class_weights: Annotated[list[float], Field(max_length=limits.MAX_CLASSES)] | Literal["auto"] = Field(
        default="auto",
        description="How much each class is favoured when one is drawn: one non-negative number per class, or "
        "'auto' = 1/sqrt(pixel share) of the training split, computed once per run.",
    )

    @field_validator("class_weights")
    @classmethod
    def _weights(cls, v: list[float] | str) -> list[float] | str:
        if isinstance(v, list) and (any(w < 0 for w in v) or not any(w > 0 for w in v)):
            raise ValueError(f"class_weights must be non-negative numbers, not all zero, or 'auto'; got {v}")
        return v


class DataConfig(_Strict):
    source: DatasetSource
    task: TaskType = TaskType.MULTICLASS
    classes: list[Annotated[str, Field(min_length=1, max_length=limits.MAX_NAME_CHARS)]] = Field(
        min_length=1,
        max_length=limits.MAX_CLASSES,
        description="Class names in index order. Multiclass: index 0 is usually background.",
    )
    ignore_index: int = Field(default=255, ge=0, le=255, description="Label value ignored by losses and metrics.")
    image_size: tuple[int, int] | None = Field(
        default=None, description="(height, width) every image is resized to before augmentation; None keeps sizes."
    )
    crop_size: Literal["auto"] | tuple[int, int] | None = Field(
        default=None,
        description="(height, width) of random training crops, or 'auto': a square side chosen once per run from "
        "the training images' sizes (see docs/recipes.md); val and prediction use the full (resized) image.",
    )
    rare_class_crop: RareClassCropConfig = Field(default_factory=RareClassCropConfig)
    split: SplitConfig = Field(default_factory=HoldoutSplit)
    pseudo_labels: list[PathText] = Field(
        default_factory=list,
        max_length=limits.MAX_PSEUDO_DATASETS,
        description="Pseudo-label datasets (mask-folder format) added to the training set.",
    )
    fingerprint: str | None = Field(
        default=None, max_length=128, description="Expected dataset fingerprint; a mismatch fails the run."
    )

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, v: list[str]) -> list[str]:
        dupes = sorted({c for c in v if v.count(c) > 1})
        if dupes:
            raise ValueError(f"duplicate class names: {dupes}")
        return v

    @field_validator("crop_size", mode="before")
    @classmethod
    def _auto_spelling(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v.strip().lower() != "auto":
                raise ValueError(f"crop_size is [height, width], 'auto' or null, got {v!r}")
            return "auto"
        return v

    @field_validator("image_size", "crop_size")
    @classmethod
    def _positive_multiple_of_32(cls, v: tuple[int, int] | str | None) -> tuple[int, int] | str | None:
        if v is not None and not isinstance(v, str):
            if min(v) <= 0:
                raise ValueError(f"sizes must be positive, got {v}")
            if max(v) > limits.MAX_IMAGE_SIDE:
                raise ValueError(f"sides must be at most {limits.MAX_IMAGE_SIDE} px, got {v}")
            if any(s % 32 for s in v):
                raise ValueError(f"sizes must be multiples of 32 for the encoders' strides, got {v}")
        return v

    @model_validator(mode="after")
    def _rare_crops_need_crops(self) -> DataConfig:
        rc = self.rare_class_crop
        if rc.p > 0 and self.crop_size is None:
            raise ValueError(
                "rare_class_crop.p > 0 places training crops, so it needs data.crop_size: set it to 'auto' or "
                "[height, width], or set rare_class_crop.p to 0"
            )
        if isinstance(rc.class_weights, list) and len(rc.class_weights) != self.num_classes:
            raise ValueError(
                f"rare_class_crop.class_weights needs one weight per class ({self.num_classes}), "
                f"got {len(rc.class_weights)}; or use 'auto'"
            )
        return self

    @property
    def num_classes(self) -> int:
        return len(self.classes)
