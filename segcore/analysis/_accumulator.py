"""The running sums of one analysis, added image by image and turned into an AnalysisReport."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from segcore.analysis._confusion import (
    class_scores,
    confusion_tp_fp_fn,
    multilabel_counts,
    normalize_rows,
)
from segcore.analysis._inputs import Prediction, as_ground_truth, as_prediction
from segcore.analysis.boundary import (
    BoundaryAnalysis,
    ClassBoundary,
    multiclass_boundary_counts,
    multilabel_boundary_counts,
)
from segcore.analysis.confidence import (
    confidence_report,
    multiclass_confidence_counts,
    multilabel_confidence_counts,
)
from segcore.analysis.objects import (
    ClassObjects,
    ObjectRecall,
    SizeBin,
    bin_objects,
    check_size_bins,
    object_hits,
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
from segcore.analysis.taxonomy import (
    ERROR_KINDS,
    multiclass_taxonomy_counts,
    taxonomy_from_confusion,
    taxonomy_from_multilabel,
)
from segcore.config import TaskType
from segcore.errors import DatasetError, StoreError


def _none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _nanmean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


class _ImageCounts(NamedTuple):
    counts: np.ndarray  # multiclass CxC confusion; multilabel Cx4 [tp, fp, fn, tn]
    n_pixels: int
    iou: np.ndarray  # C, NaN where undefined
    errors: np.ndarray  # C, false negatives + false positives
    accuracy: float | None


class Accumulator:
    """Running sums of one analysis; holds nothing of size HxW between images."""

    def __init__(self, p: AnalysisParameters) -> None:
        self.p = p
        c = len(p.classes)
        self.c = c
        self.multiclass = p.task is TaskType.MULTICLASS
        self.edges = check_size_bins(p.size_bins)
        nb = self.edges.size
        # per fold: multiclass CxC confusion; multilabel Cx4 [tp, fp, fn, tn]
        self.fold_counts: dict[str, np.ndarray] = {}
        self.fold_images: dict[str, int] = {}
        self.fold_pixels: dict[str, int] = {}
        self.cm_strata = np.zeros((2, c, c), dtype=np.int64)  # multiclass interior / band
        self.ml_band = np.zeros((2, c), dtype=np.int64)  # multilabel fn, fp in the band
        self.contour = np.zeros((3, c), dtype=np.int64)  # |G_k|, |P_k|, |G_k ∩ P_k|
        self.objects = np.zeros((2, c, nb), dtype=np.int64)  # objects, found
        self.conf_counts = np.zeros((c, 2, p.confidence_bins), dtype=np.int64)
        self.conf_sums = np.zeros((c, 2), dtype=np.float64)
        self.conf_images = 0
        self.images: list[ImageSummary] = []
        self.seen: set[str] = set()
        self.counts_total: np.ndarray | None = None  # pooled confusion / [tp, fp, fn, tn]
        self.object_classes = [
            k for k in range(c) if not (self.multiclass and k == p.background)
        ]

    def add(self, image_id: str, pred_in: np.ndarray, gt_in: np.ndarray, fold: str | None) -> None:
        p = self.p
        if image_id in self.seen:
            raise DatasetError(f"image {image_id!r} appears twice; pass each image once")
        self.seen.add(image_id)
        gt = as_ground_truth(gt_in, task=p.task, num_classes=self.c, ignore_index=p.ignore_index)
        pred = as_prediction(pred_in, task=p.task, num_classes=self.c, threshold=p.threshold)
        if pred.labels.shape[-2:] != gt.shape[-2:]:
            raise StoreError(
                f"image {image_id!r}: prediction is {pred.labels.shape[-2:]} but ground truth is "
                f"{gt.shape[-2:]}; read the probabilities at the mask's resolution"
            )
        key = fold if fold is not None else "all"
        if self.multiclass:
            counts, n_valid, iou, errors, acc = self._add_multiclass(gt, pred)
        else:
            counts, n_valid, iou, errors, acc = self._add_multilabel(gt, pred)
        if fold is not None:
            prev = self.fold_counts.get(key)
            self.fold_counts[key] = counts if prev is None else prev + counts
            self.fold_images[key] = self.fold_images.get(key, 0) + 1
            self.fold_pixels[key] = self.fold_pixels.get(key, 0) + n_valid
        tp, fp, fn = _tp_fp_fn(counts, self.multiclass)
        dice = class_scores(tp, fp, fn)["dice"]
        self.images.append(
            ImageSummary(
                image_id=image_id,
                fold=fold,
                n_pixels=n_valid,
                pixel_accuracy=acc,
                mean_iou=_nanmean(iou),
                mean_dice=_nanmean(dice),
                iou=[_none(v) for v in iou],
                errors=errors.tolist(),
            )
        )
        self.counts_total = counts if self.counts_total is None else self.counts_total + counts

    def _add_objects(
        self,
        gt_mask: Callable[[int], np.ndarray],
        pred_mask: Callable[[int], np.ndarray],
        present: np.ndarray,
    ) -> None:
        for k in self.object_classes:
            if not present[k]:
                continue
            sizes, hits = object_hits(gt_mask(k), pred_mask(k), connectivity=self.p.connectivity)
            found = hits >= self.p.found_share * sizes
            n, f = bin_objects(sizes, found, self.edges)
            self.objects[0, k] += n
            self.objects[1, k] += f

    def _add_multiclass(self, gt: np.ndarray, pred: Prediction) -> _ImageCounts:
        p, c = self.p, self.c
        labels = pred.labels
        cm2, gb, pb, inter = multiclass_boundary_counts(
            gt, labels, c, ignore_index=p.ignore_index, width=p.boundary_px
        )
        self.cm_strata += cm2
        self.contour += np.stack([gb, pb, inter])
        cm = cm2[0] + cm2[1]
        tp, fp, fn = confusion_tp_fp_fn(cm)
        support = tp + fn
        self._add_objects(lambda k: gt == k, lambda k: labels == k, support > 0)
        if pred.confidence is not None:
            counts, sums = multiclass_confidence_counts(
                pred.confidence, labels, gt, c, ignore_index=p.ignore_index, n_bins=p.confidence_bins
            )
            self.conf_counts += counts
            self.conf_sums += sums
            self.conf_images += 1
        n_valid = int(cm.sum())
        iou = class_scores(tp, fp, fn)["iou"]
        acc = float(tp.sum() / n_valid) if n_valid else None
        return _ImageCounts(cm, n_valid, iou, fp + fn, acc)

    def _add_multilabel(self, gt: np.ndarray, pred: Prediction) -> _ImageCounts:
        p = self.p
        labels = pred.labels
        counts = multilabel_counts(gt, labels)
        fn_b, fp_b, gb, pb, inter = multilabel_boundary_counts(gt, labels, width=p.boundary_px)
        self.ml_band += np.stack([fn_b, fp_b])
        self.contour += np.stack([gb, pb, inter])
        tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
        self._add_objects(lambda k: gt[k], lambda k: labels[k], (tp + fn) > 0)
        if pred.confidence is not None:
            cc, sums = multilabel_confidence_counts(
                pred.confidence, labels, gt, n_bins=p.confidence_bins
            )
            self.conf_counts += cc
            self.conf_sums += sums
            self.conf_images += 1
        n_valid = int(gt.shape[1] * gt.shape[2])
        iou = class_scores(tp, fp, fn)["iou"]
        return _ImageCounts(counts, n_valid, iou, fp + fn, _multilabel_accuracy(counts))

    # ----------------------------------------------------------------- finishing
    def _fold_metrics(self, fold: str, counts: np.ndarray, n_images: int, n_pixels: int) -> FoldMetrics:
        tp, fp, fn = _tp_fp_fn(counts, self.multiclass)
        s = class_scores(tp, fp, fn)
        classes = [
            ClassMetrics(
                class_index=k,
                name=name,
                iou=_none(s["iou"][k]),
                dice=_none(s["dice"][k]),
                precision=_none(s["precision"][k]),
                recall=_none(s["recall"][k]),
                support=int(tp[k] + fn[k]),
                predicted=int(tp[k] + fp[k]),
                tp=int(tp[k]),
                fp=int(fp[k]),
                fn=int(fn[k]),
            )
            for k, name in enumerate(self.p.classes)
        ]
        if not self.multiclass:
            acc = _multilabel_accuracy(counts)
        else:
            acc = float(tp.sum() / n_pixels) if n_pixels else None
        return FoldMetrics(
            fold=fold,
            n_images=n_images,
            n_pixels=n_pixels,
            mean_iou=_nanmean(s["iou"]),
            mean_dice=_nanmean(s["dice"]),
            pixel_accuracy=acc,
            classes=classes,
        )

    def _boundary(self) -> BoundaryAnalysis:
        c, names = self.c, self.p.classes
        if self.multiclass:
            per = []
            for cm in self.cm_strata:
                _, fp, fn = confusion_tp_fp_fn(cm)
                per.append(fp + fn)
            interior, band = per
            kinds = ERROR_KINDS if self.p.background is not None else ("wrong_class",)
            split = [
                {k: v for k, v in multiclass_taxonomy_counts(cm, self.p.background).items() if v is not None}
                for cm in self.cm_strata
            ]
            tax_int = {k: int(split[0][k].sum()) for k in kinds}
            tax_band = {k: int(split[1][k].sum()) for k in kinds}
            band_pixels: int | None = int(self.cm_strata[1].sum())
            all_pixels = int(self.cm_strata.sum())
            err_band = sum(tax_band.values())
            err_all = err_band + sum(tax_int.values())
        else:
            total = self._pooled()
            band = self.ml_band[0] + self.ml_band[1]
            interior = total[:, 1] + total[:, 2] - band
            tax_band = {
                "false_negatives": int(self.ml_band[0].sum()),
                "false_positives": int(self.ml_band[1].sum()),
            }
            tax_int = {
                "false_negatives": int(total[:, 2].sum()) - tax_band["false_negatives"],
                "false_positives": int(total[:, 1].sum()) - tax_band["false_positives"],
            }
            band_pixels, all_pixels = None, None
            err_band = sum(tax_band.values())
            err_all = err_band + sum(tax_int.values())
        g, pk, inter = self.contour
        union = g + pk - inter
        classes = []
        for k in range(c):
            errors = int(band[k] + interior[k])
            classes.append(
                ClassBoundary(
                    class_index=k,
                    name=names[k],
                    errors=errors,
                    boundary_errors=int(band[k]),
                    interior_errors=int(interior[k]),
                    boundary_share=float(band[k] / errors) if errors else None,
                    boundary_iou=float(inter[k] / union[k]) if union[k] else None,
                )
            )
        return BoundaryAnalysis(
            boundary_px=self.p.boundary_px,
            boundary_pixel_share=(band_pixels / all_pixels) if band_pixels is not None and all_pixels else None,
            classes=classes,
            taxonomy_boundary=tax_band,
            taxonomy_interior=tax_int,
            boundary_error_share=(err_band / err_all) if err_all else None,
        )

    def _objects(self) -> ObjectRecall:
        edges = self.edges.tolist()
        uppers = edges[1:] + [None]
        out = []
        for k in self.object_classes:
            n, f = self.objects[0, k], self.objects[1, k]
            bins = [
                SizeBin(
                    lower=lo,
                    upper=up,
                    objects=int(n[b]),
                    found=int(f[b]),
                    recall=float(f[b] / n[b]) if n[b] else None,
                )
                for b, (lo, up) in enumerate(zip(edges, uppers))
            ]
            tot_n, tot_f = int(n.sum()), int(f.sum())
            out.append(
                ClassObjects(
                    class_index=k,
                    name=self.p.classes[k],
                    objects=tot_n,
                    found=tot_f,
                    recall=tot_f / tot_n if tot_n else None,
                    bins=bins,
                )
            )
        return ObjectRecall(
            found_share=self.p.found_share, connectivity=self.p.connectivity, size_bins=edges, classes=out
        )

    def _worst(self) -> dict[str, list[WorstImage]]:
        out: dict[str, list[WorstImage]] = {}
        for k, name in enumerate(self.p.classes):
            rows = [
                (iou, -img.errors[k], img.image_id, img)
                for img in self.images
                if (iou := img.iou[k]) is not None
            ]
            rows.sort(key=lambda r: r[:3])
            out[name] = [
                WorstImage(image_id=r[3].image_id, fold=r[3].fold, iou=r[0], errors=-r[1])
                for r in rows[: self.p.worst_k]
            ]
        return out

    def _pooled(self) -> np.ndarray:
        """The counts over every image so far (set by the first :meth:`add`)."""
        if self.counts_total is None:
            raise DatasetError("no images to analyse; pass at least one (image_id, prediction, mask)")
        return self.counts_total

    def finish(self) -> AnalysisReport:
        if not self.images:
            raise DatasetError("no images to analyse; pass at least one (image_id, prediction, mask)")
        total = self._pooled()
        n_pixels = sum(img.n_pixels for img in self.images)
        pooled = self._fold_metrics("all", total, len(self.images), n_pixels)
        folds = [
            self._fold_metrics(f, self.fold_counts[f], self.fold_images[f], self.fold_pixels[f])
            for f in sorted(self.fold_counts)
        ]
        if self.multiclass:
            confusion = ConfusionSummary(counts=total.tolist(), normalized=normalize_rows(total).tolist())
            taxonomy = taxonomy_from_confusion(total, self.p.classes, background=self.p.background)
        else:
            confusion = None
            taxonomy = taxonomy_from_multilabel(total, self.p.classes)
        confidence = None
        if self.conf_images == len(self.images):
            confidence = confidence_report(
                self.conf_counts, self.conf_sums, self.p.classes, task=self.p.task
            )
        return AnalysisReport(
            parameters=self.p,
            n_images=len(self.images),
            pooled=pooled,
            folds=folds,
            confusion=confusion,
            taxonomy=taxonomy,
            boundary=self._boundary(),
            objects=self._objects(),
            confidence=confidence,
            images=self.images,
            worst_images=self._worst(),
        )


def _multilabel_accuracy(counts: np.ndarray) -> float | None:
    """Correct (pixel, class) decisions over all of them, as ``docs/metrics.md`` defines it."""
    total = int(counts.sum())
    return float((counts[:, 0].sum() + counts[:, 3].sum()) / total) if total else None


def _tp_fp_fn(counts: np.ndarray, multiclass: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if multiclass:
        return confusion_tp_fp_fn(counts)
    return counts[:, 0], counts[:, 1], counts[:, 2]
