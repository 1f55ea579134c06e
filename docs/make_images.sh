#!/usr/bin/env bash
# Remake every picture in README.md and docs/ that shows the packaged model, with the commands printed
# under each picture, into docs/images/. Run it from the repository root after the packaged model changes:
#
#     bash docs/make_images.sh            # everything (the two browser shots need Chromium and selenium)
#     NO_BROWSER=1 bash docs/make_images.sh
#
# The seeds and points are the ones the docs name (seed 7 and 33, seed 33's eye at -0.25 -0.07, the
# pyramid's zoom point). A new model puts its features elsewhere: choose them again, then change them
# here and in the docs' commands together (grep for the old values). Needs the [cpu,zarr] extras and, for
# the GIFs, nothing more. panorama-seed9*.png come from a separate panorama model (docs/rendering.md) and
# train-progress.png is a terminal capture; neither is made here.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-docs/images}  # OUT=DIR: somewhere else, to compare first
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
EYE="-0.25 -0.07"

run() { echo "+ $*"; "$@" >/dev/null; }

# README.md
run cips grid --seeds 0-63 --size 64 --out "$out/default-grid-64.png"
run cips render --seed 7 --size 1024 --out "$out/default-seed7-1024.png"
run cips render --seed 33 --size 1024 --out "$out/default-seed33-1024.png"
# README.md and docs/rendering.md
run cips zoom --seed 33 --center $EYE --factor 6 --frames 24 --fps 12 --out "$out/zoom-seed33.gif"
run cips interpolate --seeds 33,48,22 --frames 24 --loop --fps 12 --out "$out/walk-z.gif"
run cips interpolate --seeds 33,48,22 --frames 24 --loop --fps 12 --space w --out "$out/walk-w.gif"
run cips render --seed 33 --region -0.5 -0.4 0.5 0.6 --size 512 --out "$out/region-seed33.png"
run cips render --seed 33 --region -1 -0.35 1 0.15 --width 1024 --height 256 --out "$out/region-seed33-wide.png"
run cips render --seed 33 --size 512 --fovea $EYE --fovea-radius 0.25 \
    --fovea-map "$out/fovea-seed33-map.png" --out "$out/fovea-seed33.png"
# docs/cluster.md
run cips render --seed 33 --size 8192 --out "$work/seed33.zarr"
run python docs/zarr_zoom.py "$work/seed33.zarr" "$out/zarr-zoom.png" --at -0.21 -0.11
# README.md, docs/viewer.md, docs/web.md: headless Chromium
if [ -z "${NO_BROWSER:-}" ]; then
    run python tests/browser.py "$out/viewer.png"
    run python tests/browser.py --web "$out/web.png"
fi
echo "remade the pictures in $out; check them, then commit them with the model"
