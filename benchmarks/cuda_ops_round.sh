#!/usr/bin/env bash
# The GPU machine's measurements of the cips.fast op (runtime/cuda_ops/), in one device call: the op and
# the packaged model's fused graphs checked at both tile shapes (cuda_ops_check.py), render.py's paper-256
# cases without and with the op, and the whole first command with its first render profiled
# (command.py --profile), then again without the machine's .pth hooks (--no-site), and the floor any CUDA
# process pays before its first kernel (cuda_floor.py). Needs onnxruntime-gpu under ORTSITE (benchmarks/on_gpu.sh) and the library built
# here (bash runtime/cuda_ops/build.sh; carry runtime/cuda_ops/build). Each step has its own time limit and
# a failed step does not stop the next (the limits add up to 560 s). Everything, the log and the scripts' own
# logs included, goes into one archive, $OUT/cuda-ops-round.tgz, written again after every step (a device
# call returns at most 8 files, and a call cut short still returns the steps done).
#   OUT=/tmp/out bash benchmarks/cuda_ops_round.sh
set -u
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
library=$PWD/runtime/cuda_ops/build/libcips_cuda_ops.so
if [ ! -f "$library" ]; then
    echo "no $library: build it (bash runtime/cuda_ops/build.sh) and carry runtime/cuda_ops/build" >&2
    exit 2
fi
archive=$OUT/cuda-ops-round.tgz
OUT=$(mktemp -d)  # on_gpu.sh copies its logs and results into $OUT
export OUT
exec > >(tee "$OUT/cuda-ops-round.log") 2>&1
step() {
    local limit=$1
    shift
    echo "== $(date +%T) $* (limit ${limit} s)"
    timeout "$limit" "$@" || echo "== exit $? from: $*"
    tar czf "$archive.part" -C "$OUT" . && mv "$archive.part" "$archive"
}
step 80 bash benchmarks/on_gpu.sh benchmarks/cuda_ops_check.py --out "$OUT/cuda-ops-check-h200.json"
step 80 bash benchmarks/on_gpu.sh benchmarks/cuda_ops_check.py --tile 128x256 \
    --out "$OUT/cuda-ops-check-128x256-h200.json"
step 120 bash benchmarks/render_gpu.sh --no-tensorrt --out "$OUT/render-h200-unfused.json"
step 120 env CIPS_CUDA_OPS="$library" bash benchmarks/render_gpu.sh --no-tensorrt --out "$OUT/render-h200-fused.json"
step 70 bash benchmarks/on_gpu.sh benchmarks/command.py --device cuda --profile --out "$OUT/command-h200.json"
step 70 bash benchmarks/on_gpu.sh benchmarks/command.py --device cuda --no-site --out "$OUT/command-h200-no-site.json"
step 20 bash benchmarks/on_gpu.sh benchmarks/cuda_floor.py --out "$OUT/cuda-floor-h200.json"
echo "== $(date +%T) done"
tar czf "$archive.part" -C "$OUT" . && mv "$archive.part" "$archive"
