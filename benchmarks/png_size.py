"""How large a giant streamed PNG comes out, per render path, estimated from strips (issue 18: a 32768^2
PNG of seed 7 on the H200 is 176 MB from the packaged model through the fp16 grid graph,
benchmarks/results/gigapixel-h200-32768.json, and 55 MB from the 1.05M-image emoji model through the
fp32 point path, the same results file at commit 77ab61c).

    python benchmarks/png_size.py                                   # this machine's CPU, packaged model
    bash benchmarks/on_gpu.sh benchmarks/png_size.py --device cuda  # the GPU machine
    python benchmarks/png_size.py --model old.onnx --model default  # several models

Renders `--strips` bands of `--rows` rows, evenly spaced over the height of a --size x --size image,
through each path (fp32 points, fp16 points, fp16 grid graph where the file has one), and deflates them
as the streamed PNG does (runtime/pngstream.py: bands of 8 rows at 32768 wide, adaptive filters) at zlib
levels 3 and 6. Estimate = strips' bytes x height / (strips x rows). Also how many 8-bit values differ
from the fp32 point path's. Writes benchmarks/results/png-size-<device>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from cips_edge.core.format import packaged_model
from cips_edge.runtime import CIPSModel, UserError, latent_for_seed, pngstream, render_image, render_points, to_uint8
from cips_edge.runtime.coords import region_grid
from cips_edge.runtime.stream import BLOCK_PIXELS

RESULTS = Path(__file__).resolve().parent / "results"
PATHS = [("fp32 points", "fp32", False), ("fp16 points", "fp16", False), ("fp16 grid", "fp16", True)]


def strips(size: int, count: int, rows: int) -> list[tuple[float, float]]:
    """(y0, y1) of each strip: its first and last row's y' on the full image's pixel grid."""
    tops = np.linspace(0, size - rows, count).astype(int)
    return [(-1 + 2 * t / (size - 1), -1 + 2 * (t + rows - 1) / (size - 1)) for t in tops]


def render_strip(model: CIPSModel, z: np.ndarray, grid: bool, size: int, rows: int, y0: float, y1: float) -> np.ndarray:
    if grid:
        return render_image(model, z, rows, size, region=(-1.0, y0, 1.0, y1), uint8=True)
    return to_uint8(render_points(model, z, region_grid(-1.0, y0, 1.0, y1, rows, size))[0].reshape(rows, size, 3))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="a model file, or 'default' (repeatable; default: default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--size", type=int, default=32768, help="the image's side, pixels")
    parser.add_argument("--strips", type=int, default=8)
    parser.add_argument("--rows", type=int, default=64, help="rows per strip")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    band = max(1, min(args.rows, BLOCK_PIXELS // args.size))  # the stream's band height at this width
    result = {"benchmark": "png-size", "device": args.device, "seed": args.seed, "size": args.size,
              "strips": args.strips, "rows": args.rows, "band_rows": band, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "models": []}
    for name in args.model or ["default"]:
        path = packaged_model() if name == "default" else Path(name)
        entry = {"model": str(name), "paths": []}
        reference: list[np.ndarray] = []  # the first path's strips (fp32 points)
        for label, precision, grid in PATHS:
            try:
                model = CIPSModel(path, device=args.device, precision=precision)
            except UserError as e:  # a file without fp16
                entry["paths"].append({"path": label, "skipped": str(e).splitlines()[0][:200]})
                continue
            if grid and not model.grid_ready:
                entry["paths"].append({"path": label, "skipped": "no grid graph for this precision/provider"})
                continue
            z = latent_for_seed(args.seed, model.style_dim)
            sizes, differ, start = {3: 0, 6: 0}, [], time.perf_counter()
            for k, (y0, y1) in enumerate(strips(args.size, args.strips, args.rows)):
                pixels = render_strip(model, z, grid, args.size, args.rows, y0, y1)
                for level in sizes:
                    sizes[level] += sum(len(pngstream.encode_band(pixels[r:r + band], False, level)[0])
                                        for r in range(0, args.rows, band))
                if len(reference) <= k:
                    reference.append(pixels)
                differ.append(float(np.mean(pixels != reference[k])))
            scale = args.size / (args.strips * args.rows)
            row = {"path": label, "provider": model.provider, "seconds": round(time.perf_counter() - start, 1),
                   "estimate_mb": {f"level_{lv}": round(s * scale / 1e6, 1) for lv, s in sizes.items()},
                   "values_differing_from_fp32_points": round(float(np.mean(differ)), 4)}
            print(json.dumps({"model": str(name), **row}), flush=True)
            entry["paths"].append(row)
        result["models"].append(entry)
    out = args.out or RESULTS / f"png-size-{args.device}{os.cpu_count() if args.device == 'cpu' else ''}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
