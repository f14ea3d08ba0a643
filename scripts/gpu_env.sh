# Python environment for a command on the GPU machine (nvidia-h200): source it first, from the repo root.
#
#   source scripts/gpu_env.sh && python3 bench/gpu_throughput.py
#
# That machine has torch, torchvision, numpy, opencv, timm, ... but not smp, albumentations, pydantic and
# pycocotools. Their cp312 wheels travel in .whl/ (git-ignored; scripts/gpu_wheels.sh downloads them; the
# call that runs this names ".whl" in what it carries). This installs them into /tmp/site, puts
# /tmp/site and the checkout on PYTHONPATH, and prints the Python, torch, CUDA and GPU it sees.
# Where .whl/ is missing or python3 is not 3.12 it says so and changes nothing (returns 0).

_segboard_gpu_env() {
    local root="$PWD"
    local wheels=("$root"/.whl/*.whl)
    if [ ! -e "${wheels[0]}" ]; then
        echo "gpu_env: no wheels in $root/.whl; nothing installed, PYTHONPATH unchanged"
        return 0
    fi
    local pyver
    pyver="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"
    if [ "$pyver" != "3.12" ]; then
        echo "gpu_env: python3 is ${pyver:-missing}, the wheels in .whl are for 3.12; nothing installed"
        return 0
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "${wheels[@]}" || {
        echo "gpu_env: installing ${#wheels[@]} wheels from .whl into /tmp/site failed" >&2
        return 1
    }
    export PYTHONPATH="/tmp/site:$root"
    # nothing outside the machine can be reached: no update checks, no weight downloads
    export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1
    echo "gpu_env: installed ${#wheels[@]} wheels into /tmp/site; PYTHONPATH=$PYTHONPATH"
    python3 -c 'import sys, torch; print(f"gpu_env: python {sys.version.split()[0]}, torch {torch.__version__}, '\
'CUDA {torch.version.cuda}, cuda available {torch.cuda.is_available()}")'
    if command -v nvidia-smi >/dev/null 2>&1; then
        echo "gpu_env: GPU $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -n 1)"
    else
        echo "gpu_env: nvidia-smi not found"
    fi
}

_segboard_gpu_env
_segboard_gpu_env_rc=$?
unset -f _segboard_gpu_env
# `return` when sourced (the intended use); `exit` if someone runs the file instead
return "$_segboard_gpu_env_rc" 2>/dev/null || exit "$_segboard_gpu_env_rc"
