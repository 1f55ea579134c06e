#!/usr/bin/env bash
# The GPU machine's run of benchmarks/render.py (benchmarks/on_gpu.sh says how it runs uninstalled).
# Writes benchmarks/results/render-<gpu>.json.
#   bash benchmarks/render_gpu.sh                  # paper-256, CUDA (+TensorRT where it loads) and CPU
#   bash benchmarks/render_gpu.sh --no-tensorrt    # any option of benchmarks/render.py
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
exec bash benchmarks/on_gpu.sh benchmarks/render.py --device "$DEVICE" "$@"
