"""DDP smoke runs on one GPU: world size 1 over NCCL, and two ranks sharing the GPU, with SyncBatchNorm.

NCCL refuses two ranks on one GPU, so the shared run goes over gloo (segcore picks the backend); each
check says which backend ran, how many SyncBatchNorm layers the model had, and whether it finished.
A check that fails is reported and the next one still runs. Without CUDA it says so and exits 0.

Usage: python scripts/gpu_ddp_smoke.py            (on a GPU machine)
       python scripts/gpu_ddp_smoke.py --device cpu (the same logic over gloo on CPU processes)
Last line: JSON with one entry per check.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch


class _Logs:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def on_log(self, line: str) -> None:
        self.lines.append(line)
        print("   ", line, flush=True)


DEVICE = "cuda"


def _config(source, **training):
    from segcore.config import parse_config

    return parse_config({
        "name": "ddp-smoke",
        "data": {"source": source.model_dump(mode="json"), "classes": ["background", "a", "b", "c"],
                 "split": {"kind": "holdout", "val_fraction": 0.25, "seed": 0}},
        "model": {"arch": "Unet", "encoder": "resnet18", "encoder_weights": None},
        "loss": "ce",
        "training": {"epochs": 2, "batch_size": 4, "seed": 0, "device": DEVICE, "num_workers": 2, **training},
    })


def _check(name: str, fn) -> dict:
    print(f"== {name}", flush=True)
    logs = _Logs()
    t0 = time.perf_counter()
    try:
        result = fn(logs)
        out = {"ok": result.status == "completed", "status": result.status, "miou": result.best_metrics.get("miou"),
               "img_s": round(result.images_per_s, 1)}
    except Exception as exc:  # noqa: BLE001 - a smoke check reports its failure and the next one runs
        traceback.print_exc()
        out = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    out["ddp"] = next((line for line in logs.lines if line.startswith("DDP:")), None)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"   -> {out}", flush=True)
    return out


def main() -> int:
    global DEVICE
    if sys.argv[1:] == ["--device", "cpu"]:
        DEVICE = "cpu"
    elif not torch.cuda.is_available():
        print("no CUDA device: the DDP smoke runs need a GPU; skipped")
        print(json.dumps({"bench": "gpu_ddp_smoke", "skipped": True, "reason": "no CUDA device"}))
        return 0
    import torch.distributed as dist

    from segcore.data.synthetic import make_synthetic_coco
    from segcore.training import fit
    from segcore.training.distributed import init_rank
    from segcore.training.loop import fit_rank

    tmp = Path(tempfile.mkdtemp(prefix="ddp-smoke-"))
    source = make_synthetic_coco(tmp / "data", num_images=96, num_classes=3, size=128, seed=0)
    checks: dict[str, dict] = {}

    def world1(logs):
        store = dist.TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
        ctx = init_rank(rank=0, world=1, device_type=DEVICE, indices=[0], port=store.port, store=store)
        try:
            return fit_rank(_config(source), tmp / "world1", callbacks=[logs], dist_ctx=ctx)
        finally:
            dist.destroy_process_group()

    checks["world1_nccl_syncbn"] = _check("world size 1, NCCL, SyncBatchNorm", world1)
    checks["two_ranks_one_gpu_syncbn"] = _check(
        "2 ranks sharing GPU 0 (gloo), SyncBatchNorm",
        lambda logs: fit(_config(source, devices=[0, 0] if DEVICE == "cuda" else 2), tmp / "shared", callbacks=[logs]),
    )
    if not checks["two_ranks_one_gpu_syncbn"]["ok"]:
        checks["two_ranks_one_gpu_plain_bn"] = _check(
            "2 ranks sharing GPU 0 (gloo), plain BatchNorm",
            lambda logs: fit(_config(source, devices=[0, 0] if DEVICE == "cuda" else 2, sync_batchnorm=False),
                             tmp / "shared-bn", callbacks=[logs]),
        )
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    print(json.dumps({"bench": "gpu_ddp_smoke", "device": name, "checks": checks}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
