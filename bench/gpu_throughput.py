"""GPU training throughput: segcore.fit through its data pipeline vs a hand-written loop on GPU-resident tensors.

Same on both sides: smp Unet-resnet18 (random init), 11 classes, batch 16, 384x480 images, bf16 autocast,
channels_last, CE loss, AdamW (same lr and weight decay, constant lr).

(a) hand loop (the peer): every training image decoded once and held on the GPU as uint8 [N, 3, H, W] with
    uint8 masks; each step indexes a batch on the GPU, normalises it there, forward/backward/step, with no
    host sync per step. ~10 warm-up steps, then >= 100 timed steps between torch.cuda.synchronize() calls.
(b) segcore.fit on the same images, read from disk every step: JPEG decoding (PIL) and normalisation in
    DataLoader workers are part of its figure. 3 epochs of 100 steps; the figure is the median of epochs
    2..3 of ``result.history[i].images_per_s`` (epoch 1 includes warm-up).

Data: a synthetic mask-folder dataset written to a temp folder by a process pool: smooth colour fields with
random filled shapes (ellipses, rotated boxes, polygons), 11 classes (0 = background), shape outlines 255 =
ignored; 1600 training + 64 validation images (JPEG quality 90, PNG masks).

Usage: python bench/gpu_throughput.py [--workers 8] [--procs 16]
       python bench/gpu_throughput.py --device cpu --quick     (tiny sizes, fp32: exercises the logic on a CPU)
Without CUDA (and without --device cpu) it says so and exits 0.
Last line: JSON with hand_img_s, segcore_img_s and ratio (segcore / hand, higher is better).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# torch, smp and segcore are imported inside the functions that use them: the data-writing pool is
# started with 'spawn' (no fork after CUDA or torch threads start), and each spawned worker re-imports
# this file, so keeping its top level light keeps the pool's start-up under a second.

NUM_CLASSES = 11
CLASSES = ["background"] + [f"class_{i}" for i in range(1, NUM_CLASSES)]
IGNORE = 255
LR = 1e-3
WEIGHT_DECAY = 1e-4
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# one base colour per class, so shapes are learnable from colour and the loss falls like a real one
PALETTE = np.array(
    [[90, 110, 100], [220, 60, 50], [60, 200, 70], [50, 80, 220], [230, 210, 60], [200, 70, 200],
     [60, 210, 210], [240, 150, 40], [140, 90, 40], [250, 250, 250], [20, 20, 20]],
    dtype=np.float32,
)


@dataclass(frozen=True)
class Setup:
    size: tuple[int, int]  # (height, width)
    train_images: int
    val_images: int
    batch: int
    hand_warmup: int
    hand_steps: int
    epochs: int
    steps_per_epoch: int | None  # None: the whole training set (train_images // batch)


FULL = Setup(size=(384, 480), train_images=1600, val_images=64, batch=16, hand_warmup=10, hand_steps=100,
             epochs=3, steps_per_epoch=None)
QUICK = Setup(size=(64, 96), train_images=32, val_images=8, batch=4, hand_warmup=2, hand_steps=4,
              epochs=2, steps_per_epoch=4)


# ---------------------------------------------------------------- synthetic data


def _shape_points(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random ellipse, rotated box or star-like polygon, as int32 polygon points."""
    cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
    r = float(rng.uniform(min(h, w) / 12, min(h, w) / 4))
    angle = float(rng.uniform(0, 180))
    kind = int(rng.integers(3))
    if kind == 0:
        axes = (int(r), int(r * rng.uniform(0.4, 1.0)))
        return cv2.ellipse2Poly((int(cx), int(cy)), axes, int(angle), 0, 360, 8).astype(np.int32)
    if kind == 1:
        box = ((cx, cy), (2 * r, 2 * r * float(rng.uniform(0.3, 1.0))), angle)
        return cv2.boxPoints(box).astype(np.int32)
    n = int(rng.integers(5, 10))
    theta = np.sort(rng.uniform(0, 2 * np.pi, n))
    radius = r * rng.uniform(0.5, 1.0, n)
    return np.stack([cx + radius * np.cos(theta), cy + radius * np.sin(theta)], axis=1).astype(np.int32)


