#!/usr/bin/env bash
# Builds cips_edge/train/cuda_ops/build/libcips_train_ops.so: G's modulated layer (GEMM + bias + leaky
# ReLU + gain in one CUTLASS kernel) for `cips train --fused-fc` on SM90 GPUs. Fetches the CUTLASS headers
# (PyPI's nvidia-cutlass wheel, sha256-checked) into .cache/cuda_ops/ at the repository root (the cache
# runtime/cuda_ops/build.sh shares) and compiles for sm_90a with nvcc. No GPU is needed to build.
#   bash cips_edge/train/cuda_ops/build.sh [OUT_DIR]   (default cips_edge/train/cuda_ops/build;
#                                   NVCC=/path/to/nvcc, PYTHON=python3, CACHE_DIR=.cache/cuda_ops to override)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
cache="${CACHE_DIR:-$root/.cache/cuda_ops}"
out="${1:-$here/build}"
NVCC="${NVCC:-nvcc}"
PYTHON="${PYTHON:-python3}"
CUTLASS_WHEEL=nvidia_cutlass-4.2.0.0-py3-none-any.whl
CUTLASS_SHA256=f9599ada45c7bcb6bf53f7d3f0a7d154183e53451c01bfa59eecd37dd4a693f6

mkdir -p "$cache" "$out"
out="$(cd "$out" && pwd)"
cd "$cache"
[ -f "$CUTLASS_WHEEL" ] || "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: nvidia-cutlass==4.2.0.0 -d .
echo "$CUTLASS_SHA256  $CUTLASS_WHEEL" | sha256sum --check --status \
  || { echo "error: $CUTLASS_WHEEL does not have the expected sha256 $CUTLASS_SHA256" >&2; exit 1; }
cutlass="$cache/cutlass/cutlass_library/source/include"
if [ ! -f "$cutlass/cutlass/cutlass.h" ]; then
  rm -rf cutlass && unzip -q "$CUTLASS_WHEEL" 'cutlass_library/source/include/*' -d cutlass
fi

# static cudart: only the CUDA driver is needed beside torch; hidden symbols keep CUTLASS's names private
start=$(date +%s)
"$NVCC" -std=c++17 -O3 -DNDEBUG -arch=sm_90a --expt-relaxed-constexpr -I"$cutlass" \
  -Xcompiler=-fPIC,-fvisibility=hidden -shared -cudart static -Xlinker=--exclude-libs,ALL \
  -o "$out/libcips_train_ops.so" "$here/modulated_fc.cu"
echo "built $out/libcips_train_ops.so ($(du -h "$out/libcips_train_ops.so" | cut -f1), $(( $(date +%s) - start )) s)"
