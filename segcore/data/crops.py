"""Rare-class-aware training crops, on albumentations' ``CropNonEmptyMaskIfExists``.

:class:`RareClassCrop` makes a ``height x width`` crop of an image (padded to at least that size first,
see :mod:`segcore.data.transforms`). With probability ``rare_p`` it draws one class among those present
in the mask, with probability proportional to ``class_weights`` (by default inverse-sqrt pixel
frequency, :mod:`segcore.data.policy`), and places the crop so that it holds a pixel of that class,
chosen uniformly, at a uniformly random position inside the crop: albumentations'
``CropNonEmptyMaskIfExists`` placement, given the binary mask of the drawn class. Otherwise the crop is
uniform over the image, as ``RandomCrop``.

Why not the other common rule: MMSegmentation's ``RandomCrop(cat_max_ratio=0.75)`` redraws a uniform
crop (up to 10 times) while one class covers more than 75% of it. That avoids crops of pure
background but does not look for rare classes, which are what thin and small objects need.

Every random draw comes from the transform's own random state, which ``A.Compose(seed=...)`` and
``set_random_seed`` set, so a seeded item repeats its crop whatever process serves it.

Example:
    >>> crop = RareClassCrop(128, 128, class_weights=[0.3, 1.0, 2.7], rare_p=0.5)  # doctest: +SKIP
    >>> out = A.Compose([crop], seed=0)(image=image, mask=mask)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # never phone home for a version check
import albumentations as A

__all__ = ["RareClassCrop", "present_classes"]


def present_classes(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """``[C]`` bool: which classes have at least one pixel in ``mask``.

    Args:
        mask: Multiclass ``HxW`` class indices (values >= ``num_classes``, e.g. ignore, do not count) or
            multilabel ``HxWxC`` 0/1.
        num_classes: ``C``.
    """
    if mask.ndim == 3:
        return np.asarray(mask.reshape(-1, mask.shape[-1])[:, :num_classes].any(axis=0))
    return np.bincount(mask.ravel(), minlength=num_classes)[:num_classes] > 0


class RareClassCrop(A.CropNonEmptyMaskIfExists):  # type: ignore[misc]  # albumentations has no type information
    """A crop placed on a weighted-drawn present class with probability ``rare_p``, else uniform.

    Args:
        height: Crop height; the image must be at least this high (pad it first).
        width: Crop width.
        class_weights: One non-negative weight per class; a class is drawn among those present in the
            image with probability ``w_c / sum of the present w``.
        rare_p: Chance of a class-placed crop.
    """

    def __init__(self, height: int, width: int, class_weights: Sequence[float], rare_p: float = 0.5) -> None:
        super().__init__(height=height, width=width, p=1.0)
        if not 0 <= rare_p <= 1:
            raise ValueError(f"rare_p must be in [0, 1], got {rare_p}")
        self.class_weights = [float(w) for w in class_weights]
        self.rare_p = float(rare_p)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "class_weights", "rare_p")

    def _draw_class(self, mask: np.ndarray) -> int | None:
        weights = np.asarray(self.class_weights) * present_classes(mask, len(self.class_weights))
        if weights.sum() <= 0:
            return None
        return self.py_random.choices(range(len(weights)), weights=weights.tolist())[0]

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        mask = data.get("mask")
        shape = params["shape"][:2]
        target = np.zeros(shape, dtype=bool)  # empty: the parent's crop is then uniform
        if mask is not None and self.py_random.random() < self.rare_p:
            cls = self._draw_class(mask)
            if cls is not None:
                target = mask[..., cls] > 0 if mask.ndim == 3 else mask == cls
        return super().get_params_dependent_on_data(params, {"mask": target})
