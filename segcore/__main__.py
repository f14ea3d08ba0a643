"""Command line: ``python -m segcore train config.yaml`` and friends.

Commands:
    train CONFIG [--workdir DIR] [--resume] [--dataset-root DIR] [--device DEV] [--set key=value ...]
    recipes                      list the built-in recipes
    recipe NAME                  print a recipe's YAML
    synth DIR [--images N] [--classes C] [--size S]
                                 write a synthetic COCO dataset (for trying things out)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from segcore.config import ExperimentConfig, load_config, parse_config
from segcore.errors import SegcoreError

if TYPE_CHECKING:
    from segcore.training.callbacks import EpochReport, StepReport

__all__ = ["main"]


class _Progress:
    """Prints a progress bar per epoch (tqdm) and a metrics line after each epoch."""

    def __init__(self, out: Any = sys.stderr) -> None:
        self.out = out
        self.bar: Any = None  # a tqdm bar during an epoch

    def on_train_start(self, info: dict[str, Any]) -> None:
        self.info = info
        print(
            f"training on {info['device']} ({info['precision']}, channels_last={info['channels_last']}): "
            f"{info['num_train']} train / {info['num_val']} val images, {info['steps_per_epoch']} steps/epoch, "
            f"epochs {info['start_epoch']}..{info['epochs']}",
            file=self.out,
        )

    def on_step(self, r: StepReport) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=r.steps_per_epoch, desc=f"epoch {r.epoch}", file=self.out, leave=False,
                            dynamic_ncols=True)
        self.bar.update(r.step - self.bar.n)
        self.bar.set_postfix(loss=f"{r.loss:.4f}", img_s=f"{r.images_per_s:.1f}", lr=f"{r.lr:.2e}")

    def on_epoch_end(self, r: EpochReport) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        val = r.val or {}
        shown = " ".join(
            f"{k}={val[k]:.4f}" for k in ("miou", "miou_per_image", "dice", "pixel_accuracy", "loss")
            if isinstance(val.get(k), float)
        )
        eta = time.strftime("%H:%M:%S", time.gmtime(r.eta_s))
        extra = ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in r.timings.items() if k != "train_s")
        print(
            f"epoch {r.epoch}/{r.epochs} train_loss={r.train_loss:.4f} {shown} lr={r.lr:.2e} "
            f"{r.images_per_s:.1f} img/s{f' ({extra})' if extra else ''} ETA {eta}{' *best*' if r.is_best else ''}",
            file=self.out,
        )

    def on_log(self, line: str) -> None:
        print(line, file=self.out)


def _apply_overrides(cfg: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    data = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise SegcoreError(f"--set expects key=value, got {item!r} (e.g. --set training.epochs=5)")
        key, raw = item.split("=", 1)
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise SegcoreError(f"--set {key}: {p!r} is not a config section")
            node = node[p]
        node[parts[-1]] = yaml.safe_load(raw)
    return parse_config(data)


def _train(args: argparse.Namespace) -> int:
    from segcore.training import fit

    cfg = _apply_overrides(load_config(args.config), args.set or [])
    workdir = Path(args.workdir or Path("runs") / cfg.name)
    result = fit(
        cfg,
        workdir,
        dataset_root=args.dataset_root,
        callbacks=[_Progress()],
        resume=args.resume,
        device=args.device,
    )
    summary = {
        "status": result.status,
        "workdir": str(workdir),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best": {k: v for k, v in result.best_metrics.items() if k != "per_class"},
        "images_per_s": round(result.images_per_s, 2),
        "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
        "val_store": str(result.val_store) if result.val_store else None,
    }
    print(json.dumps(summary, indent=2))
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from segcore.recipes import list_recipes

    for r in list_recipes():
        print(f"{r.name:12s} {r.description}")
    return 0


def _recipe(args: argparse.Namespace) -> int:
    from segcore.recipes import recipe_path

    print(recipe_path(args.name).read_text(encoding="utf-8"))
    return 0


def _synth(args: argparse.Namespace) -> int:
    from segcore.data.synthetic import make_synthetic_coco

    src = make_synthetic_coco(
        Path(args.dir), num_images=args.images, num_classes=args.classes, size=args.size, seed=args.seed
    )
    print(src.model_dump_json(indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m segcore", description="segcore: train and inspect segmentation runs")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one run from a YAML/JSON config")
    t.add_argument("config")
    t.add_argument("--workdir", help="run folder (default runs/<config name>)")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    t.add_argument("--dataset-root", help="base folder for relative dataset paths")
    t.add_argument("--device", help="override training.device (cpu, cuda, cuda:1)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. training.epochs=3")
    t.set_defaults(fn=_train)
    r = sub.add_parser("recipes", help="list the built-in recipes")
    r.set_defaults(fn=_recipes)
    r1 = sub.add_parser("recipe", help="print a recipe's YAML")
    r1.add_argument("name")
    r1.set_defaults(fn=_recipe)
    s = sub.add_parser("synth", help="write a synthetic COCO dataset")
    s.add_argument("dir")
    s.add_argument("--images", type=int, default=48)
    s.add_argument("--classes", type=int, default=5)
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=_synth)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except SegcoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
