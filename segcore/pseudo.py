"""Pseudo-labels from a teacher's stored test probabilities (multiclass).

Two filters, as the trash-segmentation teams ran them by hand:

- **pixel**: a pixel whose maximum probability is under its threshold becomes ``ignore_index``
  (not background: the student is not taught anything there). The threshold is
  ``class_thresholds[c]`` for a pixel predicted as class ``c`` when given, else ``pixel_threshold``.
- **image**: an image is dropped when, among its foreground pixels (predicted class other than
  ``background_index``), the share whose maximum probability is under ``image_threshold``
  exceeds ``max_low_confidence`` (e.g. 0.8 and 10%). An image without foreground is kept.

The output is a dataset in the mask-folder format, written atomically::

    <out>/images/<id>.<ext>   hard links to (or copies of) the source images
    <out>/masks/<id>.png      8-bit class indices, ignore_index where filtered out
    <out>/dataset.json        {"source": MaskFolderSource, "classes", "task", "ignore_index", "teacher", "filters", ...}
    <out>/report.json         the PseudoLabelReport

``preview=True`` computes the same report and writes nothing.

Example:
    >>> report = make_pseudo_labels("preds/test", "data/test_images", "pseudo/v1")  # doctest: +SKIP
    >>> report.kept, report.dropped  # doctest: +SKIP
    (712, 125)
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from segcore.config import MaskFolderSource
from segcore.errors import ConfigError, DatasetError
from segcore.inference.store import ProbabilityStore, StoreReader
from segcore.io import atomic_dir

__all__ = ["ImageDecision", "PseudoLabelReport", "make_pseudo_labels"]

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
ImageSource = str | Path | Mapping[str, str | Path] | Callable[[str], str | Path]


@dataclass
class ImageDecision:
    """What the filters decided for one image.

    Attributes:
        id: the image id.
        kept: whether the image is in the output.
        reason: why it was dropped (None when kept).
        foreground_pixels: pixels predicted as a class other than background.
        low_confidence_fraction: share of those under ``image_threshold``.
        ignored_pixels: pixels set to ignore by the pixel filter.
        mean_confidence: mean maximum probability over the image.
    """

    id: str
    kept: bool
    reason: str | None
    foreground_pixels: int
    low_confidence_fraction: float
    ignored_pixels: int
    mean_confidence: float


@dataclass
class PseudoLabelReport:
    """Summary of a pseudo-label run (or preview).

    Attributes:
        kept, dropped: image counts.
        images: one :class:`ImageDecision` per image, in store order.
        class_pixels: labelled pixels per class name over the kept images.
        ignored_pixels: pixels set to ignore over the kept images.
        mean_confidence: mean maximum probability over the kept images' pixels (NaN when none).
        filters: the thresholds used.
        path: the output folder (None in preview).
    """

    kept: int
    dropped: int
    images: list[ImageDecision]
    class_pixels: dict[str, int]
    ignored_pixels: int
    mean_confidence: float
    filters: dict[str, Any]
    path: str | None = None
    teacher: dict[str, Any] = field(default_factory=dict)

    @property
    def kept_ids(self) -> list[str]:
        return [d.id for d in self.images if d.kept]

    @property
    def dropped_ids(self) -> list[str]:
        return [d.id for d in self.images if not d.kept]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean_confidence"] = None if np.isnan(self.mean_confidence) else self.mean_confidence
        return d


def _image_path(images: ImageSource, image_id: str) -> Path:
    if isinstance(images, Mapping):
        if image_id not in images:
            raise DatasetError(f"no source image for {image_id!r} in the given mapping; add it or drop the id")
        return Path(images[image_id])
    if callable(images):
        return Path(images(image_id))
    folder = Path(images)
    for ext in _IMAGE_EXTENSIONS:
        for candidate in (folder / f"{image_id}{ext}", folder / f"{image_id}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    raise DatasetError(
        f"no image file for {image_id!r} in {folder} (looked for {', '.join(_IMAGE_EXTENSIONS)}); "
        "pass the folder of the images the teacher predicted"
    )


def _pixel_thresholds(
    classes: Sequence[str], pixel_threshold: float, class_thresholds: Sequence[float] | Mapping[Any, float] | None
) -> np.ndarray:
    thr = np.full(len(classes), float(pixel_threshold), np.float32)
    if class_thresholds is None:
        return thr
    if isinstance(class_thresholds, Mapping):
        for key, value in class_thresholds.items():
            idx = classes.index(key) if isinstance(key, str) and key in classes else key
            if not isinstance(idx, int) or not 0 <= idx < len(classes):
                raise ConfigError(f"class_thresholds key {key!r} is not a class of the store {list(classes)}")
            thr[idx] = float(value)
    else:
        values = list(class_thresholds)
        if len(values) != len(classes):
            raise ConfigError(f"{len(values)} class_thresholds for {len(classes)} classes; give one per class")
        thr[:] = values
    if np.any((thr < 0) | (thr > 1)):
        raise ConfigError(f"class thresholds must lie in [0, 1], got {thr.tolist()}")
    return thr


def _link_or_copy(src: Path, dst: Path, link: str) -> None:
    if link == "hardlink":
        try:
            os.link(src, dst)
            return
        except OSError:  # another file system, or links not supported: copy instead
            pass
    shutil.copy2(src, dst)


def make_pseudo_labels(
    store: StoreReader | str | Path,
    images: ImageSource,
    out_dir: str | Path | None = None,
    *,
    pixel_threshold: float = 0.9,
    image_threshold: float = 0.8,
    max_low_confidence: float = 0.1,
    class_thresholds: Sequence[float] | Mapping[Any, float] | None = None,
    background_index: int | None = 0,
    ignore_index: int = 255,
    link: Literal["hardlink", "copy"] = "hardlink",
    preview: bool = False,
    overwrite: bool = False,
    ids: Sequence[str] | None = None,
) -> PseudoLabelReport:
    """Filter a teacher's probabilities into a pseudo-labelled mask-folder dataset.

    Args:
        store: the teacher's probability store over unlabelled images (multiclass).
        images: the source images: a folder holding ``<id>.<ext>``, a mapping id -> file, or a
            callable id -> file.
        out_dir: the dataset folder to create (ignored in preview).
        pixel_threshold: minimum maximum-probability for a pixel to keep its label.
        image_threshold: a foreground pixel under this maximum probability is low-confidence.
        max_low_confidence: drop an image whose low-confidence foreground share exceeds this.
        class_thresholds: per-class pixel thresholds (a list, or a mapping of class name or
            index -> threshold; classes not named keep ``pixel_threshold``).
        background_index: the class that is not foreground for the image filter; None: the dataset
            has no background, so every pixel counts.
        ignore_index: mask value of filtered pixels (must not be a class index).
        link: ``hardlink`` images (falls back to a copy across file systems) or ``copy`` them.
        preview: compute the report only; write nothing.
        overwrite: replace an existing ``out_dir``.
        ids: a subset of the store's images; None for all.

    Returns:
        The report (also written to ``report.json``).

    Raises:
        ConfigError: bad thresholds, a multilabel store, ignore_index clashing with a class.
        DatasetError: a missing source image or one whose size differs from the prediction.
        StoreError: a missing or corrupt store entry.
    """
    reader = store if isinstance(store, StoreReader) else ProbabilityStore.open(store)
    classes = reader.classes
    if reader.task != "multiclass":
        raise ConfigError(
            f"pseudo-labels are index masks: the store {reader.path} is {reader.task}; use a multiclass teacher"
        )
    if len(classes) > 255:
        raise ConfigError(f"index PNG masks hold at most 255 classes, the store has {len(classes)}")
    if 0 <= ignore_index < len(classes) or not 0 <= ignore_index <= 255:
        raise ConfigError(f"ignore_index {ignore_index} must be in {len(classes)}..255, outside the class indices")
    if background_index is not None and not 0 <= background_index < len(classes):
        raise ConfigError(f"background_index {background_index} is not a class index (0..{len(classes) - 1})")
    for name, v in (("pixel_threshold", pixel_threshold), ("image_threshold", image_threshold),
                    ("max_low_confidence", max_low_confidence)):
        if not 0 <= v <= 1:
            raise ConfigError(f"{name} must lie in [0, 1], got {v}")
    if link not in ("hardlink", "copy"):
        raise ConfigError(f"link must be 'hardlink' or 'copy', got {link!r}")
    if not preview and out_dir is None:
        raise ConfigError("give out_dir, or preview=True to compute the report without writing")
    thr = _pixel_thresholds(classes, pixel_threshold, class_thresholds)
    filters = {
        "pixel_threshold": pixel_threshold,
        "class_thresholds": thr.tolist(),
        "image_threshold": image_threshold,
        "max_low_confidence": max_low_confidence,
        "background_index": background_index,
        "ignore_index": ignore_index,
    }
    teacher = {"store": str(reader.path), "source": reader.source, "tta": reader.tta}
    ids = list(ids) if ids is not None else list(reader.ids)

    decisions: list[ImageDecision] = []
    class_pixels = np.zeros(len(classes), np.int64)
    ignored_total = 0
    conf_sum, conf_count = 0.0, 0

    def run(tmp: Path | None) -> None:
        nonlocal ignored_total, conf_sum, conf_count
        if tmp is not None:
            (tmp / "images").mkdir()
            (tmp / "masks").mkdir()
        for image_id in ids:
            probs = reader.read(image_id)
            conf = probs.max(0)
            label = probs.argmax(0).astype(np.uint8)
            fg = label != background_index if background_index is not None else np.ones(label.shape, bool)
            n_fg = int(fg.sum())
            low = float((fg & (conf < image_threshold)).sum() / n_fg) if n_fg else 0.0
            ignore = conf < thr[label]
            n_ignored = int(ignore.sum())
            mean_conf = float(conf.mean())
            kept = low <= max_low_confidence
            reason = None if kept else (
                f"{low:.1%} of {n_fg} foreground pixels have max probability < {image_threshold} "
                f"(limit {max_low_confidence:.1%})"
            )
            decisions.append(ImageDecision(image_id, kept, reason, n_fg, low, n_ignored, mean_conf))
            if not kept:
                continue
            mask = np.where(ignore, np.uint8(ignore_index), label)
            class_pixels[:] += np.bincount(mask[~ignore].ravel(), minlength=len(classes))[: len(classes)]
            ignored_total += n_ignored
            conf_sum += float(conf.sum(dtype=np.float64))
            conf_count += conf.size
            if tmp is not None:
                _write_example(tmp, image_id, mask, _image_path(images, image_id), reader.size(image_id), link)

    report_path: str | None = None
    if preview:
        run(None)
    else:
        final = Path(out_dir).resolve()  # type: ignore[arg-type]  # set unless preview (checked above)
        if final.exists() and not overwrite:
            raise ConfigError(f"{final} already exists; choose another folder or pass overwrite=True")
        try:
            with atomic_dir(final, overwrite=overwrite) as tmp:
                run(tmp)
                report = _report(decisions, classes, class_pixels, ignored_total, conf_sum, conf_count,
                                 filters, str(final), teacher)
                dataset = {
                    "source": MaskFolderSource(root=str(final), ignore_value=ignore_index).model_dump(mode="json"),
                    "classes": classes,
                    "task": "multiclass",
                    "ignore_index": ignore_index,
                    "teacher": teacher,
                    "filters": filters,
                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "images": report.kept,
                }
                (tmp / "dataset.json").write_text(json.dumps(dataset, indent=2), encoding="utf-8")
                (tmp / "report.json").write_text(json.dumps(report.to_dict(), indent=1), encoding="utf-8")
        except FileExistsError as exc:
            raise ConfigError(f"{final} already exists; choose another folder or pass overwrite=True") from exc
        report_path = str(final)
    return _report(decisions, classes, class_pixels, ignored_total, conf_sum, conf_count, filters, report_path,
                   teacher)


def _write_example(
    tmp: Path, image_id: str, mask: np.ndarray, src: Path, size: tuple[int, int], link: str
) -> None:
    from PIL import Image

    try:
        with Image.open(src) as im:
            w, h = im.size
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read the source image {src} of {image_id!r}: {exc}") from exc
    if (h, w) != tuple(size):
        raise DatasetError(
            f"source image {src} is {h}x{w} but the teacher predicted {size[0]}x{size[1]} for {image_id!r}; "
            "pass the images the store was predicted from"
        )
    _link_or_copy(src, tmp / "images" / f"{image_id}{src.suffix.lower()}", link)
    Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8)).save(tmp / "masks" / f"{image_id}.png")


def _report(
    decisions: list[ImageDecision],
    classes: Sequence[str],
    class_pixels: np.ndarray,
    ignored: int,
    conf_sum: float,
    conf_count: int,
    filters: dict[str, Any],
    path: str | None,
    teacher: dict[str, Any],
) -> PseudoLabelReport:
    kept = sum(d.kept for d in decisions)
    return PseudoLabelReport(
        kept=kept,
        dropped=len(decisions) - kept,
        images=list(decisions),
        class_pixels={c: int(n) for c, n in zip(classes, class_pixels)},
        ignored_pixels=int(ignored),
        mean_confidence=conf_sum / conf_count if conf_count else float("nan"),
        filters=filters,
        path=path,
        teacher=teacher,
    )
