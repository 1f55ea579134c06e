#!/usr/bin/env bash
# The GPU machine's run of benchmarks/render.py, from the repository root, without installing: a package
# tree of symlinks (cips_edge with export/ and runtime/ inside, as pip would lay it out) on PYTHONPATH
# after onnxruntime-gpu's folder (ORTSITE, default /root/ortsite). Writes
# benchmarks/results/render-<gpu>.json and, where $OUT is set, copies it and the log there.
#   bash benchmarks/render_gpu.sh                  # paper-256, CUDA (+TensorRT where it loads) and CPU
#   bash benchmarks/render_gpu.sh --no-tensorrt    # any option of benchmarks/render.py
set -euo pipefail
cd "$(dirname "$0")/.."
pkg=$(mktemp -d)
mkdir -p "$pkg/cips_edge"
for f in cips_edge/*; do ln -s "$PWD/$f" "$pkg/cips_edge/"; done
ln -s "$PWD/export" "$pkg/cips_edge/export"
ln -s "$PWD/runtime" "$pkg/cips_edge/runtime"
export PYTHONPATH="${ORTSITE:-/root/ortsite}:$pkg${PYTHONPATH:+:$PYTHONPATH}"
log=$(mktemp)
status=0
python benchmarks/render.py --device "${DEVICE:-cuda}" "$@" 2>&1 | tee "$log" || status=$?
if [ -n "${OUT:-}" ]; then
    cp "$log" "$OUT/render.log"
    cp benchmarks/results/render-*.json "$OUT/" 2>/dev/null || true
fi
exit "$status"
