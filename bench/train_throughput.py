"""Training throughput: segcore.fit through its data pipeline vs a minimal hand-written smp loop.

Same model (Unet-resnet18, random init), loss (CE), optimizer (AdamW, same lr), batch and image size.

(a) hand loop: pre-generated tensors (the real images, decoded and resized once, held in memory), fp32, NCHW.
(b) segcore.fit at the same precision and memory format (fp32, NCHW), reading the images from disk
    through its data pipeline (decode, resize, flip, normalise) every step.
(c) segcore.fit with its CPU defaults (channels_last + bf16 autocast where the CPU supports it).

Both loops train the same number of steps from the same seed; each run's validation mIoU is printed, so a
default that costs accuracy shows up. Dataset: Stanford Background from ../shared/data when present
(override with SEGBOARD_BENCH_DATA=/path/to/stanford-background), else a synthetic dataset.

Usage: python bench/train_throughput.py [--steps 40] [--repeats 3] [--threads 2] [--size 224 320]
Last line: JSON with images/s of each, ratio_equal (b/a, target >= 1.0), ratio_defaults (c/a, target >= 1.5).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from segcore.config import parse_config
from segcore.data.formats import open_dataset
from segcore.data.splits import split_ids
from segcore.metrics import MetricAccumulator
from segcore.training import fit

ROOT = Path(__file__).resolve().parents[1]
SIZE = (224, 320)
BATCH = 8
LR = 2e-3
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _dataset_config(steps: int) -> dict:
    root = os.environ.get("SEGBOARD_BENCH_DATA") or str(ROOT.parent / "shared" / "data" / "stanford-background")
    if Path(root, "images").is_dir():
        return {
            "source": {"format": "mask_folder", "root": root, "ignore_value": 255},
            "classes": ["sky", "tree", "road", "grass", "water", "building", "mountain", "foreground"],
            "image_size": list(SIZE),
            "split": {"kind": "predefined", "train": "splits/train.txt", "val": "splits/val.txt"},
        }
    from segcore.data.synthetic import make_synthetic_coco

    tmp = Path(tempfile.mkdtemp(prefix="bench-data-"))
    src = make_synthetic_coco(tmp, num_images=max(64, steps * BATCH // 4), num_classes=5, size=SIZE[1], seed=0)
    return {
        "source": src.model_dump(mode="json"),
        "classes": ["background"] + [f"c{i}" for i in range(1, 6)],
        "image_size": list(SIZE),
        "split": {"kind": "holdout", "val_fraction": 0.2},
    }


def _config(data: dict, *, steps: int, seed: int, defaults: bool):
    return parse_config(
        {
            "name": "bench",
            "data": data,
            "model": {"arch": "Unet", "encoder": "resnet18", "encoder_weights": None},
            "loss": "ce",
            "augmentation": {"preset": "flips", "normalize": "imagenet"},
            "optimizer": {"name": "adamw", "lr": LR, "weight_decay": 1e-4},
            "scheduler": {"name": "constant"},
            "training": {
                "epochs": 1,
                "batch_size": BATCH,
                "steps_per_epoch": steps,
                "seed": seed,
                "precision": "auto" if defaults else "fp32",
                "channels_last": None if defaults else False,
            },
        }
    )


def _load_tensors(cfg, ids):
    """Decode, resize and normalise images once (the hand loop's 'pre-generated tensors')."""
    ds = open_dataset(cfg.data.source, classes=cfg.data.classes, task=cfg.data.task, ignore_index=255)
    xs, ys = [], []
    for i in ids:
        img = torch.from_numpy(ds.load_image(i)).permute(2, 0, 1)[None].float() / 255
        img = F.interpolate(img, size=SIZE, mode="bilinear", align_corners=False)[0]
        img = (img - torch.from_numpy(MEAN)[:, None, None]) / torch.from_numpy(STD)[:, None, None]
        m = torch.from_numpy(ds.load_mask(i).astype(np.int64))[None, None].float()
        m = F.interpolate(m, size=SIZE, mode="nearest")[0, 0].long()
        xs.append(img)
        ys.append(m)
    return torch.stack(xs), torch.stack(ys), ds


def hand_loop(x: torch.Tensor, y: torch.Tensor, *, steps: int, seed: int, num_classes: int):
    torch.manual_seed(seed)
    model = smp.Unet("resnet18", encoder_weights=None, classes=num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    g = torch.Generator().manual_seed(seed)
    model.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (BATCH,), generator=g)
        xb, yb = x[idx], y[idx]
        if torch.rand(1, generator=g).item() < 0.5:
            xb, yb = xb.flip(-1), yb.flip(-1)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
    dt = time.perf_counter() - t0
    return model, steps * BATCH / dt


@torch.no_grad()
def val_miou(model, x, y, num_classes) -> float:
    model.eval()
    acc = MetricAccumulator(task="multiclass", num_classes=num_classes, ignore_index=255, device="cpu")
    for i in range(0, x.shape[0], BATCH):
        acc.update(model(x[i : i + BATCH]), y[i : i + BATCH])
    return float(acc.compute()["miou"])


def main() -> None:
    global SIZE
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--val-images", type=int, default=64)
    ap.add_argument("--size", type=int, nargs=2, default=SIZE, help="training size (height width)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    SIZE = tuple(args.size)

    data = _dataset_config(args.steps)
    base = _config(data, steps=args.steps, seed=0, defaults=False)
    ds = open_dataset(base.data.source, classes=base.data.classes, task=base.data.task, ignore_index=255)
    train_ids, val_ids = split_ids(ds, base.data.split)
    x_train, y_train, _ = _load_tensors(base, train_ids)
    x_val, y_val, _ = _load_tensors(base, val_ids[: args.val_images])
    n_cls = base.data.num_classes

    hand, equal, defaults = [], [], []
    miou = {"hand": [], "segcore_fp32": [], "segcore_defaults": []}
    for rep in range(args.repeats):
        model, ips = hand_loop(x_train, y_train, steps=args.steps, seed=rep, num_classes=n_cls)
        hand.append(ips)
        miou["hand"].append(val_miou(model, x_val, y_val, n_cls))
        for name, flag, bucket in (("segcore_fp32", False, equal), ("segcore_defaults", True, defaults)):
            cfg = _config(data, steps=args.steps, seed=rep, defaults=flag)
            with tempfile.TemporaryDirectory() as wd:
                res = fit(cfg, wd, write_val_store=False)
                bucket.append(res.images_per_s)
                from segcore.checkpoint import load_checkpoint

                ck = load_checkpoint(Path(wd) / "checkpoints" / "last")
                miou[name].append(val_miou(ck.model, x_val, y_val, n_cls))
        print(
            f"repeat {rep}: hand {hand[-1]:.2f} img/s, segcore fp32 {equal[-1]:.2f} img/s, "
            f"segcore defaults {defaults[-1]:.2f} img/s",
            flush=True,
        )

    med = statistics.median
    out = {
        "steps": args.steps,
        "batch": BATCH,
        "size": list(SIZE),
        "threads": args.threads,
        "hand_loop_images_per_s": round(med(hand), 3),
        "segcore_fp32_nchw_images_per_s": round(med(equal), 3),
        "segcore_defaults_images_per_s": round(med(defaults), 3),
        "val_miou_median": {k: round(med(v), 4) for k, v in miou.items()},
        "ratio_equal": round(med(equal) / med(hand), 3),
        "ratio_defaults": round(med(defaults) / med(hand), 3),
        "targets": {"ratio_equal": 1.0, "ratio_defaults": 1.5, "max_miou_loss_points": 1.0},
        "ratio": round(med(defaults) / med(hand), 3),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