def _write_sample(job: tuple[str, str, int, int, int]) -> None:
    """Write ``images/<stem>.jpg`` and ``masks/<stem>.png`` under ``root`` (run in a pool worker)."""
    root, stem, h, w, seed = job
    rng = np.random.default_rng(seed)
    # background: a smooth colour field (a coarse random grid upsampled bicubically), class 0
    grid = rng.uniform(60, 180, size=(4, 5, 3)).astype(np.float32)
    img = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    mask = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(3, 9))):
        cls = int(rng.integers(1, NUM_CLASSES))
        pts = _shape_points(rng, h, w)
        colour = np.clip(PALETTE[cls] + rng.normal(0, 15, 3), 0, 255).tolist()
        cv2.fillPoly(img, [pts], colour, lineType=cv2.LINE_AA)
        cv2.fillPoly(mask, [pts], cls)
        cv2.polylines(mask, [pts], True, IGNORE, 2)  # uncertain boundary, as in VOC
    img = cv2.GaussianBlur(img, (5, 5), 0) + rng.normal(0, 4, img.shape).astype(np.float32)
    bgr = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    cv2.imwrite(os.path.join(root, "images", f"{stem}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(os.path.join(root, "masks", f"{stem}.png"), mask)


def _init_writer() -> None:
    cv2.setNumThreads(1)  # one process per core already


def make_dataset(root: Path, setup: Setup, *, procs: int) -> tuple[list[str], list[str]]:
    """Write the synthetic mask-folder dataset with a predefined split; returns (train stems, val stems)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "splits").mkdir()
    n = setup.train_images + setup.val_images
    stems = [f"s{i:05d}" for i in range(n)]
    h, w = setup.size
    jobs = [(str(root), s, h, w, i) for i, s in enumerate(stems)]
    with mp.get_context("spawn").Pool(procs, initializer=_init_writer) as pool:
        pool.map(_write_sample, jobs, chunksize=max(1, n // (procs * 4)))
    train, val = stems[: setup.train_images], stems[setup.train_images :]
    (root / "splits" / "train.txt").write_text("\n".join(train) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(val) + "\n")
    return train, val


# ---------------------------------------------------------------- (a) hand loop


def load_to_device(root: Path, stems: list[str], device):
    """Decode every image and mask once (PIL, as segcore reads them) into uint8 tensors on ``device``."""
    import torch
    from PIL import Image

    def read(stem: str) -> tuple[np.ndarray, np.ndarray]:
        with Image.open(root / "images" / f"{stem}.jpg") as im:
            img = np.asarray(im.convert("RGB"))
        with Image.open(root / "masks" / f"{stem}.png") as m:
            return img, np.asarray(m)

    with ThreadPoolExecutor(max(1, min(16, os.cpu_count() or 1))) as ex:
        pairs = list(ex.map(read, stems))
    x = torch.from_numpy(np.stack([p[0] for p in pairs])).to(device).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(np.stack([p[1] for p in pairs])).to(device)
    return x, y


def hand_loop(x, y, setup: Setup, *, device, bf16: bool, seed: int = 0) -> tuple[float, float]:
    """Train on GPU-resident uint8 tensors; returns (images/s over the timed steps, last loss)."""
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(seed)
    model = smp.Unet("resnet18", encoder_weights=None, classes=NUM_CLASSES).to(device)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255
    total = setup.hand_warmup + setup.hand_steps
    # batch indices drawn up front on the device: no host round trip inside the loop
    gen = torch.Generator(device=device).manual_seed(seed)
    order = torch.randint(0, x.shape[0], (total, setup.batch), device=device, generator=gen)
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    )
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(i: int):
        idx = order[i]
        xb = ((x[idx].float() - mean) / std).contiguous(memory_format=torch.channels_last)
        yb = y[idx].long()
        with autocast:
            logits = model(xb)
        loss = loss_fn(logits.float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    model.train()
    for i in range(setup.hand_warmup):
        step(i)
    sync()
    t0 = time.perf_counter()
    for i in range(setup.hand_warmup, total):
        loss = step(i)
    sync()
    dt = time.perf_counter() - t0
    return setup.hand_steps * setup.batch / dt, float(loss)


# ---------------------------------------------------------------- (b) segcore.fit


def segcore_config(root: Path, setup: Setup, *, device: str, bf16: bool, workers: int, seed: int = 0,
                   compile_model: bool = False):
    """The 'fast' recipe with this benchmark's data, model, loss and training settings."""
    from segcore.config import parse_config
    from segcore.recipes import load_recipe

    cfg = load_recipe("fast").to_dict()
    cfg["name"] = "bench-gpu-throughput"
    cfg["data"] = {
        "source": {"format": "mask_folder", "root": str(root), "images": "images", "masks": "masks",
                   "ignore_value": IGNORE},
        "task": "multiclass",
        "classes": CLASSES,
        "ignore_index": IGNORE,
        "image_size": None,  # every image is already setup.size
        "crop_size": None,
        "split": {"kind": "predefined", "train": "splits/train.txt", "val": "splits/val.txt"},
    }
    cfg["model"] = {"arch": "Unet", "encoder": "resnet18", "encoder_weights": None}
    cfg["loss"] = "ce"
    cfg["augmentation"] = {"preset": "none", "transforms": [], "normalize": "imagenet"}
    cfg["optimizer"] = {"name": "adamw", "lr": LR, "weight_decay": WEIGHT_DECAY}
    cfg["scheduler"] = {"name": "constant"}
    cfg["training"].update(
        device=device,
        precision="bf16" if bf16 else "fp32",
        channels_last=True,
        batch_size=setup.batch,
        num_workers=workers,
        epochs=setup.epochs,
        steps_per_epoch=setup.steps_per_epoch,
        seed=seed,
        checkpoint_every=setup.epochs,  # one checkpoint at the end (outside the timed epochs anyway)
        compile=compile_model,
    )
    cfg["evaluation"] = {**cfg["evaluation"], "every": setup.epochs}
    cfg["tags"] = ["bench"]
    return parse_config(cfg)


def run_segcore(root: Path, setup: Setup, *, device: str, bf16: bool, workers: int, compile_model: bool = False):
    from segcore.training import fit

    cfg = segcore_config(root, setup, device=device, bf16=bf16, workers=workers, compile_model=compile_model)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-run-") as wd:
        return fit(cfg, wd, write_val_store=False)


# ---------------------------------------------------------------- main


def _skip(reason: str) -> None:
    print(f"gpu_throughput skipped: {reason}")
    print(json.dumps({"bench": "gpu_throughput", "skipped": True, "reason": reason}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="'cuda', 'cuda:N' or 'cpu' (cpu: fp32, for --quick checks)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (64x96, 40 images, batch 4, a few steps)")
    ap.add_argument("--workers", type=int, default=None, help="segcore DataLoader workers (default 8; quick 2)")
    ap.add_argument("--procs", type=int, default=None, help="processes writing the data (default: all cores)")
    ap.add_argument("--compile", action="store_true",
                    help="segcore with training.compile (the hand loop stays eager); reports the warm-up")
    args = ap.parse_args()
    t_start = time.perf_counter()
    setup = QUICK if args.quick else FULL
    workers = args.workers if args.workers is not None else (2 if args.quick else 8)
    procs = args.procs or os.cpu_count() or 1

    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        _skip("no CUDA device is visible (run on a GPU machine, or pass --device cpu --quick to check the logic)")
        return
    cuda = device.type == "cuda"
    bf16 = cuda  # bf16 autocast on the GPU; the CPU check runs fp32
    device_name = torch.cuda.get_device_name(device) if cuda else "cpu"

    with tempfile.TemporaryDirectory(prefix="bench-gpu-data-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        train, _val = make_dataset(root, setup, procs=procs)
        t_data = time.perf_counter() - t0
        print(f"data: {setup.train_images}+{setup.val_images} images {setup.size[0]}x{setup.size[1]} "
              f"(JPEG + PNG masks, {NUM_CLASSES} classes) written in {t_data:.1f} s by {procs} processes", flush=True)

        t0 = time.perf_counter()
        x, y = load_to_device(root, train, device)
        hand_ips, hand_loss = hand_loop(x, y, setup, device=device, bf16=bf16)
        t_hand = time.perf_counter() - t0
        del x, y
        if cuda:
            torch.cuda.empty_cache()
        print(f"hand loop: {hand_ips:.1f} img/s over {setup.hand_steps} steps after {setup.hand_warmup} warm-up "
              f"(last loss {hand_loss:.3f}; {t_hand:.1f} s with loading)", flush=True)

        t0 = time.perf_counter()
        result = run_segcore(root, setup, device=args.device, bf16=bf16, workers=workers,
                             compile_model=args.compile)
        t_seg = time.perf_counter() - t0

    per_epoch = [r.images_per_s for r in result.history]
    timed = per_epoch[1:] or per_epoch  # epoch 1 includes warm-up (cuDNN/allocator, worker start)
    seg_ips = statistics.median(timed)
    steps_per_epoch = setup.steps_per_epoch or setup.train_images // setup.batch
    for r in result.history:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in r.timings.items())
        print(f"segcore epoch {r.epoch}: {r.images_per_s:.1f} img/s, train loss {r.train_loss:.3f} ({parts})")
    miou = result.last_metrics.get("miou")
    print(f"segcore: {seg_ips:.1f} img/s (median of epochs 2..{len(per_epoch)}; {steps_per_epoch} steps/epoch, "
          f"{workers} workers; val mIoU {miou if miou is None else round(float(miou), 4)}; {t_seg:.1f} s in all)")
    print("note: segcore's figure includes JPEG decoding and normalisation in its DataLoader workers; the hand "
          "loop's images were decoded once and sit on the device as uint8.")
    ratio = seg_ips / hand_ips
    print(f"ratio segcore/hand: {ratio:.3f} on {device_name} "
          f"({'bf16' if bf16 else 'fp32'}, channels_last, batch {setup.batch}, {setup.size[0]}x{setup.size[1]})")
    out = {
        "bench": "gpu_throughput",
        "hand_img_s": round(hand_ips, 2),
        "segcore_img_s": round(seg_ips, 2),
        "ratio": round(ratio, 3),
        "batch": setup.batch,
        "size": list(setup.size),
        "device": device_name,
        "decoding_included": True,
        "segcore_epoch_img_s": [round(v, 2) for v in per_epoch],
        "segcore_steps_per_epoch": steps_per_epoch,
        "hand_steps": setup.hand_steps,
        "train_images": setup.train_images,
        "num_workers": workers,
        "precision": "bf16" if bf16 else "fp32",
        "channels_last": True,
        "quick": args.quick,
        "segcore_compile": args.compile,
        "segcore_epoch_timings": [r.timings for r in result.history],
        "torch": torch.__version__,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
