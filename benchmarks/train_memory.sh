#!/usr/bin/env bash
# The GPU machine's run of benchmarks/train_memory.py, from the repository root, without installing: a
# package tree of symlinks (cips_edge with export/ and runtime/ inside, as pip would lay it out) on
# PYTHONPATH. Needs torch (CUDA), numpy and Pillow (the data module imports it), as python3 there has.
# Writes benchmarks/results/train-memory-<gpu>.json and, where $OUT is set, copies it and the log there. LIMIT (seconds, default 430) stops the benchmark in
# time for the copy; the JSON holds every process that finished.
#   bash benchmarks/train_memory.sh --quick        # both configs: compiled, no cuDNN autotuning, expandable, plain
#   bash benchmarks/train_memory.sh --configs paper-64 --processes best,budget-0.5
set -uo pipefail
cd "$(dirname "$0")/.."
pkg=$(mktemp -d)
mkdir -p "$pkg/cips_edge"
for f in cips_edge/*; do ln -s "$PWD/$f" "$pkg/cips_edge/"; done
ln -s "$PWD/export" "$pkg/cips_edge/export"
ln -s "$PWD/runtime" "$pkg/cips_edge/runtime"
export PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}"
log=$(mktemp)
status=0
timeout --signal=INT --kill-after=20 "${LIMIT:-430}" "${PYTHON:-python3}" benchmarks/train_memory.py "$@" 2>&1 | tee "$log" || status=$?
if [ -n "${OUT:-}" ]; then
    cp "$log" "$OUT/train-memory.log"
    cp benchmarks/results/train-memory-*.json "$OUT/" 2>/dev/null || true
    cp benchmarks/results/train-memory-*.pickle "$OUT/" 2>/dev/null || true
fi
exit "$status"
