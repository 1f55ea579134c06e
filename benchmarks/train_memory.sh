#!/usr/bin/env bash
# The GPU machine's run of benchmarks/train_memory.py (benchmarks/on_gpu.sh says how it runs uninstalled).
# Needs torch (CUDA), numpy and Pillow (the data module imports it). Writes
# benchmarks/results/train-memory-<gpu>.json after every process; LIMIT (seconds, default 420) stops
# starting and running processes in time for on_gpu.sh to copy it to $OUT.
#   bash benchmarks/train_memory.sh --quick        # both configs: compiled, cuDNN autotuning on, expandable, plain
#   bash benchmarks/train_memory.sh --configs paper-64 --processes best,budget-0.5
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash benchmarks/on_gpu.sh benchmarks/train_memory.py --time-limit "${LIMIT:-420}" "$@"
