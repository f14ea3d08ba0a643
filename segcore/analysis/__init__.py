"""Per-class error inspection from stored probabilities (torch-free: numpy, scipy, OpenCV).

:func:`analyze` streams ``(image_id, prediction, ground_truth)`` once and returns a JSON-able
:class:`AnalysisReport`: per-class IoU, Dice, precision, recall and support per fold and pooled,
the normalised confusion matrix, the error taxonomy, boundary analysis, object recall by size,
per-image scores with the worst images per class, and confidence histograms.
:func:`analyze_store` does the same from a probability store, with an optional cache file.
:func:`compare` / :func:`compare_stores` set two predictions side by side;
:func:`render_overlay` and :func:`render_comparison` draw them. See ``docs/inspection.md``.
"""

from segcore.analysis._pipeline import ProbabilitySource, analyze, analyze_store
from segcore.analysis.boundary import BoundaryAnalysis, ClassBoundary, boundary_iou
from segcore.analysis.compare import (
    COMPARISON_LEGEND,
    ClassComparison,
    ComparisonReport,
    ImageComparison,
    compare,
    compare_stores,
    comparison_codes,
)
from segcore.analysis.confidence import ClassConfidence, ConfidenceAnalysis
from segcore.analysis.objects import DEFAULT_SIZE_BINS, ClassObjects, ObjectRecall, SizeBin
from segcore.analysis.overlay import (
    ERROR_LEGEND,
    OverlayPanels,
    default_palette,
    render_comparison,
    render_overlay,
)
from segcore.analysis.report import (
    AnalysisParameters,
    AnalysisReport,
    ClassMetrics,
    ConfusionSummary,
    FoldMetrics,
    ImageSummary,
    WorstImage,
)
from segcore.analysis.taxonomy import ClassErrors, ErrorKind, ErrorTaxonomy, error_codes

__all__ = [
    "analyze",
    "analyze_store",
    "ProbabilitySource",
    "AnalysisReport",
    "AnalysisParameters",
    "FoldMetrics",
    "ClassMetrics",
    "ConfusionSummary",
    "ImageSummary",
    "WorstImage",
    "ErrorTaxonomy",
    "ClassErrors",
    "ErrorKind",
    "error_codes",
    "BoundaryAnalysis",
    "ClassBoundary",
    "boundary_iou",
    "ObjectRecall",
    "ClassObjects",
    "SizeBin",
    "DEFAULT_SIZE_BINS",
    "ConfidenceAnalysis",
    "ClassConfidence",
    "compare",
    "compare_stores",
    "comparison_codes",
    "ComparisonReport",
    "ClassComparison",
    "ImageComparison",
    "COMPARISON_LEGEND",
    "render_overlay",
    "render_comparison",
    "OverlayPanels",
    "ERROR_LEGEND",
    "default_palette",
]
