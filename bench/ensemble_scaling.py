"""Ensemble scaling: time and peak memory of a 5-member soft ensemble over 200, 400, 800 images.

Synthetic member stores (12 classes, 256x256, uint8: smooth blob probabilities) are written once
with 800 images per member into a temp folder; the 200- and 400-image stores are the same
entries (hard links) under a manifest listing the first N (the store format is documented in
``docs/probability-store.md``). For each size a fresh subprocess runs ``ensemble_to_store``
into a new store and reports its wall time, its peak resident memory (``ru_maxrss``) and the
peak of traced allocations during the ensemble (``tracemalloc``, which sees NumPy buffers).

Targets: peak memory flat as the images grow (within 10% from 200 to 800), time linear.
``ratio`` = peak RSS at 200 / peak RSS at 800 (higher is better; >= 0.9 meets the target);
``time_linearity`` = (time per image at 200) / (time per image at 800) (1.0 is linear).
The last line printed is one JSON object. Run:

    python bench/ensemble_scaling.py [--sizes 200 400 800] [--members 5] [--side 256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = [f"c{i}" for i in range(12)]


def _member_probs(rng: np.random.Generator, side: int, c: int) -> np.ndarray:
    import cv2

    small = rng.normal(0.0, 2.5, (c, side // 32, side // 32)).astype(np.float32)
    logits = np.stack([cv2.resize(s, (side, side), interpolation=cv2.INTER_CUBIC) for s in small])
    logits -= logits.max(0, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(0, keepdims=True)
    return logits


def generate(root: Path, members: int, images: int, side: int) -> list[Path]:
    from segcore.inference.store import ProbabilityStore

    paths = []
    for m in range(members):
        rng = np.random.default_rng(m)
        pool = [_member_probs(rng, side, len(CLASSES)) for _ in range(16)]
        path = root / f"m{m}_{images}"
        with ProbabilityStore.create(path, classes=CLASSES, task="multiclass", source=f"member-{m}") as w:
            for i in range(images):
                w.write(f"img{i:05d}", pool[(i * 7 + m) % len(pool)])
        paths.append(path)
    return paths


def subset(src: Path, dst: Path, n: int) -> Path:
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["entries"] = manifest["entries"][:n]
    (dst / "entries").mkdir(parents=True)
    for e in manifest["entries"]:
        os.link(src / e["file"], dst / e["file"])
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def child(paths: list[str], out: str) -> None:
    import resource
    import tracemalloc

    from segcore.ensemble import ensemble_to_store

    tracemalloc.start()
    start = time.perf_counter()
    store = ensemble_to_store(paths, out, method="soft", weights=[1.0] * len(paths))
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"images": len(store), "seconds": seconds, "peak_rss_mb": rss_kb / 1024,
                      "traced_peak_mb": traced_peak / 2**20}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 400, 800])
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[:-1], args.child[-1])
        return

    sizes = sorted(args.sizes)
    with tempfile.TemporaryDirectory(prefix="segcore-ens-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        full = generate(root, args.members, sizes[-1], args.side)
        print(f"generated {args.members} x {sizes[-1]} entries in {time.perf_counter() - t0:.1f}s", flush=True)
        rows = []
        for n in sizes:
            paths = full if n == sizes[-1] else [subset(p, root / f"{p.name}_sub{n}", n) for p in full]
            cmd = [sys.executable, __file__, "--child", *map(str, paths), str(root / f"ens_{n}")]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{n:5d} images: {row['seconds']:7.2f}s  ({1000 * row['seconds'] / n:.1f} ms/image)  "
                  f"peak RSS {row['peak_rss_mb']:.0f} MB  traced peak {row['traced_peak_mb']:.1f} MB", flush=True)
    first, last = rows[0], rows[-1]
    result = {
        "benchmark": "ensemble_scaling",
        "members": args.members,
        "classes": len(CLASSES),
        "side": args.side,
        "sizes": sizes,
        "seconds": [round(r["seconds"], 3) for r in rows],
        "ms_per_image": [round(1000 * r["seconds"] / r["images"], 2) for r in rows],
        "peak_rss_mb": [round(r["peak_rss_mb"], 1) for r in rows],
        "traced_peak_mb": [round(r["traced_peak_mb"], 2) for r in rows],
        "ratio": round(first["peak_rss_mb"] / last["peak_rss_mb"], 3),
        "time_linearity": round((first["seconds"] / first["images"]) / (last["seconds"] / last["images"]), 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
