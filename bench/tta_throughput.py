"""TTA throughput: segcore.inference.predict against ttach's SegmentationTTAWrapper.

Same model (Unet-resnet18, encoder_weights=None, 12 classes, identical weights in two copies),
same images (uint8, 256x256), same views: ttach's ``d4_transform`` (horizontal flip x 4
rotations = 8 views) and ``TTAPolicy.d4()``. Both sides start from the uint8 images and end with
per-pixel probabilities as NumPy arrays (ttach: normalise, wrapper, softmax).

segcore runs its fast CPU path: the 8 views of an image in one forward pass, channels-last,
BatchNorm folded into the convolutions, bf16 autocast where the CPU has AVX512-BF16/AMX. Its
fp32 path (the same numerics as ttach, no fusion) is timed too, and the probability
difference between the two segcore paths is reported (the tolerance the fast path costs).
ttach averages logits while segcore averages probabilities, so their outputs differ by design;
the argmax agreement is reported.

Figures: images/s, median over ``--repeats`` interleaved repeats; ``ratio`` = segcore / ttach
(higher is better; target >= 1.2). The last line printed is one JSON object. Run:

    python bench/tta_throughput.py [--images 4] [--size 256] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import numpy as np
import segmentation_models_pytorch as smp
import torch
import ttach

from segcore.inference import IMAGENET_MEAN, IMAGENET_STD, TTAPolicy, predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model_tt = smp.Unet("resnet18", encoder_weights=None, classes=args.classes).eval()
    model_sc = copy.deepcopy(model_tt)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8) for _ in range(args.images)]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    wrapper = ttach.SegmentationTTAWrapper(model_tt, ttach.aliases.d4_transform(), merge_mode="mean")
    policy = TTAPolicy.d4()

    def run_ttach() -> list[np.ndarray]:
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255).sub_(mean).div_(std)
        with torch.inference_mode():
            return list(torch.softmax(wrapper(x), 1).numpy())

    def run_fast() -> list[np.ndarray]:
        return predict(model_sc, images, tta=policy, batch_size=policy.num_views, precision="auto",
                       channels_last=True, fuse_batchnorm=True)

    def run_fp32() -> list[np.ndarray]:
        return predict(model_sc, images, tta=policy, batch_size=policy.num_views, precision="fp32")

    runs = {"ttach": run_ttach, "segcore": run_fast, "segcore_fp32": run_fp32}
    outputs = {name: fn() for name, fn in runs.items()}  # warm-up (oneDNN primitive caches)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ips = {name: args.images / statistics.median(ts) for name, ts in times.items()}
    diff = max(float(np.abs(a - b).max()) for a, b in zip(outputs["segcore"], outputs["segcore_fp32"]))
    agree = float(np.mean([(a.argmax(0) == b.argmax(0)).mean() for a, b in zip(outputs["segcore"], outputs["ttach"])]))
    for name, v in ips.items():
        print(f"{name:>13}: {v:6.2f} images/s  (runs: {', '.join(f'{t:.2f}s' for t in times[name])})")
    result = {
        "benchmark": "tta_throughput",
        "views": policy.num_views,
        "images": args.images,
        "size": args.size,
        "threads": args.threads,
        "segcore_images_per_s": round(ips["segcore"], 3),
        "ttach_images_per_s": round(ips["ttach"], 3),
        "ratio": round(ips["segcore"] / ips["ttach"], 3),
        "segcore_fp32_images_per_s": round(ips["segcore_fp32"], 3),
        "fp32_ratio": round(ips["segcore_fp32"] / ips["ttach"], 3),
        "max_abs_prob_diff_fast_vs_fp32": round(diff, 5),
        "argmax_agreement_with_ttach": round(agree, 5),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
