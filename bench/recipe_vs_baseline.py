"""A recipe vs the hand-written baseline at equal epochs on every dataset in ../shared/data, at full resolution.

The protocol (issue 14), one table at the end and a JSON last line:

- **stanford-background**: its predefined split (572 train / 143 val), 3 seeds x 20 epochs; each side's
  median mIoU and its spread (min..max) over seeds, and the per-seed difference recipe - baseline.
- **fruits-nuts-coco** and **isbi2012-membrane** (18 and 30 images, too few for seeds to separate results from
  noise): 5-fold cross-validation (segcore's fold assignment, seed 0, the same folds for both sides), 20
  epochs, seed 0; the paired per-fold difference recipe - baseline, its median and spread (min..max). The
  recipe passes a dataset when the median difference is >= 0.
- Rare classes: the per-class IoU of the two classes with the smallest pixel share (median over seeds/folds).

Both sides are scored by one scorer, on the final weights (no checkpoint chosen on the scored images): every
held-out image whole, at its own resolution (padded to a multiple of 32, logits cropped back), dataset mIoU
over labelled pixels, label 255 ignored.

Baseline (what a team writes first; no segcore training code, only segcore's file readers): Unet-resnet18 from
scratch, cross-entropy, Adam 1e-3 with per-step cosine decay to 0, random 256x256 crops (smaller images
padded: pixels 0, mask ignored) + horizontal flips, batch 8; in the precision the recipe trains in (bf16 autocast +
channels_last on a CPU with native bf16, else fp32; ``--baseline-precision``), so that precision is not part of the
difference. The ``baseline`` recipe is the same loop.
Recipe: ``segcore/recipes/<--recipe>.yaml`` with only its ``data`` section pointed at the dataset (classes,
source, split), its ``auto`` values resolved for the training split by ``segcore.data.policy`` and trained by
``segcore.fit``. fit's own validation sees a single held-out image (validation every ``epochs`` epochs), so its
checkpoint is the final model and none of its choices see the scored images.

Usage:
    python bench/recipe_vs_baseline.py --quick --datasets stanford-background   # a first look, minutes
    python bench/recipe_vs_baseline.py                                          # the protocol (hours on a CPU)
Options: --recipe NAME or a config's YAML path (default fast; ``--recipe baseline`` checks segcore against the hand
loop), --datasets,
--epochs, --seeds, --folds (how many of the 5 folds to run), --max-train/--max-val (subsample), --threads.
``--quick`` = 3 epochs, 1 seed, 2 of the 5 folds, at most 64 training and 48 held-out images per run.
Needs ../shared/data (or SEGBOARD_BENCH_DATA). Runs on the CPU; not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from segcore.checkpoint import load_checkpoint
from segcore.config import (
    CocoSource,
    KFoldSplit,
    MaskFolderSource,
    PredefinedSplit,
    TrainingConfig,
    load_config,
    parse_config,
)
from segcore.data.formats import SegDataset, open_dataset
from segcore.data.policy import resolve_data_policy
from segcore.data.splits import fold_assignment, split_ids
from segcore.data.statistics import pixel_shares
from segcore.data.transforms import normalization
from segcore.metrics import MetricAccumulator
from segcore.recipes import load_recipe
from segcore.training import fit

ROOT = Path(__file__).resolve().parents[1]
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
IGNORE = 255
N_FOLDS = 5


@dataclass(frozen=True)
class Bench:
    """One shared dataset and how it is evaluated: ``seeds`` on a predefined split or k-``folds``."""

    name: str
    source: Any
    classes: list[str]
    protocol: str


def _benches(data: Path) -> dict[str, Bench]:
    sb = data / "stanford-background"
    return {
        b.name: b
        for b in (
            Bench("stanford-background", MaskFolderSource(root=str(sb), ignore_value=IGNORE),
                  ["sky", "tree", "road", "grass", "water", "building", "mountain", "foreground object"], "seeds"),
            Bench("fruits-nuts-coco",
                  CocoSource(root=str(data / "fruits-nuts-coco"), annotations="trainval.json", images="images"),
                  ["background", "date", "fig", "hazelnut"], "folds"),
            Bench("isbi2012-membrane",
                  MaskFolderSource(root=str(data / "isbi2012-membrane" / "train"), images="image", masks="label",
                                   value_map={0: 0, 255: 1}),
                  ["membrane", "cell"], "folds"),
        )
    }


def _subsample(ids: list[str], n: int | None) -> list[str]:
    if n is None or len(ids) <= n:
        return ids
    return [ids[k] for k in np.linspace(0, len(ids) - 1, n).round().astype(int)]


# ------------------------------------------------------------------ the one scorer


@torch.no_grad()
def score(model: torch.nn.Module, ds: SegDataset, ids: list[str], norm: tuple[Any, Any]) -> dict[str, Any]:
    """Dataset mIoU and per-class IoU of ``model`` on whole images at their own resolution."""
    model.eval()
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in norm)
    acc = MetricAccumulator(task="multiclass", num_classes=ds.num_classes, ignore_index=IGNORE, device="cpu")
    for i in ids:
        x = torch.from_numpy(np.array(ds.load_image(i))).permute(2, 0, 1)[None].float() / 255
        x = (x - mean) / std
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % 32, 0, (-h) % 32), mode="reflect")
        logits = model(x)[..., :h, :w]
        acc.update(logits, torch.from_numpy(ds.load_mask(i).astype(np.int64))[None])
    out = acc.compute()
    return {"miou": out["miou"], "iou": out["per_class"]["iou"]}


# ------------------------------------------------------------------ the two sides


def _random_crop(image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    h, w = mask.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        image = np.pad(image, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
        mask = np.pad(mask, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), constant_values=IGNORE)
        h, w = mask.shape
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    image, mask = image[top : top + size, left : left + size], mask[top : top + size, left : left + size]
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    return image, mask


def baseline(ds: SegDataset, train_ids: list[str], *, epochs: int, seed: int, batch: int = 8,
             crop: int = 256, bf16: bool = False) -> torch.nn.Module:
    """The hand loop; returns the final model. ``bf16``: autocast and channels_last, as a team does on fast hardware."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = [(ds.load_image(i), ds.load_mask(i)) for i in train_ids]
    mean, std = (np.array(v, dtype=np.float32) for v in IMAGENET)
    model = smp.Unet("resnet18", encoder_weights=None, classes=ds.num_classes)
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = max(1, len(data) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(data))
        for b in range(steps):
            pairs = [_random_crop(*data[k], crop, rng) for k in order[b * batch : (b + 1) * batch]]
            x = np.stack([((im.astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1) for im, _ in pairs])
            y = np.stack([m.astype(np.int64) for _, m in pairs])
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model(torch.from_numpy(x).contiguous(memory_format=fmt)), torch.from_numpy(y))
            loss.backward()
            opt.step()
            sched.step()
    return model


