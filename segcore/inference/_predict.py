"""Per-pixel class probabilities from a model: padding, TTA, sliding windows, batching, precision.

Each image is normalised, optionally resized to a fixed input size, padded (reflect) to a
multiple of the model's output stride, predicted under every TTA view (the views of several
images go through the model together, ``batch_size`` views per forward pass), un-augmented
exactly, cropped back and merged. Large images go through :class:`SlidingWindow` tiles whose
probabilities are blended into a full-size accumulator.

Example:
    >>> model = smp.Unet("resnet18", encoder_weights=None, classes=3)  # doctest: +SKIP
    >>> probs = predict(model, [image], task="multiclass", tta=TTAPolicy.flip())  # doctest: +SKIP
    >>> probs[0].shape  # 3 x H x W, sums to 1 over classes  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segcore._allocator import retained_heap
from segcore.errors import CheckpointError, ConfigError
from segcore.inference._engine import IMAGENET_MEAN, IMAGENET_STD, Engine, Normalize, eval_mode, resolve_normalization
from segcore.inference.store import ProbabilityStore, StoreReader
from segcore.inference.tta import TTAPolicy
from segcore.inference.window import SlidingWindow

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "predict",
    "iter_predict",
    "predict_checkpoint",
    "predict_to_store",
    "resolve_normalization",
]

def iter_predict(
    model: nn.Module,
    images: Iterable[np.ndarray],
    *,
    task: str = "multiclass",
    normalize: Normalize = "imagenet",
    tta: TTAPolicy | dict[str, Any] | None = None,
    window: SlidingWindow | dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    precision: Any = "fp32",
    size_multiple: int | None = None,
    input_size: tuple[int, int] | None = None,
    channels_last: bool = False,
    fuse_batchnorm: bool = False,
) -> Iterator[np.ndarray]:
    """Like :func:`predict`, yielding each image's probabilities in input order as it is done.

    Consecutive images of the same size are predicted together (up to ``batch_size`` views per
    forward pass), so memory stays bounded by one batch whatever the number of images.
    """
    eng = Engine(
        model,
        task=task,
        normalize=normalize,
        tta=tta,
        window=window,
        device=device,
        batch_size=batch_size,
        precision=precision,
        size_multiple=size_multiple,
        input_size=input_size,
        channels_last=channels_last,
        fuse_batchnorm=fuse_batchnorm,
    )
    per_batch = max(1, batch_size // len(eng.views))
    with eval_mode(eng.model, eng.device, channels_last):
        pending: list[np.ndarray] = []
        for image in images:
            image = np.asarray(image)
            if eng.window is not None:
                yield eng.predict_windowed(image)
                continue
            if pending and (len(pending) >= per_batch or pending[0].shape != image.shape):
                yield from eng.predict_batch(pending)
                pending = []
            pending.append(image)
        if pending:
            yield from eng.predict_batch(pending)


def predict(
    model: nn.Module,
    images: Sequence[np.ndarray] | np.ndarray,
    *,
    task: str = "multiclass",
    normalize: Normalize = "imagenet",
    tta: TTAPolicy | dict[str, Any] | None = None,
    window: SlidingWindow | dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    precision: Any = "fp32",
    size_multiple: int | None = None,
    input_size: tuple[int, int] | None = None,
    channels_last: bool = False,
    fuse_batchnorm: bool = False,
) -> list[np.ndarray] | np.ndarray:
    """Per-pixel class probabilities at each image's original resolution.

    Args:
        model: maps N x C x H x W to N x K x H x W logits (H, W multiples of ``size_multiple``).
            It is put in eval mode and on ``device`` for the call (its training flag is restored).
        images: one H x W x C (or H x W) image, an N x H x W x C array, or a sequence of images
            of any sizes; integer images are divided by their dtype's maximum (255 for uint8,
            65535 for uint16), float images are taken as already in [0, 1].
        task: ``multiclass`` (softmax over K) or ``multilabel`` (sigmoid per class).
        normalize: ``'imagenet'``, ``'unit'`` (mean 0, std 1 after /255) or ``(mean, std)``.
        tta: a :class:`TTAPolicy` (or its dict); None predicts the plain view only.
        window: a :class:`SlidingWindow` for images larger than the training size; None predicts
            each image whole.
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ...
        batch_size: views per forward pass (TTA views and windows count one each).
        precision: ``fp32``, ``bf16`` (autocast), ``fp16`` (CUDA) or ``auto``: bf16 on CUDA with bf16
            support (else fp16), bf16 on CPUs with AVX512-BF16 or AMX, fp32 otherwise. bf16
            moves probabilities by about 0.01 (see ``docs/inference.md``).
        size_multiple: inputs are padded (reflect) to a multiple of this and cropped back;
            None uses ``model.encoder.output_stride`` when present, else 32.
        input_size: (height, width) to resize every image to before predicting (the model's
            training size); probabilities are resized back bilinearly. None keeps sizes.
        channels_last: run the model in channels-last memory format (converts the model's
            parameters in place; faster on CPU with oneDNN, see ``docs/inference.md``).
        fuse_batchnorm: predict with a copy of the model whose BatchNorm layers are folded
            into the convolutions (torch.fx); the model itself is used when it cannot be traced.

    Returns:
        A K x H x W float32 array per image (a list for a sequence or N x H x W x C input; one
        array for a single H x W x C image).

    Raises:
        ConfigError: invalid settings.
    """
    single = isinstance(images, np.ndarray) and images.ndim in (2, 3)
    seq = [images] if single and isinstance(images, np.ndarray) else list(images)
    with retained_heap():
        out = list(
            iter_predict(
                model,
                seq,
                task=task,
                normalize=normalize,
                tta=tta,
                window=window,
                device=device,
                batch_size=batch_size,
                precision=precision,
                size_multiple=size_multiple,
                input_size=input_size,
                channels_last=channels_last,
                fuse_batchnorm=fuse_batchnorm,
            )
        )
    return out[0] if single else out


def _load_checkpoint(checkpoint_dir: str | Path, device: str | torch.device) -> Any:
    from segcore.checkpoint import load_checkpoint

    try:
        return load_checkpoint(checkpoint_dir, device=device)
    except CheckpointError:
        raise
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the checkpoint {checkpoint_dir}: {exc}") from exc


def _checkpoint_settings(ckpt: Any) -> dict[str, Any]:
    cfg = ckpt.config
    return {
        "task": cfg.data.task.value,
        "normalize": cfg.augmentation.normalize,
        "input_size": tuple(cfg.data.image_size) if cfg.data.image_size else None,
    }


def predict_checkpoint(
    checkpoint_dir: str | Path,
    images: Sequence[np.ndarray] | np.ndarray,
    *,
    tta: TTAPolicy | dict[str, Any] | None = None,
    window: SlidingWindow | dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    precision: Any = "auto",
    **kwargs: Any,
) -> list[np.ndarray] | np.ndarray:
    """:func:`predict` with a checkpoint folder's model and its config's task, normalisation and
    input size (``cfg.data.image_size``; a window, when given, then tiles the resized image).

    Raises:
        CheckpointError: the checkpoint cannot be loaded.
    """
    ckpt = _load_checkpoint(checkpoint_dir, device)
    settings = {**_checkpoint_settings(ckpt), **kwargs}
    return predict(
        ckpt.model, images, tta=tta, window=window, device=device, batch_size=batch_size,
        precision=precision, **settings,
    )


def predict_to_store(
    model_or_checkpoint: nn.Module | str | Path,
    load_image: Callable[[str], np.ndarray],
    ids: Iterable[str],
    out_path: str | Path,
    *,
    classes: Sequence[str] | None = None,
    task: str | None = None,
    normalize: Normalize | None = None,
    tta: TTAPolicy | dict[str, Any] | None = None,
    window: SlidingWindow | dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    precision: Any = "auto",
    dtype: str = "uint8",
    max_side: int | None = None,
    meta: dict[str, Any] | None = None,
    source: str | None = None,
    overwrite: bool = False,
    **kwargs: Any,
) -> StoreReader:
    """Predict images one by one (batched by size) straight into a probability store.

    Args:
        model_or_checkpoint: a model, or a checkpoint folder (its config gives classes, task,
            normalisation and input size, and its path the default ``source``).
        load_image: image id -> H x W x C image.
        ids: the images to predict, in store order.
        out_path: the store to create (visible only once every image is written).
        classes, task, normalize: required with a bare model (normalize defaults to imagenet).
        tta, window, device, batch_size, precision, **kwargs: as for :func:`predict`.
        dtype, max_side, meta, source, overwrite: as for :meth:`ProbabilityStore.create`.

    Returns:
        The reader of the new store.

    Raises:
        ConfigError: a bare model without classes/task. StoreError: the store cannot be written.
    """
    settings: dict[str, Any] = {}
    if isinstance(model_or_checkpoint, (str, Path)):
        ckpt = _load_checkpoint(model_or_checkpoint, device)
        model = ckpt.model
        settings = _checkpoint_settings(ckpt)
        classes = classes or list(ckpt.config.data.classes)
        source = source or str(model_or_checkpoint)
    else:
        model = model_or_checkpoint
        if classes is None or task is None:
            raise ConfigError("predict_to_store with a model needs classes=[...] and task=...; or pass a checkpoint")
        settings = {"task": getattr(task, "value", task), "normalize": normalize or "imagenet"}
    if task is not None:
        settings["task"] = getattr(task, "value", task)
    if normalize is not None:
        settings["normalize"] = normalize
    settings.update(kwargs)
    policy = TTAPolicy.model_validate(tta) if isinstance(tta, dict) else tta
    ids = list(ids)
    images = (load_image(i) for i in ids)
    with retained_heap(), ProbabilityStore.create(
        out_path, classes=classes, task=settings["task"], dtype=dtype, max_side=max_side, meta=meta or {},
        tta=policy, source=source, overwrite=overwrite,
    ) as writer:
        preds = iter_predict(
            model, images, tta=policy, window=window, device=device, batch_size=batch_size,
            precision=precision, **settings,
        )
        for image_id, probs in zip(ids, preds):
            writer.write(image_id, probs)
    return ProbabilityStore.open(out_path)
