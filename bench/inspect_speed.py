"""Speed of segcore.analysis: a full analysis and one 2048x2048 overlay.

- analysis: ``analyze`` over 100 images of 512x512 with 12 classes (blob ground truth, noisy
  softmax probabilities, all generated in memory before timing); target 10 s on 2 cores.
- overlay: ``render_overlay`` of one 2048x2048 image from 12-class probabilities; target 1 s.

There is no peer library, so each figure is compared with its target: ratio = target / measured
(higher is better). The last line printed is one JSON object. Run:

    python bench/inspect_speed.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import cv2
import numpy as np

from segcore.analysis import analyze, render_overlay

ANALYSIS_TARGET_S = 10.0
OVERLAY_TARGET_S = 1.0


def blob_mask(rng: np.random.Generator, size: int, num_classes: int, n_blobs: int) -> np.ndarray:
    """``size x size`` uint8 map: background 0 with ellipses of random classes, some tiny."""
    gt = np.zeros((size, size), dtype=np.uint8)
    for _ in range(n_blobs):
        cls = int(rng.integers(1, num_classes))
        centre = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        radius = int(rng.choice([3, 8, 20, 45, 90]))
        axes = (radius, max(2, int(radius * rng.uniform(0.4, 1.0))))
        cv2.ellipse(gt, centre, axes, float(rng.uniform(0, 180)), 0, 360, cls, -1)
    gt[rng.random((size, size)) < 0.002] = 255  # a few unlabelled pixels
    return gt


def noisy_probs(rng: np.random.Generator, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """``CxHxW`` float32 softmax of one-hot logits plus smooth noise (errors near edges and blobs)."""
    h, w = gt.shape
    onehot = np.zeros((num_classes, h, w), dtype=np.float32)
    labels = np.where(gt == 255, 0, gt)
    np.put_along_axis(onehot, labels[None].astype(np.int64), 4.5, axis=0)
    small = rng.normal(0.0, 2.0, (num_classes, h // 16, w // 16)).astype(np.float32)
    noise = np.stack([cv2.resize(s, (w, h), interpolation=cv2.INTER_LINEAR) for s in small])
    logits = onehot + noise + rng.normal(0.0, 0.5, (num_classes, h, w)).astype(np.float32)
    logits -= logits.max(axis=0, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=0, keepdims=True)
    return logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=100)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    num_classes, size = 12, 512
    classes = ["background"] + [f"class_{k}" for k in range(1, num_classes)]
    samples = []
    for i in range(args.images):
        gt = blob_mask(rng, size, num_classes, n_blobs=int(rng.integers(5, 25)))
        samples.append((f"img{i:03d}", noisy_probs(rng, gt, num_classes), gt))
    folds = {image_id: i % 5 for i, (image_id, _, _) in enumerate(samples)}

    big_gt = blob_mask(rng, 2048, num_classes, n_blobs=120)
    big_probs = noisy_probs(rng, big_gt, num_classes)
    big_image = rng.integers(0, 256, (2048, 2048, 3), dtype=np.uint8)

    analysis_times, overlay_times = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        report = analyze(samples, task="multiclass", classes=classes, folds=folds)
        analysis_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        render_overlay(big_image, big_gt, big_probs, num_classes=num_classes, alpha=0.5)
        overlay_times.append(time.perf_counter() - t0)
    analysis_s = statistics.median(analysis_times)
    overlay_s = statistics.median(overlay_times)
    print(f"analysis of {args.images} images 512x512, 12 classes: {analysis_s:.3f} s "
          f"(runs {', '.join(f'{t:.3f}' for t in analysis_times)}); "
          f"pooled mIoU {report.pooled.mean_iou:.3f}")
    print(f"overlay 2048x2048: {overlay_s:.3f} s (runs {', '.join(f'{t:.3f}' for t in overlay_times)})")
    print(json.dumps({
        "analysis_s": round(analysis_s, 4),
        "analysis_target_s": ANALYSIS_TARGET_S,
        "analysis_ratio": round(ANALYSIS_TARGET_S / analysis_s, 3),
        "overlay_s": round(overlay_s, 4),
        "overlay_target_s": OVERLAY_TARGET_S,
        "overlay_ratio": round(OVERLAY_TARGET_S / overlay_s, 3),
        "repeats": args.repeats,
    }))


if __name__ == "__main__":
    main()
