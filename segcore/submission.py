"""Competition submission files, written atomically and read back for checking.

Two CSV formats and a Parquet table:

- **class map** (trash segmentation): ``image_id,PredictionString``; the H x W class map is
  resized by nearest neighbour (pixel centres) to ``size`` (256 x 256 there) and flattened in
  row-major order as space-separated integers.
- **RLE per class** (hand-bone X-ray): ``image_name,class,rle``; one row per image and class,
  ``rle`` the Kaggle run-length encoding of the flattened (row-major) binary mask: 1-indexed
  ``start length`` pairs, empty for an empty mask.
- **Parquet** of per-image scores (one row per image, any columns).

Example:
    >>> rle_encode(np.array([[0, 1, 1], [0, 0, 1]]))
    '2 2 6 1'
    >>> rle_decode("2 2 6 1", (2, 3)).tolist()
    [[0, 1, 1], [0, 0, 1]]
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segcore.errors import SubmissionError
from segcore.ids import looks_like_id, quote_id
from segcore.io import atomic_path

__all__ = [
    "class_map_to_string",
    "read_class_map_csv",
    "read_rle_csv",
    "read_scores_parquet",
    "resize_nearest",
    "rle_decode",
    "rle_encode",
    "write_class_map_csv",
    "write_rle_csv",
    "write_scores_parquet",
]

CLASS_MAP_HEADER = ("image_id", "PredictionString")
RLE_HEADER = ("image_name", "class", "rle")
_INTS = re.compile(r"^\s*\d+(\s+\d+)*\s*$")


def resize_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an H x W map by pixel centres (no new values appear).

    Args:
        labels: H x W integer array.
        size: (height, width) of the output.
    """
    h, w = labels.shape
    oh, ow = size
    if (h, w) == (oh, ow):
        return labels
    ys = np.minimum(((np.arange(oh) + 0.5) * h / oh).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(ow) + 0.5) * w / ow).astype(np.int64), w - 1)
    return labels[ys[:, None], xs[None, :]]


def _check_labels(labels: np.ndarray, image_id: str, num_classes: int | None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.size == 0:
        raise SubmissionError(f"class map of {image_id!r} must be a non-empty H x W array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise SubmissionError(
            f"class map of {image_id!r} must hold integers, got {labels.dtype}; argmax the probabilities first"
        )
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        raise SubmissionError(
            f"class map of {image_id!r} holds values {lo}..{hi}; expected 0..{(num_classes or 1) - 1}"
        )
    return labels


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError) as exc:
        raise SubmissionError(f"size must be (height, width), got {size!r}") from exc
    if h < 1 or w < 1:
        raise SubmissionError(f"size must be positive, got {size!r}")
    return h, w


def class_map_to_string(
    labels: np.ndarray, size: tuple[int, int] = (256, 256), *, num_classes: int | None = None
) -> str:
    """An H x W class map -> the space-separated, row-major string at ``size``."""
    labels = _check_labels(labels, "<map>", num_classes)
    small = resize_nearest(labels, _check_size(size))
    return " ".join(map(str, small.ravel().tolist()))


def _write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> int:
    count = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            for row in rows:
                writer.writerow(row)
                count += 1
    return count


def write_class_map_csv(
    path: str | Path,
    rows: Iterable[tuple[str, np.ndarray]],
    *,
    size: tuple[int, int] = (256, 256),
    num_classes: int | None = None,
) -> int:
    """Write ``image_id,PredictionString`` rows, streaming (one class map in memory at a time).

    Args:
        path: the CSV to write (atomically).
        rows: (image id, H x W class map) pairs, e.g. from ``iter_ensemble_labels``.
        size: (height, width) every map is resized to.
        num_classes: when given, values must lie in 0..num_classes-1.

    Returns:
        The number of rows written.

    Raises:
        SubmissionError: a bad map, a duplicate or empty id; nothing is written then.
    """
    size = _check_size(size)
    seen: set[str] = set()

    def gen() -> Iterable[Sequence[str]]:
        for image_id, labels in rows:
            if not image_id or image_id in seen:
                raise SubmissionError(f"image id {image_id!r} is empty or repeated; each image needs one row")
            seen.add(image_id)
            labels = _check_labels(labels, image_id, num_classes)
            yield image_id, " ".join(map(str, resize_nearest(labels, size).ravel().tolist()))

    return _write_csv(path, CLASS_MAP_HEADER, gen())


