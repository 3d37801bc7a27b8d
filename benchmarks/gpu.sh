#!/usr/bin/env bash
# GPU figures for the README: full-size random-weight SD1.5 (512x512) and SDXL (1024x1024), 100 steps, fp16.
#
#   benchmarks/gpu.sh prepare     # here, after scripts/setup.sh: a small copy of ComfyUI's Python core and the
#                                 # two pure-Python wheels a bare GPU machine may lack, in .devicekit/ (not committed)
#   benchmarks/gpu.sh run DIR [JOB...]   # on the GPU machine, from the checkout with .devicekit/ beside it: logs
#                                 # go to DIR; jobs: sd15 sdxl sdxl-edit parallel sd15-fp32 rounding
#                                 # (default: sd15 sdxl sdxl-edit sd15-fp32)
#
# The GPU machine brings its own python3 with torch; nothing is downloaded there.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=.devicekit

case "${1:-}" in
prepare)
    rm -rf "$KIT" && mkdir -p "$KIT/ComfyUI"
    # What benchmarks/speed.py imports from the host: the model code, the API package and a few top-level modules.
    (cd .cache/ComfyUI && cp -r comfy comfy_api comfy_execution latent_preview.py folder_paths.py node_helpers.py "../../$KIT/ComfyUI/")
    find "$KIT" -name __pycache__ -prune -exec rm -rf {} +
    .cache/venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux2014_x86_64 -d "$KIT/whl" torchsde==0.2.6 trampoline==0.1.2
    du -sh "$KIT"
    ;;
run)
    out=${2:?give a folder for the logs}
    shift 2
    jobs=("${@:-sd15 sdxl sdxl-edit sd15-fp32}")
    mkdir -p "$out"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ef-site "$KIT"/whl/*.whl
    export PYTHONPATH=/tmp/ef-site EF_DEVICE=cuda EF_COMFYUI=$PWD/$KIT/ComfyUI PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
    speed() { python3 benchmarks/speed.py --dtype fp16 --steps 100 "$@" 2>&1 | grep -v "^WARNING"; }
    failed=()
    job() {  # job NAME SECONDS ARGS...: one speed.py run with a time limit, logged to NAME.log
        local name=$1 seconds=$2
        shift 2
        timeout "$seconds" bash -c "set -o pipefail; $(declare -f speed); speed $*" | tee "$out/$name.log"
        local status=${PIPESTATUS[0]}
        [ "$status" -eq 0 ] || { failed+=("$name (exit $status; 124 = over ${seconds} s)"); echo "job $name: exit $status" >&2; }
    }
    set +e
    for name in ${jobs[*]}; do
        case $name in
        sd15) job sd15 200 --sizes sd15 ;;
        sdxl) job sdxl 300 --sizes sdxl --repeats 2 --parts passes parallel reconstruction ;;
        # Edit and KSamplerAdvanced in turn, six times: the edit ratio without drift between two blocks of runs.
        sdxl-edit) job sdxl-edit 150 --sizes sdxl --alternate-edit 6 ;;
        # Step-parallel against one step at a time, KSampler and the model calls alone at the same batch sizes (the
        # ceiling of its speed-up).
        parallel) job parallel 180 --sizes sd15 sdxl --repeats 2 --parts parallel --chunks 1 0 16 64 ;;
        # The reconstruction in float32 weights, for comparison with the tests' 1e-4 bar.
        sd15-fp32) job sd15-fp32 80 --sizes sd15 --dtype fp32 --parts reconstruction ;;
        # The float16 roundings a step-parallel replay has to undo (docs/math.md).
        rounding) job rounding 90 --sizes sd15 --parts rounding ;;
        *) failed+=("$name (unknown job)") ;;
        esac
    done
    # Every job runs even when one fails; the exit status says whether any did.
    if [ ${#failed[@]} -gt 0 ]; then
        printf 'failed: %s\n' "${failed[@]}" | tee "$out/failed.txt" >&2
        exit 1
    fi
    ;;
*)
    sed -n 2,8p "$0"
    exit 2
    ;;
esac
