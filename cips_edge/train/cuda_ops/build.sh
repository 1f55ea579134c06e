#!/usr/bin/env bash
# Builds cips_edge/train/cuda_ops/build/libcips_train_ops.so: G's modulated layer in training, forward
# (GEMM + bias + leaky ReLU + gain) and backward into the layer before (GEMM + the leaky ReLU's
# derivative), each one CUTLASS kernel for SM90 GPUs (Speed.fused_fc and fused_stack, fused_fc.py).
# Fetches the CUTLASS headers (runtime/cuda_ops/cutlass.sh's pin) into .cache/cuda_ops/ at the repository
# root, the cache runtime/cuda_ops/build.sh shares, and compiles for sm_90a with nvcc. No GPU is needed.
#   bash cips_edge/train/cuda_ops/build.sh [OUT_DIR]   (default cips_edge/train/cuda_ops/build;
#                                   NVCC=/path/to/nvcc, PYTHON=python3, CACHE_DIR=.cache/cuda_ops to override;
#                                   NVCC_FLAGS: extra flags, e.g. modulated_fc.cu's tile and schedule macros)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
cache="${CACHE_DIR:-$root/.cache/cuda_ops}"
out="${1:-$here/build}"
NVCC="${NVCC:-nvcc}"
PYTHON="${PYTHON:-python3}"
# shellcheck source=../../../runtime/cuda_ops/cutlass.sh
. "$root/runtime/cuda_ops/cutlass.sh"  # the CUTLASS pin runtime/cuda_ops/build.sh builds against too

mkdir -p "$cache" "$out"
cache="$(cd "$cache" && pwd)" out="$(cd "$out" && pwd)"
fetch_cutlass "$cache" "$PYTHON"

# static cudart: only the CUDA driver is needed beside torch; hidden symbols keep CUTLASS's names private
start=$(date +%s)
"$NVCC" -std=c++17 -O3 -DNDEBUG -arch=sm_90a --expt-relaxed-constexpr -I"$cutlass" ${NVCC_FLAGS:-} \
  -Xcompiler=-fPIC,-fvisibility=hidden -shared -cudart static -Xlinker=--exclude-libs,ALL \
  -o "$out/libcips_train_ops.so" "$here/modulated_fc.cu"
echo "built $out/libcips_train_ops.so ($(du -h "$out/libcips_train_ops.so" | cut -f1), $(( $(date +%s) - start )) s)"