def _read_rows(path: str | Path, header: Sequence[str]) -> Iterable[tuple[int, list[str]]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SubmissionError(f"cannot read the submission {path}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise SubmissionError(f"{path} is not UTF-8 text, so it is not a submission CSV") from None
    reader = csv.reader(io.StringIO(text))
    try:
        first = next(reader, None)
    except csv.Error:
        first = None
    if first is None or [h.strip() for h in first] != list(header):
        raise SubmissionError(f"{path} must start with the header {','.join(header)}; its first line differs")
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise SubmissionError(
                f"{path} line {line}: expected {len(header)} fields ({','.join(header)}), got {len(row)}"
            )
        yield line, row


def read_class_map_csv(
    path: str | Path, *, size: tuple[int, int] = (256, 256), num_classes: int | None = None
) -> dict[str, np.ndarray]:
    """Read an ``image_id,PredictionString`` CSV into {image id: size class map (int64)}.

    Raises:
        SubmissionError: a wrong header, a malformed or wrongly sized row, an unknown class value,
            a repeated id (the message names the line).
    """
    h, w = _check_size(size)
    out: dict[str, np.ndarray] = {}
    for line, (image_id, pred) in _read_rows(path, CLASS_MAP_HEADER):
        if image_id in out:
            raise SubmissionError(f"{path} line {line}: image {quote_id(image_id)} appears twice")
        if not _INTS.match(pred):
            raise SubmissionError(f"{path} line {line}: PredictionString must be space-separated non-negative integers")
        values = np.array(pred.split(), dtype=np.int64)
        if values.size != h * w:
            raise SubmissionError(f"{path} line {line}: {values.size} values, expected {h}x{w} = {h * w}")
        if num_classes is not None and values.max(initial=0) >= num_classes:
            raise SubmissionError(f"{path} line {line}: class {int(values.max())} is not in 0..{num_classes - 1}")
        out[image_id] = values.reshape(h, w)
    return out


def rle_encode(mask: np.ndarray) -> str:
    """Kaggle RLE of a binary H x W mask: 1-indexed ``start length`` pairs in row-major order."""
    pixels = np.asarray(mask).astype(bool).ravel()
    padded = np.concatenate([[False], pixels, [False]])
    runs = np.flatnonzero(padded[1:] != padded[:-1]) + 1
    runs[1::2] -= runs[::2]
    return " ".join(map(str, runs.tolist()))


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode a Kaggle RLE string into an H x W uint8 {0, 1} mask.

    Raises:
        SubmissionError: non-integers, an odd count, zero lengths, runs outside the image,
            or runs not in increasing, non-overlapping order.
    """
    h, w = _check_size(shape)
    rle = (rle or "").strip()
    mask = np.zeros(h * w, np.uint8)
    if not rle:
        return mask.reshape(h, w)
    if not _INTS.match(rle):
        raise SubmissionError("malformed rle: expected space-separated positive integers")
    nums = np.array(rle.split(), dtype=np.int64)
    if nums.size % 2:
        raise SubmissionError(f"malformed rle: {nums.size} numbers, expected start/length pairs")
    starts, lengths = nums[0::2] - 1, nums[1::2]
    ends = starts + lengths
    if starts.min() < 0 or lengths.min() < 1 or ends.max() > h * w:
        raise SubmissionError(f"malformed rle: runs must be 1-indexed, non-empty and inside {h}x{w} = {h * w} pixels")
    if np.any(starts[1:] < ends[:-1]):
        raise SubmissionError("malformed rle: runs must be in increasing order without overlap")
    for s, e in zip(starts.tolist(), ends.tolist()):
        mask[s:e] = 1
    return mask.reshape(h, w)


def write_rle_csv(
    path: str | Path,
    rows: Iterable[tuple[str, np.ndarray]],
    *,
    classes: Sequence[str],
) -> int:
    """Write ``image_name,class,rle`` rows: one per image and class, streaming.

    Args:
        path: the CSV to write (atomically).
        rows: (image name, C x H x W binary masks) pairs, e.g. thresholded multilabel predictions.
        classes: class names in channel order.

    Returns:
        The number of rows written (images x classes).

    Raises:
        SubmissionError: masks with another class count or shape, a repeated image name.
    """
    classes = list(classes)
    seen: set[str] = set()

    def gen() -> Iterable[Sequence[str]]:
        for name, masks in rows:
            masks = np.asarray(masks)
            if masks.ndim != 3 or masks.shape[0] != len(classes):
                raise SubmissionError(
                    f"masks of {name!r} must be C x H x W with C = {len(classes)} classes, got {masks.shape}"
                )
            if not name or name in seen:
                raise SubmissionError(f"image name {name!r} is empty or repeated")
            seen.add(name)
            for cls, m in zip(classes, masks):
                yield name, cls, rle_encode(m)

    return _write_csv(path, RLE_HEADER, gen())


def read_rle_csv(path: str | Path, *, classes: Sequence[str], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Read an ``image_name,class,rle`` CSV into {image name: C x H x W uint8 masks}.

    Classes without a row are empty masks.

    Raises:
        SubmissionError: an unknown class, a repeated (image, class) row, a malformed rle
            (the message names the line).
    """
    index = {c: i for i, c in enumerate(classes)}
    h, w = _check_size(shape)
    out: dict[str, np.ndarray] = {}
    seen: set[tuple[str, str]] = set()
    for line, (name, cls, rle) in _read_rows(path, RLE_HEADER):
        if cls not in index:
            raise SubmissionError(
                f"{path} line {line}: unknown class {repr(cls) if looks_like_id(cls) else '(not a class name)'}; "
                f"known: {', '.join(classes)}"
            )
        if (name, cls) in seen:
            raise SubmissionError(f"{path} line {line}: {quote_id(name)} / {cls} appears twice")
        seen.add((name, cls))
        try:
            mask = rle_decode(rle, (h, w))
        except SubmissionError as exc:
            raise SubmissionError(f"{path} line {line} ({quote_id(name)}, {cls}): {exc}") from exc
        if name not in out:
            out[name] = np.zeros((len(classes), h, w), np.uint8)
        out[name][index[cls]] = mask
    return out


def write_scores_parquet(path: str | Path, rows: Any) -> int:
    """Write per-image scores as Parquet (atomically).

    Args:
        path: the ``.parquet`` file.
        rows: a pandas DataFrame, or a sequence of mappings (one per image), or a mapping of
            column name -> values.

    Returns:
        The number of rows.

    Raises:
        SubmissionError: rows that do not make a table.
    """
    import pandas as pd

    try:
        if isinstance(rows, pd.DataFrame):
            df = rows
        else:
            df = pd.DataFrame(rows if isinstance(rows, Mapping) else list(rows))
    except (TypeError, ValueError) as exc:
        raise SubmissionError(f"per-image scores must be a table (rows of mappings): {exc}") from exc
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False, engine="pyarrow")
    return len(df)


def read_scores_parquet(path: str | Path) -> Any:
    """Read a Parquet table written by :func:`write_scores_parquet` (a pandas DataFrame)."""
    import pandas as pd

    try:
        return pd.read_parquet(path, engine="pyarrow")
    except (OSError, ValueError) as exc:
        raise SubmissionError(f"cannot read the scores table {path}: {exc}") from exc
