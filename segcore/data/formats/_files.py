"""Image files on disk: listing them, decoding pixels and headers, rasterising polygons."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from segcore.errors import DatasetError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def list_images(folder: Path) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """Image files directly in ``folder`` by stem, and the stems that occur more than once.

    Returns:
        ``(by_stem, duplicates)``: for a duplicated stem ``by_stem`` keeps the first name in sort order.
    """
    by_stem: dict[str, Path] = {}
    duplicates: dict[str, list[Path]] = {}
    if not folder.is_dir():
        return by_stem, duplicates
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file() or path.name.startswith("."):
            continue
        if path.stem in by_stem:
            duplicates.setdefault(path.stem, [by_stem[path.stem]]).append(path)
        else:
            by_stem[path.stem] = path
    return by_stem, duplicates


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """High bit depth grey to uint8 with one fixed scale per dtype, so every image gets the same mapping."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        # float images are taken as 0..1 intensities
        return (np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    # 16-bit and 32-bit integer images (PIL "I;16", "I") hold 16-bit intensities
    return (np.clip(arr.astype(np.float32), 0, 65535) / 257.0).round().astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to ``HxWx3`` uint8 RGB; grey is replicated, alpha dropped, 16-bit scaled.

    Raises:
        DatasetError: when the file is missing, empty or cannot be decoded.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "RGB":
                arr = np.asarray(im)
            elif im.mode.startswith(("I", "F")):  # I;16, I;16B, I, F: high bit depth grey
                arr = _to_uint8(np.asarray(im))
            else:  # L, P, RGBA, LA, CMYK, 1, ...: PIL knows how to make RGB
                arr = np.asarray(im.convert("RGB"))
    except FileNotFoundError as exc:
        raise DatasetError(f"image file {path} does not exist; check the dataset folder") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(
            f"cannot decode image {path} ({exc}); the file is empty, truncated or not an image: "
            "replace it or remove it from the dataset"
        ) from exc
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] > 3:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def read_image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` read from the file header only.

    Raises:
        DatasetError: when the file is missing or its header cannot be read.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError as exc:
        raise DatasetError(f"image file {path} does not exist; check the dataset folder") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(
            f"cannot read the header of image {path} ({exc}); the file is empty or not an image"
        ) from exc
    return h, w


def rasterize_polygons(polygons: Iterable[Sequence[Sequence[float]]], height: int, width: int) -> np.ndarray:
    """Fill polygons (each a list of ``[x, y]`` points in pixel units) into an ``HxW`` uint8 {0,1} mask.

    Pixel ``(row r, col c)`` covers ``[c, c+1) x [r, r+1)``; PIL fills the polygon outline inclusively.
    """
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        pts = [(float(x), float(y)) for x, y in poly]
        if len(pts) >= 3:
            draw.polygon(pts, fill=1, outline=1)
        elif len(pts) == 2:
            draw.line(pts, fill=1)
        elif len(pts) == 1:
            draw.point(pts, fill=1)
    return np.asarray(canvas, dtype=np.uint8)


def sha_file(h: Any, path: Path) -> None:
    """Feed the bytes of ``path`` into the hash ``h``, 1 MiB at a time."""
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
