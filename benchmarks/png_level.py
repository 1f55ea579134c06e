"""Which zlib level an image PNG is written at: encode time and file size of one render per level, as
`cips render` writes it (Pillow from the 8-bit image in memory, runtime/image.py's PNG_LEVEL).

    python benchmarks/png_level.py                       # seed 7 at 1024 x 1024 of the packaged model, CPU
    python benchmarks/png_level.py --seed 33 --size 512 --reps 9

The image is rendered once; each level is encoded --reps times (median). Writes
benchmarks/results/png-level-<machine>.json.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time
from pathlib import Path

from PIL import Image

from cips_edge.core.format import packaged_model
from cips_edge.runtime import CIPSModel, latent_for_seed, render_image
from cips_edge.runtime.image import PNG_LEVEL

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="ONNX model (default: the packaged one)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--size", type=int, default=1024, help="the image's side, pixels")
    parser.add_argument("--levels", default="1,3,6,9", help="zlib levels, comma-separated")
    parser.add_argument("--reps", type=int, default=7, help="encodes per level (the median is kept)")
    parser.add_argument("--machine", default=f"cpu{os.cpu_count()}", help="name in the results file")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    model = CIPSModel(args.model or packaged_model(), device="cpu")
    rgb = render_image(model, latent_for_seed(args.seed, model.style_dim), args.size, args.size, uint8=True)
    print(f"rendered seed {args.seed} at {args.size}^2 on {model.provider} ({model.precision}); encoding", flush=True)
    image = Image.fromarray(rgb)
    rows = []
    for level in (int(v) for v in args.levels.split(",")):
        times, size = [], 0
        for _ in range(args.reps):
            buffer = io.BytesIO()
            start = time.perf_counter()
            image.save(buffer, format="PNG", compress_level=level)
            times.append(time.perf_counter() - start)
            size = buffer.tell()
        rows.append({"level": level, "ms": round(statistics.median(times) * 1000, 1), "bytes": size})
        print(f"level {level}: {rows[-1]['ms']} ms, {size:,} bytes", flush=True)
    smallest = min(r["bytes"] for r in rows)
    for r in rows:
        r["size_vs_smallest"] = round(r["bytes"] / smallest, 3)
    result = {"benchmark": "png-level", "model": str(args.model or "packaged default.onnx"), "seed": args.seed,
              "size": args.size, "provider": model.provider, "precision": model.precision,
              "reps": args.reps, "png_level_used": PNG_LEVEL, "machine": args.machine,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "levels": rows}
    out = args.out or RESULTS / f"png-level-{args.machine}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
