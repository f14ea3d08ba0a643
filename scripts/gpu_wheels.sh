#!/usr/bin/env bash
# Downloads into .whl/ the cp312 wheels that the GPU machine lacks (it has torch, numpy, opencv, timm, ...),
# at the versions this venv uses, for scripts/gpu_env.sh to install there. Run here, from the repo root:
#   bash scripts/gpu_wheels.sh && du -sh .whl
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
PIP="${PIP:-.venv/bin/pip}"
version() { "$PIP" show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
pkgs=(segmentation-models-pytorch albumentations albucore pydantic pydantic-core annotated-types
      typing-inspection typing-extensions pydantic-settings python-dotenv pycocotools stringzilla simsimd)
specs=()
for p in "${pkgs[@]}"; do
    v=$(version "$p")
    [ -n "$v" ] || { echo "gpu_wheels: $p is not installed in this venv; run make venv first" >&2; exit 1; }
    specs+=("$p==$v")
done
mkdir -p .whl
"$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${specs[@]}"
ls .whl
