"""Foveated against full renders: points the model computes, PSNR inside and outside the fovea, time.
Writes benchmarks/results/foveation-<model>-<size>-<device>.json.

    python benchmarks/foveation.py                       # packaged model, 1024 x 1024, CPU
    python benchmarks/foveation.py --device cuda --out benchmarks/results/foveation-default-1024-cuda.json

PSNR is on the 8-bit images (what `cips render` writes): 10 log10(255^2 / MSE); the fovea's is infinite
when its pixels are identical to the full render's, which is what foveated rendering promises. Times are
the best of --repeats runs of the rendering alone (no PNG): wall clock, and the CPU time of the process
(all threads), which other work on a shared machine disturbs far less.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

from cips_edge.runtime import (CIPSModel, fovea_plan, latent_for_seed, psnr_uint8, render_foveated, render_image,
                               to_uint8)

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "cips_edge" / "models" / "default.onnx"


def best_of(repeats: int, render) -> tuple[np.ndarray, float, float]:
    """(result, best wall seconds, best process CPU seconds) of `repeats` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        rgb = render()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return rgb, min(wall), min(cpu)


def number(x: float) -> float | str:
    return "inf" if math.isinf(x) else round(x, 2)  # JSON has no infinity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX model (default: the packaged one)")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--seeds", default="7,33", help="comma list of seeds")
    parser.add_argument("--gaze", type=float, nargs=2, default=(0.0, -0.1), metavar=("X", "Y"),
                        help="fovea centre in frame units")
    parser.add_argument("--radii", default="0.125,0.25,0.5", help="comma list of fovea radii in frame units")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per render (the best counts)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file (default: results/foveation-<model stem>-<size>-<device>.json)")
    args = parser.parse_args()

    model = CIPSModel(args.model, device=args.device)
    n = args.size
    cases = []
    for seed in (int(s) for s in args.seeds.split(",")):
        z = latent_for_seed(seed, model.style_dim)
        full, full_s, full_cpu = best_of(args.repeats, lambda: render_image(model, z, n, n))
        full8 = to_uint8(full)
        for radius in (float(r) for r in args.radii.split(",")):
            plan = fovea_plan(n, n, tuple(args.gaze), radius)
            fov, fov_s, fov_cpu = best_of(args.repeats, lambda: render_foveated(model, z, plan))
            fov8, inside = to_uint8(fov), plan.fovea
            case = {
                "seed": seed, "radius": radius, "points": plan.points, "full_points": n * n,
                "fewer_points": round(n * n / plan.points, 2), "fovea_pixels": int(inside.sum()),
                "fovea_identical": bool(np.array_equal(fov[inside], full[inside])),
                "psnr_fovea_db": number(psnr_uint8(fov8[inside], full8[inside])),
                "psnr_outside_db": number(psnr_uint8(fov8[~inside], full8[~inside])),
                "psnr_image_db": number(psnr_uint8(fov8, full8)),
                "full_s": round(full_s, 3), "foveated_s": round(fov_s, 3), "speedup": round(full_s / fov_s, 2),
                "full_cpu_s": round(full_cpu, 3), "foveated_cpu_s": round(fov_cpu, 3),
                "cpu_speedup": round(full_cpu / fov_cpu, 2),
            }
            cases.append(case)
            print(json.dumps(case))

    import onnxruntime

    result = {
        "what": __doc__.splitlines()[0],
        "model": str(args.model.name), "size": n, "gaze": list(args.gaze), "provider": model.provider,
        "machine": {"platform": platform.platform(), "cores": len(os.sched_getaffinity(0)),
                    "onnxruntime": onnxruntime.__version__, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "cases": cases,
    }
    out = args.out or RESULTS / f"foveation-{args.model.stem}-{n}-{args.device}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
