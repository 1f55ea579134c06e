#!/usr/bin/env bash
# Builds runtime/cuda_ops/build/libcips_cuda_ops.so (cips.fast::MatMulLeakyRelu, GridSin and
# NarrowMatMul for ONNX Runtime's CUDA provider). Fetches the CUTLASS headers (PyPI's nvidia-cutlass
# wheel) and ONNX Runtime's C/C++ API headers (Debian's libonnxruntime-dev) into .cache/cuda_ops/ at the
# repository root, checks their sha256, and compiles for sm_90a with nvcc. No GPU is needed to build.
#   bash runtime/cuda_ops/build.sh [OUT_DIR]   (default runtime/cuda_ops/build; NVCC=/path/to/nvcc,
#                                             PYTHON=python3, CACHE_DIR=.cache/cuda_ops to override)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${CACHE_DIR:-$root/.cache/cuda_ops}"
out="${1:-$here/build}"
NVCC="${NVCC:-nvcc}"
PYTHON="${PYTHON:-python3}"

ORT_DEB=libonnxruntime-dev_1.21.0+dfsg-1_amd64.deb  # ORT_API_VERSION 21: loads in any newer ONNX Runtime
ORT_URL="http://deb.debian.org/debian/pool/main/o/onnxruntime/$ORT_DEB"
ORT_SHA256=14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08

# shellcheck source=cutlass.sh
. "$here/cutlass.sh"

mkdir -p "$cache" "$out"
cache="$(cd "$cache" && pwd)" out="$(cd "$out" && pwd)"  # absolute: the steps below run in the cache folder
cd "$cache"
fetch_cutlass "$cache" "$PYTHON"
if [ ! -f "$ORT_DEB" ]; then
  curl -fsSL -o "$ORT_DEB.part" "$ORT_URL" && mv "$ORT_DEB.part" "$ORT_DEB"
fi
verify_sha256 "$ORT_DEB" "$ORT_SHA256"

ort="$cache/ort/usr/include/onnxruntime"
if [ ! -f "$ort/onnxruntime_cxx_api.h" ]; then
  rm -rf ort && dpkg-deb -x "$ORT_DEB" ort
fi

# static cudart: the library needs only the CUDA driver, not a matching libcudart beside ONNX Runtime's;
# hidden symbols and --exclude-libs keep cudart's and CUTLASS's names out of the export table
start=$(date +%s)
"$NVCC" -std=c++17 -O3 -DNDEBUG -arch=sm_90a --expt-relaxed-constexpr \
  -I"$cutlass" -I"$ort" \
  -Xcompiler=-fPIC,-fvisibility=hidden -shared -cudart static -Xlinker=--exclude-libs,ALL \
  -o "$out/libcips_cuda_ops.so" "$here/matmul_leaky_relu.cu" "$here/grid_sin.cu" \
  "$here/narrow_matmul.cu" "$here/grid_lookup.cu"
echo "built $out/libcips_cuda_ops.so ($(du -h "$out/libcips_cuda_ops.so" | cut -f1), $(( $(date +%s) - start )) s)"
