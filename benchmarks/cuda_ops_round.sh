#!/usr/bin/env bash
# The GPU machine's measurements of the cips.fast op (runtime/cuda_ops/), in one device call:
#   1. render.py's paper-256 cases as exported (the README's GPU figures), keeping that model;
#   2. cuda_ops_check.py on that paper-256 model at each configuration of the op (op, bound renders of
#      1024x1024 and 16 x 256x256, graphs on the device; unfused and fused in the same process);
#   3. the same check on the packaged model for 256x128-1x2 (the others have packaged-model results in
#      benchmarks/results/);
#   4. render.py again with the op, at the configuration whose fused grid graph rendered 1024x1024
#      fastest in step 2 (an A/B of step 1 in the same call);
#   5. cuda_floor.py: CUDA's and ONNX Runtime's own start-up in fresh processes;
#   6. command.py: the whole first command, A as it is and B with CIPS_CUDA_EARLY=0 (CUDA's start-up left
#      to ONNX Runtime) in turn.
# Needs onnxruntime-gpu under ORTSITE (benchmarks/on_gpu.sh) and the library built here (bash
# runtime/cuda_ops/build.sh; carry runtime/cuda_ops/build). Each step has its own time limit (they add
# up to 565 s) and a failed step does not stop the next. Everything, the log and the scripts' own logs
# included, goes into one archive, $OUT/cuda-ops-round.tgz, written again after every step (a device
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
paper=$(mktemp -d)/paper-256.onnx
tiles="128x128 128x256 128x128-pingpong 256x128-1x2 128x192 256x192"
step 120 bash benchmarks/render_gpu.sh --no-tensorrt --save-model "$paper" --out "$OUT/render-h200-unfused.json"
for tile in $tiles; do
    step 45 bash benchmarks/on_gpu.sh benchmarks/cuda_ops_check.py --model "$paper" --tile "$tile" \
        --out "$OUT/cuda-ops-check-paper-$tile-h200.json"
done
step 45 bash benchmarks/on_gpu.sh benchmarks/cuda_ops_check.py --tile 256x128-1x2 \
    --out "$OUT/cuda-ops-check-256x128-1x2-h200.json"
best=$(python3 benchmarks/cuda_ops_best.py "$OUT"/cuda-ops-check-paper-*-h200.json)
echo "== fastest fused grid graph at 1024x1024: ${best:-none}"
if [ -n "$best" ]; then
    step 120 env CIPS_CUDA_OPS="$library" CIPS_CUDA_OPS_TILE="$best" bash benchmarks/render_gpu.sh --no-tensorrt \
        --out "$OUT/render-h200-fused.json"
fi
step 30 bash benchmarks/on_gpu.sh benchmarks/cuda_floor.py --out "$OUT/cuda-floor-h200.json"
step 70 bash benchmarks/on_gpu.sh benchmarks/command.py --device cuda --ab-env CIPS_CUDA_EARLY=0 \
    --ab-label "CUDA's start-up left to ONNX Runtime, after its import" --out "$OUT/command-h200-early.json"
echo "== $(date +%T) done"
tar czf "$archive.part" -C "$OUT" . && mv "$archive.part" "$archive"
