"""How close a model's int8 pixel path is to its fp32 one, and how much faster: PSNR of the 8-bit
images (runtime/image.py to_uint8) of each seed, and the wall time of int8 over fp32 renders in one
process, the two precisions taking turns. Writes benchmarks/results/int8-quality-cpu2.json.

    python benchmarks/int8_quality.py                       # the packaged model, seeds 0-15, 1024x1024
    python benchmarks/int8_quality.py --model OTHER.onnx --size 512 --out /tmp/int8.json
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cips_edge.metrics import write_report
from cips_edge.runtime import CIPSModel
from cips_edge.runtime.image import psnr_uint8, to_uint8
from cips_edge.runtime.latents import latent_for_seed, parse_seeds
from cips_edge.runtime.render import render_image

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "cips_edge" / "models" / "default.onnx"


def timed_render(model: CIPSModel, z: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    image = render_image(model, z, size, size)
    return to_uint8(image), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX model with an int8 pixel graph")
    parser.add_argument("--seeds", default="0-15", help="seeds to render (as cips render --seed)")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--out", type=Path, default=RESULTS / "int8-quality-cpu2.json")
    args = parser.parse_args()

    models = {p: CIPSModel(args.model, device="cpu", precision=p) for p in ("fp32", "int8")}
    seeds = parse_seeds([args.seeds])
    per_seed, times = [], {"fp32": [], "int8": []}
    for k, seed in enumerate(seeds):
        z = latent_for_seed(seed, models["fp32"].style_dim)
        order = ("fp32", "int8") if k % 2 == 0 else ("int8", "fp32")  # turns: neither always runs first
        images = {}
        for p in order:
            images[p], seconds = timed_render(models[p], z, args.size)
            times[p].append(seconds)
        diff = np.abs(images["int8"].astype(np.int16) - images["fp32"].astype(np.int16))
        row = {"seed": seed, "psnr_db": round(psnr_uint8(images["int8"], images["fp32"]), 2),
               "max_abs_diff": int(diff.max()), "fp32_s": round(times["fp32"][-1], 3),
               "int8_s": round(times["int8"][-1], 3)}
        per_seed.append(row)
        print(f"seed {seed}: {row['psnr_db']:.2f} dB, max |diff| {row['max_abs_diff']}, "
              f"fp32 {row['fp32_s']:.2f} s, int8 {row['int8_s']:.2f} s", flush=True)
    psnrs = [r["psnr_db"] for r in per_seed]
    medians = {p: float(np.median(t)) for p, t in times.items()}
    result = {
        "benchmark": "int8 pixel path against fp32: PSNR of 8-bit renders (peak 255), wall time per render",
        "model": {"path": str(args.model), "bytes": args.model.stat().st_size},
        "size": args.size, "seeds": args.seeds, "threads": models["fp32"].workers,
        "psnr_db": {"min": min(psnrs), "median": float(np.median(psnrs))},
        "seconds_median": {p: round(v, 3) for p, v in medians.items()},
        "int8_over_fp32_time": round(medians["int8"] / medians["fp32"], 3),
        "timing_note": "indicative only: the 2 cores are shared with other work; the precisions take "
                       "turns in one process and the ratio is of medians",
        "per_seed": per_seed,
        "machine": {"platform": platform.platform(), "cores": len(os.sched_getaffinity(0)),
                    "onnxruntime": models["fp32"].ort.__version__,
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    print(f"PSNR min {result['psnr_db']['min']:.2f} dB, median {result['psnr_db']['median']:.2f} dB; "
          f"int8 / fp32 time {result['int8_over_fp32_time']:.2f}")
    write_report(result, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
