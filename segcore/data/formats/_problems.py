"""What a dataset check reports: problem codes, the report, and the collector each format's validator fills."""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel, Field, computed_field

from segcore.errors import DatasetError
from segcore.ids import quote_ids

COORD_TOLERANCE = 1.0  # polygon points may lie up to 1 px outside the image (annotation tools round)


class ProblemCode(str, enum.Enum):
    """What kind of problem a :class:`Problem` is."""

    MISSING_ROOT = "missing_root"
    MISSING_FOLDER = "missing_folder"
    MISSING_ANNOTATION_FILE = "missing_annotation_file"
    EMPTY_ANNOTATION_FILE = "empty_annotation_file"
    INVALID_ANNOTATION_FILE = "invalid_annotation_file"
    NO_IMAGES = "no_images"
    MISSING_IMAGE = "missing_image"
    MISSING_ANNOTATION = "missing_annotation"
    UNLISTED_IMAGE = "unlisted_image"
    UNREADABLE_IMAGE = "unreadable_image"
    UNREADABLE_MASK = "unreadable_mask"
    SIZE_MISMATCH = "size_mismatch"
    UNKNOWN_PIXEL_VALUE = "unknown_pixel_value"
    CLASS_OUT_OF_RANGE = "class_out_of_range"
    CLASS_COUNT_MISMATCH = "class_count_mismatch"
    POLYGON_OUT_OF_BOUNDS = "polygon_out_of_bounds"
    NONFINITE_COORDINATES = "nonfinite_coordinates"
    DEGENERATE_POLYGON = "degenerate_polygon"
    INVALID_SEGMENTATION = "invalid_segmentation"
    DUPLICATE_FILE_NAME = "duplicate_file_name"
    DUPLICATE_IMAGE_ENTRY = "duplicate_image_entry"
    DUPLICATE_CATEGORY = "duplicate_category"
    UNKNOWN_CATEGORY = "unknown_category"
    UNKNOWN_LABEL = "unknown_label"
    ANNOTATION_WITHOUT_IMAGE = "annotation_without_image"
    TASK_MISMATCH = "task_mismatch"


class Severity(str, enum.Enum):
    """``error``: the dataset cannot be used as is. ``warning``: usable, but probably not what you meant."""

    ERROR = "error"
    WARNING = "warning"


class Problem(BaseModel):
    """One problem found in a dataset; ``message`` says what is wrong and how to fix it."""

    code: ProblemCode
    message: str
    file: str | None = None
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        return f"[{self.severity.value} {self.code.value}] {where}{self.message}"


class DatasetReport(BaseModel):
    """What :func:`validate_dataset` found. JSON-able for the web app."""

    format: str
    root: str
    num_images: int = 0
    num_test_images: int = 0
    classes: list[str] = Field(default_factory=list)
    image_sizes: dict[str, int] = Field(default_factory=dict, description='"WxH" -> number of images')
    problems: list[Problem] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]  # pydantic documents this ignore for @computed_field on a property
    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not any(p.severity is Severity.ERROR for p in self.problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.WARNING]

    def __str__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        """Every problem on its own line, errors first."""
        head = (
            f"dataset {self.root} ({self.format}): {self.num_images} images, "
            f"{len(self.errors)} errors, {len(self.warnings)} warnings"
        )
        lines = [str(p) for p in self.errors + self.warnings]
        return "\n".join([head, *(f"- {line}" for line in lines)])


def raise_if_invalid(report: DatasetReport) -> None:
    """Raise :class:`DatasetError` listing every problem when ``report`` has errors.

    Raises:
        DatasetError: with one line per problem (file, what is wrong, how to fix it).
    """
    if not report.ok:
        raise DatasetError("the dataset is invalid; fix these problems and validate again:\n" + report.summary())


class Collector:
    """Gathers the problems (and image sizes) a format's validator finds."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.sizes: Counter[str] = Counter()

    def add(self, code: ProblemCode, message: str, file: Path | str | None = None, *, warning: bool = False) -> None:
        self.problems.append(
            Problem(
                code=code,
                message=message,
                file=None if file is None else str(file),
                severity=Severity.WARNING if warning else Severity.ERROR,
            )
        )

    def image(self, path: Path, check_pixels: bool, *, count: bool = True) -> tuple[int, int] | None:
        """Check one image file; ``(height, width)`` or None when unreadable."""
        try:
            if path.stat().st_size == 0:
                self.add(ProblemCode.UNREADABLE_IMAGE, "the image file is empty (0 bytes); replace or remove it", path)
                return None
            with Image.open(path) as im:
                w, h = im.size
                if check_pixels:
                    im.load()
        except FileNotFoundError:
            self.add(ProblemCode.MISSING_IMAGE, "the image file does not exist; add it or remove its entry", path)
            return None
        except (OSError, ValueError, SyntaxError) as exc:
            self.add(
                ProblemCode.UNREADABLE_IMAGE,
                f"the image cannot be decoded ({exc}); it is truncated or not an image: replace or remove it",
                path,
            )
            return None
        if count:
            self.sizes[f"{w}x{h}"] += 1
        return h, w


def report_duplicates(col: Collector, dupes: dict[str, list[Path]]) -> None:
    """One problem per image stem that several files share."""
    for stem, paths in sorted(dupes.items()):
        col.add(
            ProblemCode.DUPLICATE_FILE_NAME,
            f"image id {stem!r} has several files ({', '.join(p.name for p in paths)}); "
            "keep one file per stem (rename or delete the others)",
            paths[1],
        )


def check_class_count(
    col: Collector, classes: Sequence[str] | None, derived: list[str], what: str
) -> list[str]:
    """``classes`` when given (a count that differs from the data's is a problem), else the derived names."""
    if classes is None:
        return derived
    if len(classes) != len(derived):
        col.add(
            ProblemCode.CLASS_COUNT_MISMATCH,
            f"data.classes has {len(classes)} names but the {what} define {len(derived)} classes "
            f"({quote_ids(derived, limit=20, kind='class name')}); list one name per class index",
        )
    return list(classes)


def check_points(
    col: Collector, points: list[tuple[Any, Any]], w: int, h: int, where: str, file: Path
) -> bool:
    """Check a polygon's points; True when it can be rasterised."""
    try:
        xy = [(float(x), float(y)) for x, y in points]
    except (TypeError, ValueError):
        col.add(ProblemCode.INVALID_SEGMENTATION, f"{where} has points that are not numbers; fix the polygon", file)
        return False
    if any(not (math.isfinite(x) and math.isfinite(y)) for x, y in xy):
        col.add(
            ProblemCode.NONFINITE_COORDINATES,
            f"{where} has NaN or infinite coordinates; fix or delete the polygon",
            file,
        )
        return False
    if len(xy) < 3:
        col.add(
            ProblemCode.DEGENERATE_POLYGON,
            f"{where} has {len(xy)} points; a polygon needs at least 3: fix or delete it",
            file,
        )
        return False
    t = COORD_TOLERANCE
    bad = [(x, y) for x, y in xy if x < -t or y < -t or x > w + t or y > h + t]
    if bad:
        x, y = bad[0]
        col.add(
            ProblemCode.POLYGON_OUT_OF_BOUNDS,
            f"{where} has {len(bad)} points outside the {w}x{h} image (e.g. x={x:g}, y={y:g}); "
            "the annotation may belong to another image or use another scale: fix or clip it",
            file,
        )
        return False
    return True
