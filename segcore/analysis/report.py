"""The :class:`AnalysisReport` returned by :func:`segcore.analysis.analyze`: JSON-able, cacheable."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from segcore.analysis.boundary import BoundaryAnalysis
from segcore.analysis.confidence import ConfidenceAnalysis
from segcore.analysis.objects import ObjectRecall
from segcore.analysis.taxonomy import ErrorTaxonomy
from segcore.config import TaskType
from segcore.errors import StoreError
from segcore.io import atomic_write_text

__all__ = [
    "REPORT_SCHEMA_VERSION",
    "AnalysisParameters",
    "ClassMetrics",
    "FoldMetrics",
    "ConfusionSummary",
    "ImageSummary",
    "WorstImage",
    "AnalysisReport",
]

REPORT_SCHEMA_VERSION = 1


class AnalysisParameters(BaseModel):
    """Everything the figures depend on besides the data; a cached report is reused only when equal."""

    model_config = ConfigDict(extra="forbid")

    task: TaskType
    classes: list[str]
    ignore_index: int | None
    background: int | None
    boundary_px: int
    size_bins: list[int]
    found_share: float
    connectivity: int
    threshold: float
    confidence_bins: int
    worst_k: int


class ClassMetrics(BaseModel):
    """Pixel metrics of one class; a score is ``None`` where undefined (the class absent)."""

    model_config = ConfigDict(extra="forbid")

    class_index: int
    name: str
    iou: float | None
    dice: float | None
    precision: float | None
    recall: float | None
    support: int = Field(description="ground-truth pixels of the class")
    predicted: int = Field(description="pixels predicted as the class")
    tp: int
    fp: int
    fn: int


class FoldMetrics(BaseModel):
    """Dataset-level metrics of one fold (``fold="all"``: every image pooled).

    ``mean_iou`` and ``mean_dice`` average the classes whose score is defined (present in the
    ground truth or the prediction); ``pixel_accuracy`` is correct pixels / counted pixels
    (multilabel: correct (pixel, class) decisions / all of them), as in ``docs/metrics.md``.
    """

    model_config = ConfigDict(extra="forbid")

    fold: str
    n_images: int
    n_pixels: int
    mean_iou: float | None
    mean_dice: float | None
    pixel_accuracy: float | None
    classes: list[ClassMetrics]


class ConfusionSummary(BaseModel):
    """Pooled multiclass confusion matrix, rows = ground truth, columns = prediction.

    ``normalized`` divides each row by its sum (rows of absent classes stay zero).
    """

    model_config = ConfigDict(extra="forbid")

    counts: list[list[int]]
    normalized: list[list[float]]


class ImageSummary(BaseModel):
    """Scores of one image; ``iou[c]`` is ``None`` where class ``c`` is in neither mask."""

    model_config = ConfigDict(extra="forbid")

    image_id: str
    fold: str | None
    n_pixels: int
    pixel_accuracy: float | None
    mean_iou: float | None
    mean_dice: float | None
    iou: list[float | None]
    errors: list[int] = Field(description="per class false negatives + false positives")


class WorstImage(BaseModel):
    """One of a class's worst images: lowest IoU first, then most wrong pixels."""

    model_config = ConfigDict(extra="forbid")

    image_id: str
    fold: str | None
    iou: float
    errors: int


class AnalysisReport(BaseModel):
    """Everything :func:`~segcore.analysis.analyze` computes, small enough to cache as one file."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = REPORT_SCHEMA_VERSION
    parameters: AnalysisParameters
    n_images: int
    pooled: FoldMetrics
    folds: list[FoldMetrics]
    confusion: ConfusionSummary | None
    taxonomy: ErrorTaxonomy
    boundary: BoundaryAnalysis
    objects: ObjectRecall
    confidence: ConfidenceAnalysis | None
    images: list[ImageSummary]
    worst_images: dict[str, list[WorstImage]]

    def save(self, path: str | Path) -> None:
        """Write the report as JSON, atomically."""
        atomic_write_text(path, self.model_dump_json())

    @classmethod
    def load(cls, path: str | Path) -> AnalysisReport:
        """Read a report written by :meth:`save`.

        Raises:
            StoreError: the file is missing, unreadable or of another schema.
        """
        try:
            return cls.model_validate_json(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise StoreError(
                f"cannot read analysis report {path}: {exc}; delete it and run the analysis again"
            ) from exc
