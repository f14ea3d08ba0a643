"""This machine's cache of pretrained encoder weights: what it holds, and filling it.

The cache is a folder (setting ``weights_dir``, default ``<artifact root>/weights``) that workers
read before downloading ``encoder_weights: imagenet`` (see :mod:`segcore.weights` and
``docs/weights.md``). It is a machine-level file store like the dataset root, not a database
object: these functions take the settings, not a session, and write no audit event.

Example:
    >>> import_weights(settings=settings, file="resnet18.pth", encoder="resnet18")  # doctest: +SKIP
    >>> [w.encoder for w in list_cached_weights(settings=settings)]  # doctest: +SKIP
    ['resnet18']
"""

from __future__ import annotations

from pathlib import Path

from worker.errors import InvalidInput
from worker.schemas import CachedWeightsRead
from worker.settings import Settings

__all__ = ["list_cached_weights", "cached_encoders", "import_weights"]


def list_cached_weights(*, settings: Settings) -> list[CachedWeightsRead]:
    """Every cached weights file, sorted by encoder and weights tag."""
    from segcore.weights import WeightsCache

    cache = WeightsCache(settings.weights_path, offline=settings.weights_offline)
    return [
        CachedWeightsRead(encoder=e.encoder, weights=e.weights, path=str(e.path), size_bytes=e.size_bytes)
        for e in cache.entries()
    ]


def cached_encoders(*, settings: Settings, weights: str = "imagenet") -> list[str]:
    """The encoders with cached ``weights`` (e.g. for the New experiment form), sorted."""
    return sorted({w.encoder for w in list_cached_weights(settings=settings) if w.weights == weights})


def import_weights(
    *, settings: Settings, file: str | Path, encoder: str, weights: str = "imagenet", in_channels: int = 3
) -> CachedWeightsRead:
    """Copy a state-dict file into the cache after checking it loads into ``encoder`` (keys and shapes).

    Args:
        settings: Decide the cache folder.
        file: A ``.safetensors`` file or a ``torch.save``'d state dict (``.pth``/``.pt``).
        encoder: The smp encoder name, or ``tu-<timm model>``.
        weights: The tag configs name in ``model.encoder_weights``.
        in_channels: Input channels the weights were trained with.

    Returns:
        The cached file.

    Raises:
        InvalidInput: the file is missing, unreadable or does not fit the encoder; the encoder name is unknown.
    """
    from segcore.errors import CheckpointError, ConfigError
    from segcore.weights import WeightsCache, import_weights as _import

    cache = WeightsCache(settings.weights_path, offline=settings.weights_offline)
    try:
        path = _import(file, cache=cache, encoder=encoder, weights=weights, in_channels=in_channels)
    except (CheckpointError, ConfigError) as exc:
        raise InvalidInput(str(exc)) from exc
    return CachedWeightsRead(encoder=encoder, weights=weights, path=str(path), size_bytes=path.stat().st_size)
