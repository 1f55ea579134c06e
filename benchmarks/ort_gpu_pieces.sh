#!/usr/bin/env bash
# onnxruntime-gpu for the GPU machine, which has no package index: the wheel (~256 MB) cut into pieces that
# each travel in one device call beside this checkout's tracked files (a call carries at most 64 MiB in
# all). The piece size is what is left of 64 MiB after the tracked tree and a 2 MiB margin, so a larger
# tree gives more, smaller pieces. Pieces go to the git-ignored folders .ortgpu1 ... .ortgpuN; the last
# also holds the wheel's name and sha256. Then one device call per piece, back to back (a warm machine
# keeps /root between calls):
#   piece k < N:  carry [".ortgpuK"], run: mkdir -p /root/ortw && cp .ortgpuK/part* /root/ortw/
#   piece N:      carry [".ortgpuN", ...], run (then the real work, with PYTHONPATH=/root/ortsite, which
#                 benchmarks/on_gpu.sh puts first as ORTSITE):
#     cp .ortgpuN/part* /root/ortw/ && (cd /root/ortw && cat part* > "$(cat $OLDPWD/.ortgpuN/wheel-name)" \
#       && sha256sum -c $OLDPWD/.ortgpuN/sha256) && python3 -m pip install -q --no-index --no-deps \
#       --no-compile --target /root/ortsite /root/ortw/*.whl
#   bash benchmarks/ort_gpu_pieces.sh [VERSION]   (default 1.31.1)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
version=${1:-1.31.1}
tracked=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
piece_mib=$(( (64 * 1048576 - tracked) / 1048576 - 2 ))
if [ "$piece_mib" -lt 4 ]; then
    echo "the tracked files take $((tracked / 1048576)) MiB of a call's 64: no room for pieces" >&2
    exit 2
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$tmp" "onnxruntime-gpu==$version"
wheel=$(ls "$tmp"/onnxruntime_gpu-*.whl)
name=$(basename "$wheel")
(cd "$tmp" && sha256sum "$name" > sha256 && split -b "${piece_mib}M" -d "$name" part)
rm -rf .ortgpu[0-9]*
mkdir -p .git/info
i=0
for p in "$tmp"/part*; do
    i=$((i + 1))
    grep -qx "/.ortgpu$i/" .git/info/exclude 2>/dev/null || echo "/.ortgpu$i/" >> .git/info/exclude
    mkdir -p ".ortgpu$i" && mv "$p" ".ortgpu$i/"
done
cp "$tmp/sha256" ".ortgpu$i/"
echo "$name" > ".ortgpu$i/wheel-name"
joined=$(cat $(for k in $(seq 1 "$i"); do echo ".ortgpu$k/part*"; done) | sha256sum | cut -d' ' -f1)
[ "$joined" = "$(cut -d' ' -f1 ".ortgpu$i/sha256")" ] || { echo "the pieces do not join to the wheel" >&2; exit 1; }
echo "pieces: $i of ${piece_mib} MiB (tracked files: $((tracked / 1048576)) MiB a call); last: .ortgpu$i"
