"""A run's data policy: what a config leaves as ``auto`` (training crop, class weights), fixed once per run.

The rules, which ``docs/recipes.md`` states too:

- **Training crop** (``data.crop_size: auto``): a square of side

  ``s = floor_m(min(clamp(0.75 * median_short, 256, 512), ceil_m(median_short)))``, at least ``m``,

  where ``median_short`` is the median over the training images of ``min(height, width)`` (after
  ``data.image_size``, when set), ``m`` the model's input multiple
  (:func:`segcore.models.model_input_multiple`, 32 for most models), and ``floor_m`` / ``ceil_m`` round
  down / up to a multiple of ``m``. Three quarters of the short side keep most of an image's context
  while leaving the crop room to move, which is what makes crops an augmentation; the floor of 256 px
  keeps enough context for scene classes (road, grass, sky need it: 128-px crops of 240x320 photos lost
  them), the ceiling of 512 bounds the cost; the cap stops small images from being mostly padding
  (images of at most 256 px are trained whole). Images smaller than the crop are padded (pixels 0,
  mask ``ignore_index``, as in :mod:`segcore.data.transforms`), so mixed sizes batch. Validation and
  prediction stay at full resolution.
- **Class weights** (``data.rare_class_crop.class_weights: auto`` and ``weighted_ce``'s ``weights: auto``):
  inverse-sqrt pixel frequency over the training split,
  ``w_c = share_c ** -0.5``, capped at 10 times the smallest weight and normalised to mean 1
  (:func:`segcore.data.statistics.frequency_weights`). The square root is the milder of the usual
  choices (median-frequency balancing weighs by ``1 / share``): it lifts rare classes without trading
  away the frequent ones' accuracy.

Example:
    >>> cfg, policy = resolve_data_policy(cfg, dataset, train_ids)  # doctest: +SKIP
    >>> policy.crop_size  # doctest: +SKIP
    (256, 256)
    >>> policy.crop_rule  # doctest: +SKIP
    'auto: median short side 240 px x 0.75, clamped to [256, 512], at most the short side, multiple of 32 -> 256x256'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, Field

from segcore.config import ExperimentConfig
from segcore.data.formats import SegDataset
from segcore.data.statistics import frequency_weights, pixel_shares
from segcore.errors import ConfigError, DatasetError

__all__ = [
    "CROP_FRACTION",
    "CROP_MIN",
    "CROP_MAX",
    "WEIGHT_POWER",
    "WEIGHT_MAX_RATIO",
    "DataPolicy",
    "auto_crop_side",
    "short_sides_from_histogram",
    "auto_class_weights",
    "resolve_crop_size",
    "resolve_data_policy",
    "require_resolved",
]

CROP_FRACTION = 0.75
CROP_MIN, CROP_MAX = 256, 512
WEIGHT_POWER = 0.5
WEIGHT_MAX_RATIO = 10.0


class DataPolicy(BaseModel):
    """What :func:`resolve_data_policy` chose for one run (JSON, for the run page and the run folder).

    ``crop_rule`` says in one line how the crop was chosen; the weights are None when nothing asked for them.
    """

    crop_size: tuple[int, int] | None = Field(description="(height, width) of training crops; None: whole images.")
    crop_auto: bool = Field(description="True when data.crop_size was 'auto'.")
    crop_rule: str
    median_short_side: float | None = None
    num_train_images: int
    class_shares: list[float] | None = Field(default=None, description="Pixel share per class, training split.")
    rare_crop_weights: list[float] | None = None
    loss_weights: list[float] | None = None


def auto_crop_side(short_sides: Sequence[int], multiple: int) -> int:
    """The side of the square ``auto`` training crop (module docstring for the rule).

    Args:
        short_sides: ``min(height, width)`` of each training image, as it enters the crop.
        multiple: The model's input multiple.

    Example:
        >>> auto_crop_side([240] * 5 + [213, 320], 32)
        256
        >>> auto_crop_side([512] * 30, 32)
        384
    """
    if not short_sides:
        raise DatasetError("the 'auto' crop needs at least one training image")
    if multiple < 1:
        raise ValueError(f"multiple must be positive, got {multiple}")
    median = float(np.median(short_sides))
    side = min(max(median * CROP_FRACTION, CROP_MIN), CROP_MAX)
    side = min(side, math.ceil(median / multiple) * multiple)
    return max(multiple, int(side) // multiple * multiple)


def short_sides_from_histogram(image_sizes: Mapping[str, int]) -> list[int]:
    """Short sides of the images counted in a ``"WxH" -> count`` histogram (dataset statistics, validation).

    Lets a form preview the ``auto`` crop from stored statistics: ``auto_crop_side(short_sides_from_histogram(
    stats.image_sizes), 32)``, without reading the images.
    """
    out: list[int] = []
    for size, count in image_sizes.items():
        w, h = (int(v) for v in size.lower().split("x"))
        out += [min(w, h)] * int(count)
    return out


def auto_class_weights(shares: Sequence[float] | np.ndarray) -> list[float]:
    """The ``auto`` class weights: ``share ** -0.5``, capped at 10x the smallest, mean 1."""
    return frequency_weights(shares, power=WEIGHT_POWER, max_ratio=WEIGHT_MAX_RATIO)


def _short_sides(cfg: ExperimentConfig, dataset: SegDataset, ids: Sequence[str]) -> list[int]:
    if cfg.data.image_size is not None:
        return [min(cfg.data.image_size)] * len(ids)
    return [min(dataset.image_size(i)) for i in ids]


def _multiple(cfg: ExperimentConfig) -> int:
    from segcore.models import model_input_multiple  # torch: only where a run is set up

    return model_input_multiple(cfg.model)


def resolve_crop_size(
    cfg: ExperimentConfig, dataset: SegDataset, ids: Sequence[str], *, multiple: int | None = None
) -> tuple[int, int] | None:
    """``data.crop_size`` as a concrete ``(height, width)``: ``auto`` resolved from the sizes of ``ids``.

    Args:
        cfg: The experiment config.
        dataset: The opened dataset (its headers give the sizes; no pixels are read).
        ids: The training ids.
        multiple: The model's input multiple; None asks :func:`segcore.models.model_input_multiple`.

    Returns:
        The crop, or None when the config trains on whole images.
    """
    crop = cfg.data.crop_size
    if crop != "auto":
        return None if crop is None else (int(crop[0]), int(crop[1]))
    side = auto_crop_side(_short_sides(cfg, dataset, ids), _multiple(cfg) if multiple is None else multiple)
    return side, side


def _auto_weight_terms(cfg: ExperimentConfig) -> list[int]:
    return [k for k, t in enumerate(cfg.loss.terms) if t.name == "weighted_ce" and t.params.get("weights") == "auto"]


def resolve_data_policy(
    cfg: ExperimentConfig, dataset: SegDataset, train_ids: Sequence[str], *, multiple: int | None = None
) -> tuple[ExperimentConfig, DataPolicy]:
    """Replace every ``auto`` of ``cfg`` by the value this run's training split gives; call once per run.

    Resolves ``data.crop_size``, ``data.rare_class_crop.class_weights`` and ``weights`` of ``weighted_ce``
    loss terms. The returned config has no ``auto`` left that the run uses (``rare_class_crop.class_weights``
    stays ``auto`` while its ``p`` is 0), so it is what the run should train with, store in its config and
    checkpoints, and show; a config without ``auto`` comes back equal to ``cfg``. The result depends only on the
    config and the training split, so every DDP rank may call it and get the same answer.

    Args:
        cfg: The experiment config.
        dataset: The opened dataset.
        train_ids: The run's training ids (not validation: the weights must not see it).
        multiple: The model's input multiple; None asks :func:`segcore.models.model_input_multiple`.

    Returns:
        ``(resolved config, the policy record)``.

    Raises:
        DatasetError: an ``auto`` value and no training image.
    """
    if not train_ids:
        raise DatasetError("the run has no training images to choose its crop and class weights from")
    d = cfg.data
    crop_auto = d.crop_size == "auto"
    median = None
    if crop_auto:
        multiple = _multiple(cfg) if multiple is None else multiple
        sides = _short_sides(cfg, dataset, train_ids)
        median = float(np.median(sides))
        side = auto_crop_side(sides, multiple)
        crop: tuple[int, int] | None = (side, side)
        rule = (f"auto: median short side {median:g} px x {CROP_FRACTION:g}, clamped to [{CROP_MIN}, {CROP_MAX}], "
                f"at most the short side, multiple of {multiple} -> {side}x{side}")
    else:
        crop = resolve_crop_size(cfg, dataset, train_ids)
        whole = "none: whole images" + (f" resized to {d.image_size[0]}x{d.image_size[1]}" if d.image_size else "")
        rule = f"fixed: {crop[0]}x{crop[1]}" if crop else whole

    crop_weights_auto = d.rare_class_crop.p > 0 and d.rare_class_crop.class_weights == "auto"
    loss_terms = _auto_weight_terms(cfg)
    shares = weights = None
    if crop_weights_auto or loss_terms:
        shares = pixel_shares(dataset, train_ids).tolist()
        weights = auto_class_weights(shares)

    out = cfg.to_dict()
    out["data"]["crop_size"] = list(crop) if crop else None
    if crop_weights_auto:
        out["data"]["rare_class_crop"]["class_weights"] = weights
    for k in loss_terms:
        out["loss"]["terms"][k]["params"]["weights"] = weights
    resolved = ExperimentConfig.model_validate(out)
    rc = resolved.data.rare_class_crop
    policy = DataPolicy(
        crop_size=crop,
        crop_auto=crop_auto,
        crop_rule=rule,
        median_short_side=median,
        num_train_images=len(train_ids),
        class_shares=shares,
        rare_crop_weights=rc.class_weights if rc.p > 0 and isinstance(rc.class_weights, list) else None,
        loss_weights=weights if loss_terms else None,
    )
    return resolved, policy


def require_resolved(cfg: ExperimentConfig) -> None:
    """Raise :class:`ConfigError` when ``cfg`` still holds an ``auto`` that only a run can resolve."""
    left = []
    if cfg.data.crop_size == "auto":
        left.append("data.crop_size")
    if cfg.data.rare_class_crop.p > 0 and cfg.data.rare_class_crop.class_weights == "auto":
        left.append("data.rare_class_crop.class_weights")
    if _auto_weight_terms(cfg):
        left.append("loss weighted_ce weights")
    if left:
        raise ConfigError(
            f"{', '.join(left)} {'is' if len(left) == 1 else 'are'} 'auto', which is chosen once per run from the "
            "training split: call segcore.data.policy.resolve_data_policy(cfg, dataset, train_ids) and use the "
            "config it returns"
        )
