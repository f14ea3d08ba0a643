"""The 'fast' recipe vs a plain hand-written smp baseline on Stanford Background, at equal epochs.

Baseline (what a team writes first): Unet-resnet18 from scratch, cross-entropy, Adam (lr 1e-3) with cosine
decay, random crops + horizontal flips, fp32, its own PIL/numpy data loading.
Recipe: ``segcore/recipes/fast.yaml`` through ``segcore.fit``.

Both train on the dataset's predefined train split at the same image size and are scored the same way: dataset
mIoU on the val split resized to that size (masks nearest), ignoring label 255. Median of ``--seeds`` seeds each.

Usage: python bench/recipe_vs_baseline.py [--epochs 5] [--seeds 3] [--size 128 160] [--threads 2]
Needs ../shared/data/stanford-background (or SEGBOARD_BENCH_DATA). Last line: JSON with both medians and
ratio = recipe / baseline (higher is better).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
from PIL import Image

from segcore.config import parse_config
from segcore.metrics import MetricAccumulator
from segcore.recipes import load_recipe
from segcore.training import fit

ROOT = Path(__file__).resolve().parents[1]
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _load_split(root: Path, name: str, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = (root / "splits" / f"{name}.txt").read_text().split()
    xs, ys = [], []
    for i in ids:
        img = Image.open(root / "images" / f"{i}.jpg").convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
        m = Image.open(root / "masks" / f"{i}.png").resize((size[1], size[0]), Image.NEAREST)
        xs.append(((np.asarray(img, dtype=np.float32) / 255 - MEAN) / STD).transpose(2, 0, 1))
        ys.append(np.asarray(m, dtype=np.int64))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


@torch.no_grad()
def _miou(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    acc = MetricAccumulator(task="multiclass", num_classes=8, ignore_index=255, device="cpu")
    for i in range(0, len(x), 16):
        acc.update(model(x[i : i + 16]), y[i : i + 16])
    return float(acc.compute()["miou"])


def baseline(x, y, xv, yv, *, epochs: int, seed: int, batch: int, crop: tuple[int, int]) -> float:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = smp.Unet("resnet18", encoder_weights=None, classes=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = epochs * (len(x) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    h, w = x.shape[-2:]
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(x))
        for b in range(len(x) // batch):
            idx = order[b * batch : (b + 1) * batch]
            top, left = rng.integers(0, h - crop[0] + 1), rng.integers(0, w - crop[1] + 1)
            xb = x[idx, :, top : top + crop[0], left : left + crop[1]]
            yb = y[idx, top : top + crop[0], left : left + crop[1]]
            if rng.random() < 0.5:
                xb, yb = xb.flip(-1), yb.flip(-1)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            opt.step()
            sched.step()
    return _miou(model, xv, yv)


def recipe(data_root: Path, xv, yv, *, epochs: int, seed: int, size: tuple[int, int]) -> float:
    cfg = load_recipe("fast").to_dict()
    cfg["data"]["source"]["root"] = str(data_root)
    cfg["data"]["image_size"] = list(size)
    cfg["training"].update(epochs=epochs, seed=seed)
    with tempfile.TemporaryDirectory() as wd:
        res = fit(parse_config(cfg), wd, write_val_store=False)
        return float(res.last_metrics["miou"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--size", type=int, nargs=2, default=(128, 160))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["baseline", "recipe"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    size = tuple(args.size)
    root = Path(os.environ.get("SEGBOARD_BENCH_DATA") or ROOT.parent / "shared" / "data" / "stanford-background")
    if not (root / "images").is_dir():
        raise SystemExit(f"{root} not found: set SEGBOARD_BENCH_DATA to the stanford-background folder")
    x, y = _load_split(root, "train", size)
    xv, yv = _load_split(root, "val", size)
    crop = (size[0] * 3 // 4 // 32 * 32, size[1] * 3 // 4 // 32 * 32)
    base, rec = [], []
    for seed in range(args.seeds):
        if args.only != "recipe":
            t0 = time.perf_counter()
            base.append(baseline(x, y, xv, yv, epochs=args.epochs, seed=seed, batch=8, crop=crop))
            print(f"seed {seed}: baseline mIoU {base[-1]:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if args.only != "baseline":
            t0 = time.perf_counter()
            rec.append(recipe(root, xv, yv, epochs=args.epochs, seed=seed, size=size))
            print(f"seed {seed}: recipe mIoU {rec[-1]:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    med = lambda v: statistics.median(v) if v else math.nan  # noqa: E731
    out = {
        "epochs": args.epochs,
        "size": list(size),
        "seeds": args.seeds,
        "baseline_miou": [round(v, 4) for v in base],
        "recipe_miou": [round(v, 4) for v in rec],
        "baseline_median": round(med(base), 4),
        "recipe_median": round(med(rec), 4),
        "ratio": round(med(rec) / med(base), 4) if base and rec else None,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