def recipe(name: str, bench: Bench, ds: SegDataset, train_ids: list[str], held_out: list[str], *, epochs: int,
           seed: int, workdir: Path) -> tuple[torch.nn.Module, tuple[Any, Any], dict[str, Any]]:
    """Train the recipe through segcore.fit; returns its final model, its normalisation and its data policy."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "train.txt").write_text("\n".join(train_ids))
    (workdir / "val.txt").write_text(held_out[0])  # fit validates once, on one image: the score is ours
    cfg = (load_config(name) if name.endswith((".yaml", ".yml")) else load_recipe(name)).to_dict()
    cfg["data"].update(source=bench.source.model_dump(mode="json"), classes=bench.classes, fingerprint=None,
                       split=PredefinedSplit(train=str(workdir / "train.txt"), val=str(workdir / "val.txt"))
                       .model_dump(mode="json"))
    cfg["training"].update(epochs=epochs, seed=seed, early_stopping_patience=None)
    cfg["evaluation"]["every"] = epochs
    resolved, policy = resolve_data_policy(parse_config(cfg), ds, train_ids)
    res = fit(resolved, workdir / "run", write_val_store=False)
    model = load_checkpoint(res.best_checkpoint).model  # the only validated epoch: the last
    return model, normalization(resolved), policy.model_dump(mode="json")


# ------------------------------------------------------------------ the protocol


def _runs(bench: Bench, ds: SegDataset, args: argparse.Namespace) -> list[tuple[str, int, list[str], list[str]]]:
    """``(label, seed, train_ids, held_out_ids)`` of each paired run."""
    if bench.protocol == "seeds":
        train, val = split_ids(ds, PredefinedSplit())
        train, val = _subsample(train, args.max_train), _subsample(val, args.max_val)
        return [(f"seed {s}", s, train, val) for s in range(args.seeds)]
    folds = fold_assignment(ds, KFoldSplit(n_folds=N_FOLDS, seed=0))
    out = []
    for f in range(min(args.folds, N_FOLDS)):
        train = sorted(i for i, k in folds.items() if k != f)
        val = sorted(i for i, k in folds.items() if k == f)
        out.append((f"fold {f}", 0, _subsample(train, args.max_train), _subsample(val, args.max_val)))
    return out


def _spread(v: list[float]) -> str:
    return f"{statistics.median(v):.4f} ({min(v):.4f}..{max(v):.4f})" if v else "-"


def run_bench(bench: Bench, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    ds = open_dataset(bench.source, classes=bench.classes, task="multiclass", ignore_index=IGNORE)
    shares = pixel_shares(ds)
    rarest = [int(k) for k in np.argsort(shares)[: min(2, ds.num_classes)]]
    rows = []
    for label, seed, train, held_out in _runs(bench, ds, args):
        t0 = time.perf_counter()
        base = score(baseline(ds, train, epochs=args.epochs, seed=seed, bf16=args.baseline_precision == "bf16"), ds,
                     held_out, IMAGENET)
        t1 = time.perf_counter()
        model, norm, policy = recipe(args.recipe, bench, ds, train, held_out, epochs=args.epochs, seed=seed,
                                     workdir=tmp / bench.name / label.replace(" ", "-"))
        rec = score(model, ds, held_out, norm)
        t2 = time.perf_counter()
        rows.append({"run": label, "train": len(train), "held_out": len(held_out), "baseline": base, "recipe": rec,
                     "diff": rec["miou"] - base["miou"], "crop": policy["crop_size"],
                     "seconds": {"baseline": round(t1 - t0), "recipe": round(t2 - t1)}})
        print(f"{bench.name} {label}: baseline {base['miou']:.4f} ({t1 - t0:.0f} s), recipe {rec['miou']:.4f} "
              f"({t2 - t1:.0f} s, crop {policy['crop_size']})", flush=True)
    diffs = [r["diff"] for r in rows]
    rare = {}
    for k in rarest:  # median over the runs whose held-out images contain the class
        rare[bench.classes[k]] = {
            side: statistics.median(v) if (v := [r[side]["iou"][k] for r in rows if r[side]["iou"][k] is not None])
            else None
            for side in ("baseline", "recipe")
        }
    return {
        "dataset": bench.name, "protocol": bench.protocol, "runs": rows,
        "baseline_median": statistics.median(r["baseline"]["miou"] for r in rows),
        "recipe_median": statistics.median(r["recipe"]["miou"] for r in rows),
        "diff_median": statistics.median(diffs), "diff_min": min(diffs), "diff_max": max(diffs),
        "passes": statistics.median(diffs) >= 0, "rarest_classes_iou": rare,
        "class_shares": dict(zip(bench.classes, (round(float(s), 4) for s in shares))),
    }


def _iou(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = (f"recipe '{args.recipe}' vs hand baseline, {args.epochs} epochs, full-resolution dataset mIoU "
            f"(median (min..max))")
    lines = [head, "", "| dataset | runs | baseline | recipe | recipe - baseline | passes | rarest classes IoU "
             "(baseline -> recipe) |", "|---|---|---|---|---|---|---|"]
    for r in results:
        rare = ", ".join(f"{c} {_iou(v['baseline'])} -> {_iou(v['recipe'])}"
                         for c, v in r["rarest_classes_iou"].items())
        runs = r["runs"]
        lines.append(
            f"| {r['dataset']} | {len(runs)} {'seed' if r['protocol'] == 'seeds' else 'fold'}(s) | "
            f"{_spread([x['baseline']['miou'] for x in runs])} | {_spread([x['recipe']['miou'] for x in runs])} | "
            f"{_spread([x['diff'] for x in runs])} | {'yes' if r['passes'] else 'no'} | {rare} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 epochs, 1 seed, 2 folds, <= 64 train / 48 held-out")
    ap.add_argument("--recipe", default="fast", help="a recipe's name, or the path of a config YAML to try")
    ap.add_argument("--datasets", nargs="+", default=None, help="default: all three")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--folds", type=int, default=None, help=f"how many of the {N_FOLDS} folds to run")
    ap.add_argument("--max-train", type=int, default=None)
    ap.add_argument("--max-val", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--baseline-precision", choices=("auto", "bf16", "fp32"), default="auto",
                    help="auto: bf16 autocast + channels_last where the CPU has native bf16, as the recipe's "
                         "precision: auto does, so both sides train in the same precision")
    ap.add_argument("--data", default=os.environ.get("SEGBOARD_BENCH_DATA") or str(ROOT.parent / "shared" / "data"))
    args = ap.parse_args()
    defaults = (3, 1, 2, 64, 48) if args.quick else (20, 3, N_FOLDS, None, None)
    for key, value in zip(("epochs", "seeds", "folds", "max_train", "max_val"), defaults):
        if getattr(args, key) is None:
            setattr(args, key, value)
    torch.set_num_threads(args.threads)
    if args.baseline_precision == "auto":  # what segcore picks for a config's precision: auto on this CPU
        from segcore.training._device import resolve_runtime

        auto = TrainingConfig(precision="auto")
        args.baseline_precision = "bf16" if resolve_runtime(auto, "cpu").precision_name == "bf16" else "fp32"
    benches = _benches(Path(args.data))
    names = args.datasets or list(benches)
    unknown = [n for n in names if n not in benches]
    if unknown:
        raise SystemExit(f"unknown dataset(s) {unknown}; choose from {', '.join(benches)}")
    missing = [n for n in names if not Path(benches[n].source.root).is_dir()]
    if missing:
        raise SystemExit(f"{missing} not found under {args.data}: set SEGBOARD_BENCH_DATA to the shared data folder")
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_bench(benches[n], args, Path(tmp)) for n in names]
    print()
    print(_table(results, args))
    print(json.dumps({"recipe": args.recipe, "epochs": args.epochs, "quick": args.quick, "results": results}))


if __name__ == "__main__":
    main()
