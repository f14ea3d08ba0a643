"""The probability store: per-pixel class probabilities on disk, one compressed entry per image.

Layout (see ``docs/probability-store.md``)::

    <store>/
      manifest.json          classes, task, dtype, resolution, entries (id, file, size, checksum), meta
      entries/<name>.npz     one zip (deflate) per image holding the array ``probs``: C x h x w

A store is written into a hidden temp folder next to its final path and renamed into place when
the writer closes without error, so a reader never sees a half-written store. Entries are
written as they come (memory bounded by one image); reading one image opens only its file.

Example:
    >>> with ProbabilityStore.create(path, classes=["bg", "cat"], task="multiclass") as w:  # doctest: +SKIP
    ...     w.write("img_001", probs)          # float32, C x H x W in [0, 1]
    >>> store = ProbabilityStore.open(path)     # doctest: +SKIP
    >>> store.read("img_001").shape             # doctest: +SKIP
    (2, 512, 512)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from segcore.errors import StoreError
from segcore.inference._store_entry import (
    ARRAY_KEY,
    dequantize,
    encode_entry,
    entry_file,
    quantize,
    resize_chw,
    stored_shape,
)
from segcore.io import atomic_dir, atomic_write_text

__all__ = [
    "STORE_FORMAT",
    "STORE_VERSION",
    "ProbabilityStore",
    "StoreReader",
    "StoreWriter",
    "labels_from_probs",
]

STORE_FORMAT = "segcore.probability_store"
STORE_VERSION = 1
_MANIFEST = "manifest.json"
_ENTRIES = "entries"
_DTYPES = ("uint8", "float16")
_TASKS = ("multiclass", "multilabel")


def labels_from_probs(
    probs: np.ndarray, task: str, threshold: float | Sequence[float] = 0.5
) -> np.ndarray:
    """Decode probabilities into labels.

    Args:
        probs: C x H x W probabilities.
        task: ``multiclass`` (argmax; ties go to the lowest class index) or ``multilabel``.
        threshold: multilabel only: a pixel is in class c when ``probs[c] >= threshold[c]``.

    Returns:
        multiclass: H x W uint8 (uint16 beyond 256 classes) class indices;
        multilabel: C x H x W uint8 in {0, 1}.
    """
    if task == "multiclass":
        dtype = np.uint8 if probs.shape[0] <= 256 else np.uint16
        return probs.argmax(axis=0).astype(dtype)
    thr = np.asarray(threshold, dtype=np.float32)
    if thr.ndim == 1:
        if thr.shape[0] != probs.shape[0]:
            raise StoreError(
                f"{thr.shape[0]} thresholds for {probs.shape[0]} classes: give one per class or a single float"
            )
        thr = thr[:, None, None]
    return (probs >= thr).astype(np.uint8)


class StoreWriter:
    """Writes a store image by image; the store appears at its path only after :meth:`close`.

    Create with :meth:`ProbabilityStore.create`; use as a context manager (an exception inside
    the ``with`` block discards everything written).
    """

    def __init__(
        self,
        path: Path,
        *,
        classes: Sequence[str],
        task: str,
        dtype: str,
        max_side: int | None,
        meta: Mapping[str, Any],
        tta: Mapping[str, Any] | None,
        source: str | None,
        overwrite: bool,
        compresslevel: int,
    ) -> None:
        self.path = path
        self.classes = list(classes)
        self.task = task
        self.dtype = dtype
        self.max_side = max_side
        self.meta = dict(meta)
        self.tta = dict(tta) if tta is not None else None
        self.source = source
        self._compresslevel = compresslevel
        self._entries: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        self._files: set[str] = set()
        self._stack = contextlib.ExitStack()
        self._tmp: Path = self._stack.enter_context(atomic_dir(path, overwrite=overwrite))
        (self._tmp / _ENTRIES).mkdir()
        self._closed = False

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __len__(self) -> int:
        return len(self._entries)

    def write(self, image_id: str, probs: np.ndarray) -> None:
        """Quantize, compress and write one image's probabilities.

        Args:
            image_id: a unique id (the image's file stem).
            probs: C x H x W float probabilities in [0, 1] at the image's original resolution.

        Raises:
            StoreError: a duplicate id, a wrong class count, a non-finite or out-of-range value.
        """
        if self._closed:
            raise StoreError(f"the writer of {self.path} is closed; create a new store to write more")
        if not isinstance(image_id, str) or not image_id:
            raise StoreError(f"image ids must be non-empty strings, got {image_id!r}")
        if image_id in self._ids:
            raise StoreError(f"image id {image_id!r} is written twice to {self.path}; ids must be unique")
        probs = np.asarray(probs)
        if probs.ndim != 3 or probs.shape[0] != len(self.classes):
            raise StoreError(
                f"entry {image_id!r}: expected probabilities of shape (C={len(self.classes)}, H, W), "
                f"got {probs.shape}"
            )
        if probs.shape[1] == 0 or probs.shape[2] == 0:
            raise StoreError(f"entry {image_id!r}: empty image of shape {probs.shape}")
        probs = probs.astype(np.float32, copy=False)
        lo, hi = float(probs.min()), float(probs.max())
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -1e-3 or hi > 1 + 1e-3:
            raise StoreError(
                f"entry {image_id!r}: probabilities must be finite and in [0, 1], got range [{lo}, {hi}]; "
                "apply softmax/sigmoid before writing"
            )
        height, width = int(probs.shape[1]), int(probs.shape[2])
        stored = stored_shape(height, width, self.max_side)
        small = resize_chw(probs, stored, area=True)
        data = encode_entry(quantize(small, self.dtype), self._compresslevel)
        name = entry_file(image_id)
        if name in self._files:  # two unsafe ids sanitised to the same stem and hash prefix
            name = f"{Path(name).stem}-{len(self._entries)}.npz"
        (self._tmp / _ENTRIES / name).write_bytes(data)
        self._files.add(name)
        self._ids.add(image_id)
        self._entries.append(
            {
                "id": image_id,
                "file": f"{_ENTRIES}/{name}",
                "height": height,
                "width": width,
                "stored_height": stored[0],
                "stored_width": stored[1],
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
            }
        )

    def close(self) -> None:
        """Write the manifest and move the store into place."""
        if self._closed:
            return
        manifest = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "classes": self.classes,
            "task": self.task,
            "dtype": self.dtype,
            "max_side": self.max_side,
            "tta": self.tta,
            "source": self.source,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "meta": self.meta,
            "entries": self._entries,
        }
        try:
            text = json.dumps(manifest, indent=1)
        except TypeError as exc:
            self.abort()
            raise StoreError(f"store meta for {self.path} must be JSON-serialisable: {exc}") from exc
        atomic_write_text(self._tmp / _MANIFEST, text)
        self._closed = True
        try:
            self._stack.close()
        except FileExistsError as exc:
            raise StoreError(f"{self.path} appeared while writing; pass overwrite=True to replace it") from exc

    def abort(self) -> None:
        """Discard everything written; the path is left as it was."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(_Abort):
            self._stack.__exit__(_Abort, _Abort(), None)


class _Abort(Exception):
    pass


class StoreReader:
    """Reads a store written by :class:`StoreWriter`, one image at a time.

    Attributes:
        path: the store folder.
        ids: image ids in write order.
        classes: class names in index order.
        task: ``multiclass`` or ``multilabel``.
        dtype: ``uint8`` or ``float16`` (the stored quantisation).
        max_side: longest stored side, or None for full resolution.
        meta: free-form metadata given at creation.
        tta: the TTA policy recorded at creation (a dict), or None.
        source: the run / checkpoint id recorded at creation, or None.
        created: ISO-8601 creation time.
    """

    def __init__(self, path: Path, manifest: Mapping[str, Any]) -> None:
        self.path = path
        self._manifest = manifest
        self.classes: list[str] = list(manifest["classes"])
        self.task: str = manifest["task"]
        self.dtype: str = manifest["dtype"]
        self.max_side: int | None = manifest.get("max_side")
        self.meta: dict[str, Any] = dict(manifest.get("meta") or {})
        self.tta: dict[str, Any] | None = manifest.get("tta")
        self.source: str | None = manifest.get("source")
        self.created: str = manifest.get("created", "")
        self._entries: dict[str, Mapping[str, Any]] = {e["id"]: e for e in manifest["entries"]}
        self.ids: list[str] = [e["id"] for e in manifest["entries"]]

    def __repr__(self) -> str:
        return f"StoreReader({str(self.path)!r}, {len(self)} images, {len(self.classes)} classes, {self.task})"

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._entries

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(image_id, probs)`` image by image (C x H x W float32)."""
        for image_id in self.ids:
            yield image_id, self.read(image_id)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._manifest))

    def _entry(self, image_id: str) -> Mapping[str, Any]:
        try:
            return self._entries[image_id]
        except KeyError:
            shown = ", ".join(self.ids[:5]) + (", ..." if len(self.ids) > 5 else "")
            raise StoreError(
                f"image {image_id!r} is not in the probability store {self.path} ({len(self.ids)} images: {shown})"
            ) from None

    def size(self, image_id: str) -> tuple[int, int]:
        """The original (height, width) of an image."""
        e = self._entry(image_id)
        return int(e["height"]), int(e["width"])

    def stored_size(self, image_id: str) -> tuple[int, int]:
        """The (height, width) the image's probabilities are stored at."""
        e = self._entry(image_id)
        return int(e["stored_height"]), int(e["stored_width"])

    def read_stored(self, image_id: str) -> np.ndarray:
        """The stored array as it is on disk: C x h x w, uint8 (0..255 for 0..1) or float16.

        Raises:
            StoreError: the entry is missing, its checksum does not match, or it cannot be decoded.
        """
        e = self._entry(image_id)
        file = self.path / e["file"]
        where = f"entry {image_id!r} ({e['file']}) of the probability store {self.path}"
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise StoreError(f"{where} cannot be read ({exc.strerror}); re-create the store") from exc
        if hashlib.sha256(data).hexdigest() != e["sha256"]:
            raise StoreError(f"{where} is corrupt (checksum mismatch); re-create the store")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arr = npz[ARRAY_KEY]
        except Exception as exc:  # zip and npy decoding raise many types
            raise StoreError(f"{where} cannot be decoded ({exc}); re-create the store") from exc
        expected = (len(self.classes), int(e["stored_height"]), int(e["stored_width"]))
        if arr.shape != expected or arr.dtype != np.dtype(self.dtype):
            raise StoreError(
                f"{where} holds {arr.dtype} {arr.shape}, the manifest says {self.dtype} {expected}; re-create the store"
            )
        return arr

    def read(self, image_id: str, *, resolution: Literal["original", "stored"] = "original") -> np.ndarray:
        """One image's probabilities.

        Args:
            image_id: an id in :attr:`ids`.
            resolution: ``original`` upsamples a reduced grid bilinearly to the image's size;
                ``stored`` returns the stored grid (cheaper, for scoring at low resolution).

        Returns:
            C x H x W float32 in [0, 1].
        """
        probs = dequantize(self.read_stored(image_id))
        if resolution == "original":
            probs = resize_chw(probs, self.size(image_id), area=False)
        return probs

    def read_labels(self, image_id: str, threshold: float | Sequence[float] = 0.5) -> np.ndarray:
        """Decoded labels at the original resolution (see :func:`labels_from_probs`).

        Returns:
            multiclass: H x W class indices; multilabel: C x H x W uint8 in {0, 1}.
        """
        try:
            return labels_from_probs(self.read(image_id), self.task, threshold)
        except StoreError as exc:
            if "thresholds for" in str(exc):
                raise StoreError(f"{exc} (store {self.path})") from exc
            raise

    def verify(self) -> list[str]:
        """Check every entry's checksum and shape; returns the ids of bad entries (empty when sound)."""
        bad = []
        for image_id in self.ids:
            try:
                self.read_stored(image_id)
            except StoreError:
                bad.append(image_id)
        return bad


class ProbabilityStore:
    """Entry points: :meth:`create` a writer, :meth:`open` a reader."""

    @staticmethod
    def create(
        path: str | Path,
        *,
        classes: Sequence[str],
        task: str,
        dtype: str = "uint8",
        max_side: int | None = None,
        meta: Mapping[str, Any] | None = None,
        tta: Any = None,
        source: str | None = None,
        overwrite: bool = False,
        compresslevel: int = 1,
    ) -> StoreWriter:
        """Start writing a store at ``path``.

        Args:
            path: the store folder to create.
            classes: class names in index order.
            task: ``multiclass`` or ``multilabel``.
            dtype: ``uint8`` (default; error <= 1/510) or ``float16``.
            max_side: store images whose longest side exceeds this on a reduced grid (area
                downsampling), upsampled bilinearly on read; None stores full resolution.
            meta: JSON-able metadata kept in the manifest.
            tta: the TTA policy used (a ``TTAPolicy`` or its dict), recorded in the manifest.
            source: the run or checkpoint the predictions came from.
            overwrite: replace an existing store at ``path`` when the new one closes.
            compresslevel: zlib level 0-9; 1 is several times faster than 6 for ~10% more bytes.

        Raises:
            StoreError: invalid arguments, or ``path`` exists and ``overwrite`` is False.
        """
        path = Path(path)
        task = getattr(task, "value", task)
        if task not in _TASKS:
            raise StoreError(f"task must be one of {_TASKS}, got {task!r}")
        if dtype not in _DTYPES:
            raise StoreError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        classes = [str(c) for c in classes]
        if not classes or len(set(classes)) != len(classes):
            raise StoreError(f"classes must be a non-empty list of unique names, got {classes}")
        if max_side is not None and (not isinstance(max_side, int) or max_side < 1):
            raise StoreError(f"max_side must be a positive int or None, got {max_side!r}")
        if not 0 <= compresslevel <= 9:
            raise StoreError(f"compresslevel must be in 0..9, got {compresslevel}")
        if path.exists() and not overwrite:
            raise StoreError(f"{path} already exists; choose another path or pass overwrite=True")
        if tta is not None and hasattr(tta, "model_dump"):
            tta = tta.model_dump(mode="json")
        return StoreWriter(
            path,
            classes=classes,
            task=task,
            dtype=dtype,
            max_side=max_side,
            meta=meta or {},
            tta=tta,
            source=source,
            overwrite=overwrite,
            compresslevel=compresslevel,
        )

    @staticmethod
    def open(path: str | Path) -> StoreReader:
        """Open a store for reading (reads only the manifest).

        Raises:
            StoreError: no store at ``path``, or its manifest is unreadable.
        """
        path = Path(path)
        mpath = path / _MANIFEST
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise StoreError(
                f"no probability store at {path} (missing {_MANIFEST}); check the path, or the store was never closed"
            ) from exc
        except (OSError, ValueError) as exc:
            raise StoreError(f"the manifest of the probability store {path} is unreadable: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
            raise StoreError(f"{path} is not a segcore probability store (manifest format field missing)")
        if manifest.get("version") != STORE_VERSION:
            raise StoreError(
                f"the probability store {path} has version {manifest.get('version')}; this segcore reads "
                f"version {STORE_VERSION}: re-create it"
            )
        missing = [k for k in ("classes", "task", "dtype", "entries") if k not in manifest]
        if missing:
            raise StoreError(f"the manifest of the probability store {path} lacks {missing}; re-create the store")
        return StoreReader(path, manifest)
