#!/usr/bin/env bash
# Run a benchmark script on the GPU machine from the repository root, without installing: a package tree
# of symlinks (cips_edge with export/, runtime/ and commands/ inside, as pip would lay it out) on PYTHONPATH after
# onnxruntime-gpu's folder (ORTSITE, default /root/ortsite). Where $OUT is set, the log (added to the end of
# $OUT/<script>.log) and the result files the script wrote under benchmarks/results/ are copied there.
#   bash benchmarks/on_gpu.sh benchmarks/command.py --device cuda
set -euo pipefail
cd "$(dirname "$0")/.."
pkg=$(mktemp -d)
mkdir -p "$pkg/cips_edge"
for f in cips_edge/*; do ln -s "$PWD/$f" "$pkg/cips_edge/"; done
ln -s "$PWD/export" "$pkg/cips_edge/export"
ln -s "$PWD/runtime" "$pkg/cips_edge/runtime"
ln -s "$PWD/commands" "$pkg/cips_edge/commands"
ln -s "$PWD/cli.py" "$pkg/cips_edge/cli.py"
export PYTHONPATH="${ORTSITE:-/root/ortsite}:$pkg${PYTHONPATH:+:$PYTHONPATH}"
log=$(mktemp)
stamp=$(mktemp)
repo=$PWD
script="$repo/$1"
shift
status=0
# from a scratch folder: the checkout's own cips_edge/ would shadow the package tree for `python -m`
(cd "$(mktemp -d)" && python "$script" "$@") 2>&1 | tee "$log" || status=$?
if [ -n "${OUT:-}" ]; then
    cat "$log" >> "$OUT/$(basename "$script" .py).log"  # a script run twice keeps both logs
    find "$repo/benchmarks/results" -name '*.json' -newer "$stamp" -exec cp {} "$OUT/" \;
fi
exit "$status"
