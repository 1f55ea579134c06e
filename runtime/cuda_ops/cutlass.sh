# The CUTLASS headers the CUDA libraries build against, sourced by runtime/cuda_ops/build.sh and
# cips_edge/train/cuda_ops/build.sh: fetch_cutlass CACHE PYTHON downloads PyPI's nvidia-cutlass wheel into
# CACHE once, checks its sha256, unpacks its headers and sets $cutlass to their include folder.

CUTLASS_WHEEL=nvidia_cutlass-4.2.0.0-py3-none-any.whl
CUTLASS_SHA256=f9599ada45c7bcb6bf53f7d3f0a7d154183e53451c01bfa59eecd37dd4a693f6

verify_sha256() {  # file sha256
  echo "$2  $1" | sha256sum --check --status || { echo "error: $1 does not have the expected sha256 $2" >&2; exit 1; }
}

fetch_cutlass() {  # cache python
  [ -f "$1/$CUTLASS_WHEEL" ] || "$2" -m pip download --quiet --no-deps --only-binary=:all: nvidia-cutlass==4.2.0.0 -d "$1"
  verify_sha256 "$1/$CUTLASS_WHEEL" "$CUTLASS_SHA256"
  cutlass="$1/cutlass/cutlass_library/source/include"
  if [ ! -f "$cutlass/cutlass/cutlass.h" ]; then
    rm -rf "$1/cutlass" && unzip -q "$1/$CUTLASS_WHEEL" 'cutlass_library/source/include/*' -d "$1/cutlass"
  fi
}
