"""Bounds on what one experiment config may ask for, so that a typo cannot queue a run that overflows a
database integer or allocates without limit. Torch-free: the config models and the forms read them.

Every bound is listed in docs/config.md ("Bounds"); :mod:`segcore.config` applies them to its fields,
the service layer to what a submission expands into (folds, seeds, grid values, runs).

Example:
    >>> check_side(100_000)
    Traceback (most recent call last):
    ...
    ValueError: sides must be at most 8192 px, got 100000
"""

from __future__ import annotations

import math
from typing import Any, Final

__all__ = [
    "MAX_IMAGE_SIDE",
    "MIN_IMAGE_SIDE",
    "MAX_EPOCHS",
    "MAX_BATCH_SIZE",
    "MAX_ACCUMULATE",
    "MAX_STEPS_PER_EPOCH",
    "MAX_IN_CHANNELS",
    "MAX_CLASSES",
    "MAX_NAME_CHARS",
    "MAX_NOTE_CHARS",
    "MAX_TAGS",
    "MAX_TAG_CHARS",
    "MAX_PATH_CHARS",
    "MAX_SEED",
    "MAX_FOLDS",
    "MAX_SEEDS",
    "MAX_GRID_VALUES",
    "MAX_RUNS_PER_EXPERIMENT",
    "MAX_DEVICES",
    "MAX_PIXEL_VALUE",
    "MAX_PARAM_ITEMS",
    "MAX_PARAM_DEPTH",
    "MAX_PARAM_NUMBER",
    "MAX_PARAM_TEXT",
    "MAX_PSEUDO_DATASETS",
    "MAX_COPY_PASTE_OBJECTS",
    "MAX_COPY_PASTE_BANK",
    "MAX_TRANSFORMS",
    "MAX_LOSS_TERMS",
    "check_side",
    "check_path_text",
    "check_params",
]

MAX_IMAGE_SIDE: Final = 8192
"""Largest side (px) of ``data.image_size``, ``data.crop_size`` and crop transforms."""
MIN_IMAGE_SIDE: Final = 32
"""Smallest side: one stride of the encoders' deepest feature map."""
MAX_EPOCHS: Final = 10_000
MAX_BATCH_SIZE: Final = 4096
MAX_ACCUMULATE: Final = 1024
MAX_STEPS_PER_EPOCH: Final = 1_000_000
MAX_IN_CHANNELS: Final = 64
MAX_CLASSES: Final = 255
"""Multiclass labels are uint8 with one value (usually 255) kept for ``ignore_index``."""
MAX_NAME_CHARS: Final = 200
MAX_NOTE_CHARS: Final = 10_000
MAX_TAGS: Final = 50
MAX_TAG_CHARS: Final = 100
MAX_PATH_CHARS: Final = 4096
MAX_SEED: Final = 2**31 - 1
"""Seeds are stored in 32-bit database integers and fed to numpy, which refuses negative ones."""
MAX_FOLDS: Final = 20
MAX_SEEDS: Final = 100
MAX_GRID_VALUES: Final = 64
MAX_RUNS_PER_EXPERIMENT: Final = 256
MAX_DEVICES: Final = 64
MAX_PIXEL_VALUE: Final = 65_535
"""Mask pixel values (16-bit index masks at most)."""
MAX_PARAM_ITEMS: Final = 256
"""Entries of one free-form ``params`` mapping or list (model, loss and transform params)."""
MAX_PARAM_DEPTH: Final = 4
MAX_PARAM_NUMBER: Final = 1e6
MAX_PARAM_TEXT: Final = 200
MAX_PSEUDO_DATASETS: Final = 16
MAX_COPY_PASTE_OBJECTS: Final = 64
MAX_COPY_PASTE_BANK: Final = 10_000
MAX_TRANSFORMS: Final = 32
MAX_LOSS_TERMS: Final = 8


def check_side(side: int) -> int:
    """One side of an image or crop size, checked against the bounds.

    Raises:
        ValueError: outside ``MIN_IMAGE_SIDE..MAX_IMAGE_SIDE``.
    """
    if side > MAX_IMAGE_SIDE:
        raise ValueError(f"sides must be at most {MAX_IMAGE_SIDE} px, got {side}")
    if side < MIN_IMAGE_SIDE:
        raise ValueError(f"sides must be at least {MIN_IMAGE_SIDE} px, got {side}")
    return side


def check_path_text(value: str) -> str:
    """A path or URL typed into a config: no control characters (NUL included), at most ``MAX_PATH_CHARS``.

    Where a path may point is checked by the service layer, which knows the allowed folders.

    Raises:
        ValueError: the text is empty, too long or holds control characters.
    """
    if not value.strip():
        raise ValueError("a path must not be empty")
    if len(value) > MAX_PATH_CHARS:
        raise ValueError(f"a path must be at most {MAX_PATH_CHARS} characters, got {len(value)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("a path must not contain control characters (such as NUL or a line break)")
    return value


def check_params(value: Any, *, where: str = "params", depth: int = 0) -> Any:
    """Free-form ``params`` (model, loss, transform): JSON-like values of bounded size.

    Mappings and lists hold at most ``MAX_PARAM_ITEMS`` entries, nest at most ``MAX_PARAM_DEPTH``
    deep; numbers are finite and at most ``MAX_PARAM_NUMBER`` in size; text at most ``MAX_PARAM_TEXT``
    characters.

    Raises:
        ValueError: naming the first entry out of bounds.
    """
    if depth > MAX_PARAM_DEPTH:
        raise ValueError(f"{where} nests deeper than {MAX_PARAM_DEPTH} levels; use flat values")
    if isinstance(value, dict):
        if len(value) > MAX_PARAM_ITEMS:
            raise ValueError(f"{where} has {len(value)} entries, more than {MAX_PARAM_ITEMS}")
        for key, item in value.items():
            if not isinstance(key, str) or len(key) > MAX_PARAM_TEXT:
                raise ValueError(f"{where} keys must be names of at most {MAX_PARAM_TEXT} characters")
            check_params(item, where=f"{where}.{key}", depth=depth + 1)
        return value
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_PARAM_ITEMS:
            raise ValueError(f"{where} has {len(value)} items, more than {MAX_PARAM_ITEMS}")
        for k, item in enumerate(value):
            check_params(item, where=f"{where}[{k}]", depth=depth + 1)
        return value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where} must be a finite number, got {value}")
        if abs(value) > MAX_PARAM_NUMBER:
            raise ValueError(f"{where} must be at most {MAX_PARAM_NUMBER:g} in size, got {float(value):.3g}")
        return value
    if isinstance(value, str):
        if len(value) > MAX_PARAM_TEXT:
            raise ValueError(f"{where} text must be at most {MAX_PARAM_TEXT} characters, got {len(value)}")
        return value
    raise ValueError(f"{where} must hold numbers, text, true/false, lists or mappings, got {type(value).__name__}")
