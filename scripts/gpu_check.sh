#!/usr/bin/env bash
# Every GPU check of the training engine in one run, about 6 minutes on one H200:
#   1. bench/gpu_throughput.py: segcore.fit against a hand loop on GPU-resident tensors (<= 2 min)
#   2. the CUDA tests: tests/training and tests/test_metrics.py with CUDA visible (fit picks the GPU)
#   3. scripts/gpu_ddp_smoke.py: DDP with SyncBatchNorm, world size 1 over NCCL, 2 ranks sharing the GPU
#   4. bench/gpu_throughput.py --compile: the same with training.compile, and its warm-up
# Wheels the GPU machine lacks: `bash scripts/gpu_wheels.sh` first, then carry .whl with the call.
# Logs go to $OUT (or a temp folder). Without CUDA it says so and exits 0. A failing part is reported
# and the next part still runs; the exit code counts the parts that failed.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
if [ -d .whl ]; then
    # shellcheck source=scripts/gpu_env.sh
    source scripts/gpu_env.sh || exit 1
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device visible; every GPU check skipped"
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
failed=0
part() {  # part NAME TIMEOUT_S COMMAND...
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit} s)"
    local t0=$SECONDS
    timeout --signal=KILL "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.log"
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
}
part gpu_throughput 150 "$PY" bench/gpu_throughput.py
part cuda_tests 150 "$PY" -m pytest -q -p no:cacheprovider tests/training tests/test_metrics.py
part ddp_smoke 100 "$PY" scripts/gpu_ddp_smoke.py
part gpu_throughput_compile 120 "$PY" bench/gpu_throughput.py --compile
echo "gpu_check: $failed part(s) failed; logs in $OUT"
exit "$failed"
