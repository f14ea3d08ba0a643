"""A local cache of pretrained encoder weights, read before anything is downloaded.

GPU machines are often offline, where ``encoder_weights: imagenet`` cannot download. A cache folder
holds one state-dict file per encoder and weights tag, under a fixed name::

    <cache>/<encoder>/<weights>.safetensors     (or .pth: a torch.save'd state dict)

e.g. ``<cache>/resnet18/imagenet.safetensors`` or ``<cache>/tu-convnext_atto/imagenet.pth``.
:func:`segcore.models.build_model` reads the cached file when there is one, downloads otherwise,
and with ``offline=True`` never downloads. :func:`import_weights` fills the cache after checking
that the file loads into the encoder (every key and shape), atomically. segcore reads no settings:
the caller says where the cache is (the SegBoard worker passes its ``weights_dir`` setting).

Example:
    >>> cache = WeightsCache(Path("/data/weights"), offline=True)
    >>> import_weights("resnet18.pth", cache=cache, encoder="resnet18")  # doctest: +SKIP
    PosixPath('/data/weights/resnet18/imagenet.safetensors')
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segcore.errors import ConfigError

__all__ = ["WeightsCache", "CachedWeights", "SUFFIXES", "import_weights", "encoder_for_check"]

#: File endings a cached weights file may have, in the order they are looked for.
SUFFIXES = (".safetensors", ".pth")

_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def _checked_part(value: str, what: str) -> str:
    if not _PART.match(value) or ".." in value or len(value) > 200:
        raise ConfigError(
            f"{what} {value!r} cannot name a cache file: use letters, digits and _ . + - (e.g. 'resnet18', 'imagenet')"
        )
    return value


@dataclass(frozen=True)
class CachedWeights:
    """One file in the cache."""

    encoder: str
    weights: str
    path: Path
    size_bytes: int


@dataclass(frozen=True)
class WeightsCache:
    """Where cached encoder weights live, and whether downloading is allowed.

    Attributes:
        root: The cache folder; None for no cache.
        offline: Never download: a missing cached file is an error.
    """

    root: Path | None = None
    offline: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (passed to the other ranks of a multi-device run)."""
        return {"root": None if self.root is None else str(self.root), "offline": self.offline}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> WeightsCache:
        data = data or {}
        root = data.get("root")
        return cls(None if root is None else Path(root), bool(data.get("offline", False)))

    def path_for(self, encoder: str, weights: str, suffix: str = ".safetensors") -> Path | None:
        """The documented file name for ``encoder``/``weights`` (None without a cache folder)."""
        if self.root is None:
            return None
        return self.root / _checked_part(encoder, "encoder") / f"{_checked_part(weights, 'weights tag')}{suffix}"

    def find(self, encoder: str, weights: str) -> Path | None:
        """The cached file for ``encoder``/``weights``, or None."""
        for suffix in SUFFIXES:
            path = self.path_for(encoder, weights, suffix)
            if path is not None and path.is_file():
                return path
        return None

    def entries(self) -> list[CachedWeights]:
        """Every cached file, sorted by encoder and weights tag."""
        if self.root is None or not self.root.is_dir():
            return []
        out = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and _PART.match(p.name)):
            for f in sorted(folder.iterdir()):
                if f.is_file() and f.suffix in SUFFIXES and _PART.match(f.stem):
                    out.append(CachedWeights(folder.name, f.stem, f, f.stat().st_size))
        return out

    def missing(self, encoder: str, weights: str, reason: str) -> ConfigError:
        """The error for weights that are neither cached nor downloadable, naming the file and the fix."""
        expected = self.path_for(encoder, weights)
        where = (
            f"expected the file {expected} (or the same name ending in .pth)"
            if expected is not None else "no weights cache folder is set (the worker's weights_dir setting)"
        )
        return ConfigError(
            f"no cached {weights!r} weights for encoder {encoder!r}, and {reason}; {where}. Save the encoder's "
            f"state dict on a machine with internet, copy it here and run: segboard weights import FILE "
            f"--encoder {encoder} --weights {weights} (see docs/weights.md); or point model.encoder_weights_path "
            "at a local file, or set model.encoder_weights to null"
        )


def encoder_for_check(encoder: str, in_channels: int = 3) -> Any:
    """A randomly initialised encoder ``encoder`` (no download), held as ``.encoder`` of a module.

    Raises:
        ConfigError: ``encoder`` is not an smp encoder or a ``tu-`` timm model.
    """
    import segmentation_models_pytorch as smp
    from torch import nn

    from segcore.models import check_encoder_name

    check_encoder_name(encoder)
    holder = nn.Module()
    holder.add_module("encoder", smp.encoders.get_encoder(encoder, in_channels=in_channels, weights=None))
    return holder


def import_weights(
    file: str | Path, *, cache: WeightsCache, encoder: str, weights: str = "imagenet", in_channels: int = 3
) -> Path:
    """Copy a state-dict file into the cache, after checking that it loads into ``encoder``.

    The copy is checked (every key and shape, like :func:`segcore.models.load_encoder_weights`) before
    it is renamed into place, so the cache never holds a file that does not fit.

    Args:
        file: A ``.safetensors`` file or a ``torch.save``'d state dict (``.pth``/``.pt``), keyed like
            the encoder, like a whole smp model (``encoder.`` prefix) or like the bare timm model.
        cache: The cache (its ``root`` must be set).
        encoder: The smp encoder name, or ``tu-<timm model>``.
        weights: The weights tag configs name in ``model.encoder_weights``.
        in_channels: Input channels the weights were trained with.

    Returns:
        The cached file's path.

    Raises:
        ConfigError: no cache folder, a bad name, or a missing file.
        CheckpointError: the file is unreadable or does not fit the encoder.
    """
    from segcore.io import atomic_path
    from segcore.models import load_encoder_weights

    src = Path(file)
    if not src.is_file():
        raise ConfigError(f"weights file {src} does not exist; pass the path of a .safetensors or .pth state dict")
    suffix = ".safetensors" if src.suffix == ".safetensors" else ".pth"
    dest = cache.path_for(encoder, weights, suffix)
    if dest is None:
        raise ConfigError("no weights cache folder is set; set the weights_dir setting (docs/weights.md)")
    holder = encoder_for_check(encoder, in_channels)
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
        # the name decides how it is read (safetensors or torch.load); check the copy, not the source
        probe = tmp.with_name(tmp.name + suffix)
        tmp.rename(probe)
        try:
            load_encoder_weights(holder, probe)
        finally:
            probe.rename(tmp)
    for other in SUFFIXES:  # one file per encoder and tag
        if other != suffix:
            twin = cache.path_for(encoder, weights, other)
            if twin is not None:
                twin.unlink(missing_ok=True)
    return dest
