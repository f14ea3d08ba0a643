"""How one probability-store entry is encoded: its file name, stored grid, quantisation and npz bytes."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile

import numpy as np

ARRAY_KEY = "probs"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}$")


def entry_file(image_id: str) -> str:
    """A file name for an image id: the id itself when it is file-safe, else a sanitised id + hash."""
    if _SAFE_ID.match(image_id) and not image_id.endswith("."):
        return f"{image_id}.npz"
    digest = hashlib.sha1(image_id.encode("utf-8")).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id)[:80].strip("._") or "id"
    return f"{stem}-{digest}.npz"


def stored_shape(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """The grid an image of ``height x width`` is stored at: full size, or longest side ``max_side``."""
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_chw(arr: np.ndarray, shape: tuple[int, int], *, area: bool) -> np.ndarray:
    """Resize a C x H x W float32 array to ``shape`` (area averaging down, bilinear up)."""
    import cv2

    h, w = shape
    if arr.shape[1:] == (h, w):
        return arr
    interp = cv2.INTER_AREA if area else cv2.INTER_LINEAR
    out = np.empty((arr.shape[0], h, w), dtype=np.float32)
    # cv2 handles at most 512 channels per call; 4 keeps each call on its fast SIMD path.
    for c0 in range(0, arr.shape[0], 4):
        chunk = np.ascontiguousarray(arr[c0 : c0 + 4].transpose(1, 2, 0))
        res = cv2.resize(chunk, (w, h), interpolation=interp)
        out[c0 : c0 + 4] = res.reshape(h, w, -1).transpose(2, 0, 1)
    return out


def quantize(probs: np.ndarray, dtype: str) -> np.ndarray:
    """Probabilities in [0, 1] as the stored dtype: uint8 codes (x 255, rounded) or float16."""
    if dtype == "uint8":
        return np.rint(np.clip(probs, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.clip(probs, 0.0, 1.0).astype(np.float16)


def dequantize(arr: np.ndarray) -> np.ndarray:
    """A stored array back to float32 probabilities."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) * np.float32(1.0 / 255.0)
    return arr.astype(np.float32)


def encode_entry(arr: np.ndarray, compresslevel: int) -> bytes:
    """An ``.npz`` (zip, deflate) holding ``probs``; readable by ``np.load``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compresslevel) as zf:
        with zf.open(f"{ARRAY_KEY}.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()
