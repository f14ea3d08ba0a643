"""Artifact sync with an s3:// root: incremental push/fetch against re-copying the run folder.

A run folder the size of a Unet-resnet18 run (``checkpoints/best`` and ``checkpoints/last``,
57 MB of weights each, a 20 MB validation store, ``metrics.jsonl``) lives on moto's S3 server,
started here on 127.0.0.1 in its own process (so it does not share this process's GIL). Each "epoch" rewrites ``checkpoints/last`` and appends to
``metrics.jsonl`` (a new best every third epoch rewrites ``checkpoints/best`` too), then:

- ours: ``Artifacts.push`` on the training box, and ``Artifacts.fetch`` of the run folder on a
  second box (a resume there, or the dashboard);
- peer: what a sync without bookkeeping does: ``fs.put(folder, recursive=True)`` of the whole
  folder, and ``fs.get(recursive=True)`` of it on the second box.

Both sides move the same bytes the first time; the figure is the median time per epoch after it,
with the megabytes each side moved per epoch. On loopback the server, not the bandwidth, limits
the transfers, so the time ratio understates what the smaller transfers save on a real network.
The last line printed is one JSON object; ``ratio`` = peer median / ours (higher is better).

Usage: python bench/artifact_sync.py [--epochs 9] [--mb 57]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _write(path: Path, n_bytes: int) -> None:
    """``n_bytes`` of fresh random data (a rewritten checkpoint)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(n_bytes >> 20):
            f.write(block)
        f.write(block[: n_bytes & ((1 << 20) - 1)])


def _epoch(folder: Path, epoch: int, weights: int) -> None:
    _write(folder / "checkpoints" / "last" / "model.safetensors", weights)
    (folder / "checkpoints" / "last" / "state.json").write_text(json.dumps({"epoch": epoch}))
    with open(folder / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": epoch, "miou": 0.5 + epoch / 100}) + "\n")
    if epoch % 3 == 0:
        _write(folder / "checkpoints" / "best" / "model.safetensors", weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--mb", type=int, default=57, help="size of one checkpoint's weights")
    args = parser.parse_args()

    import fsspec

    from worker.artifacts import Artifacts

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "bench", "secret": "bench"}
    fs = fsspec.filesystem("s3", **options)  # fsspec caches it: Artifacts uses this same instance
    moved = {"ours": 0, "peer": 0}
    side = ["ours"]
    put_file, get_file = fs._put_file, fs._get_file

    async def counted_put(lpath: str, rpath: str, **kw: object) -> object:
        moved[side[0]] += os.path.getsize(lpath)
        return await put_file(lpath, rpath, **kw)

    async def counted_get(rpath: str, lpath: str, **kw: object) -> object:
        out = await get_file(rpath, lpath, **kw)
        moved[side[0]] += os.path.getsize(lpath)
        return out

    fs._put_file, fs._get_file = counted_put, counted_get
    for _ in range(100):
        try:
            fs.mkdir("bench")
            break
        except Exception:  # noqa: BLE001 - the server is still starting
            time.sleep(0.1)
    tmp = Path(tempfile.mkdtemp(prefix="segboard-sync-"))
    weights = args.mb << 20
    times: dict[str, list[float]] = {"ours_push": [], "ours_fetch": [], "peer_put": [], "peer_get": []}
    megabytes: dict[str, list[float]] = {"ours": [], "peer": []}
    try:
        trainer = Artifacts("s3://bench/ours", cache=tmp / "trainer", storage_options=options)
        reader = Artifacts("s3://bench/ours", cache=tmp / "reader", storage_options=options)
        ours = trainer.local_dir("runs", "1")
        peer = tmp / "peer" / "runs" / "1"
        for folder in (ours, peer):
            _write(folder / "checkpoints" / "best" / "model.safetensors", weights)
            _write(folder / "predictions" / "val" / "shard-0.bin", 20 << 20)
            (folder / "predictions" / "val" / "manifest.json").write_text("{}")
        for epoch in range(1, args.epochs + 1):
            for folder in (ours, peer):
                _epoch(folder, epoch, weights)
            moved.update(ours=0, peer=0)
            side[0] = "ours"
            t = time.perf_counter()
            location = trainer.push(ours)
            times["ours_push"].append(time.perf_counter() - t)
            t = time.perf_counter()
            reader.fetch(location)
            times["ours_fetch"].append(time.perf_counter() - t)
            side[0] = "peer"
            t = time.perf_counter()
            fs.put(str(peer), "bench/peer/runs/", recursive=True)
            times["peer_put"].append(time.perf_counter() - t)
            shutil.rmtree(tmp / "peer-get", ignore_errors=True)
            t = time.perf_counter()
            fs.get("bench/peer/runs/1", str(tmp / "peer-get"), recursive=True)
            times["peer_get"].append(time.perf_counter() - t)
            for k in megabytes:
                megabytes[k].append(moved[k] / 2**20)
            print(f"epoch {epoch}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        assert sorted(p.name for p in reader.mirror(location).rglob("*.safetensors")) == ["model.safetensors"] * 2
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)

    after = {k: statistics.median(v[1:]) for k, v in times.items()}  # epoch 1 uploads everything on both sides
    ours_s = after["ours_push"] + after["ours_fetch"]
    peer_s = after["peer_put"] + after["peer_get"]
    print(json.dumps({
        "figure": "s3 artifact sync per epoch (push on the trainer + fetch on a second box), median s",
        "ours_s": round(ours_s, 3), "peer_s": round(peer_s, 3),
        "ours_push_s": round(after["ours_push"], 3), "ours_fetch_s": round(after["ours_fetch"], 3),
        "peer_put_s": round(after["peer_put"], 3), "peer_get_s": round(after["peer_get"], 3),
        "ours_mb_per_epoch": round(statistics.median(megabytes["ours"][1:]), 1),
        "peer_mb_per_epoch": round(statistics.median(megabytes["peer"][1:]), 1),
        "first_epoch_ours_s": round(times["ours_push"][0] + times["ours_fetch"][0], 3),
        "first_epoch_peer_s": round(times["peer_put"][0] + times["peer_get"][0], 3),
        "epochs": args.epochs, "checkpoint_mb": args.mb,
        "ratio": round(peer_s / ours_s, 2),
    }))


if __name__ == "__main__":
    main()
