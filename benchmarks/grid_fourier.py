"""How the fp16 grid graph should form each pixel's Fourier features and its ToRGB GEMM (issue 18),
measured before the exporter picks: the same file several times, differing only in the grid graph
(export/pixels.py grid_graph: `fourier` sum, product or gemm; `half_head`, the ToRGB GEMM in float16:
"+h16"), timed in one process in alternating rounds. "sum" is what export writes.

Per variant: ms per 1024x1024 image (float colours, and 8-bit colours as a PNG asks for), ms per 256x256
image in a batch of 16, 4096x4096 once; PSNR against the fp32 pixel path on the same provider at
1024x1024 and on a deep zoom (a 1e-4-wide region, where the features' phases matter); the graph's
static activation peak per call (benchmarks/grid_memory.py's count) at the automatic chunk, for calls
1024 and 256 columns wide (gemm's per-row weights grow with the rows of a call, not its points).

    bash benchmarks/on_gpu.sh benchmarks/grid_fourier.py --out "$OUT/grid-fourier-h200.json"
    python benchmarks/grid_fourier.py --device cpu --preset tiny --rounds 1 --out /tmp/gf.json   # smoke run
"""
from __future__ import annotations

import argparse
import base64
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from cips_edge.core.config import preset
from cips_edge.core.format import KEY_GRID_GRAPH, parse_metadata
from cips_edge.export import export_generator
from cips_edge.export.pixels import file_shared_weights, grid_graph
from cips_edge.model import CIPSGenerator
from cips_edge.runtime import CIPSModel, latent_for_seed, psnr, region_grid, render_image, render_images, render_points
from cips_edge.runtime.model import CUDA

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid_memory import static_peak  # noqa: E402
from render import timed, trained_like  # noqa: E402

DEEP_ZOOM = (0.3, 0.31, 0.3001, 0.3099)  # x0, y0, x1, y1: 1e-4 wide
VARIANTS = {"sum": ("sum", False), "sum+h16": ("sum", True), "product": ("product", False),
            "product+h16": ("product", True), "gemm+h16": ("gemm", True)}


def with_grid_fourier(source: Path, out: Path, fourier: str, half_head: bool = False) -> Path:
    """source with its fp16 grid graph rebuilt from the file's own weights (grid_graph's fourier and half_head)."""
    model = onnx.load(str(source))
    info = parse_metadata({p.key: p.value for p in model.metadata_props}, str(source))
    shared = file_shared_weights(model, info.config)
    graph = grid_graph(info.config, shared, fourier, half_head).SerializeToString()
    for prop in model.metadata_props:
        if prop.key == KEY_GRID_GRAPH + "fp16":
            prop.value = base64.b64encode(graph).decode()
    onnx.save(model, str(out))
    return out


def export_random(preset_name: str, folder: Path) -> Path:
    torch.manual_seed(0)
    generator = CIPSGenerator(preset(preset_name)).eval()
    with torch.no_grad():
        trained_like(generator)
    return export_generator(generator, folder / "sum.onnx", precision="fp16").path


def median_ms(fn, sync, reps: int) -> float:
    """Median ms of reps runs (at least 2) after one warm-up, each waiting for sync."""
    return statistics.median(timed(fn, sync, budget_s=math.inf, max_runs=reps)) * 1000


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper-256")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke run")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--reps", type=int, default=5, help="timed runs per case and round (default 5)")
    parser.add_argument("--big", type=int, default=4096, help="side of the once-rendered big image (default 4096)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="cips-grid-fourier-"))
    base = export_random(args.preset, folder)
    paths = {m: base if m == "sum" else with_grid_fourier(base, folder / f"{m}.onnx", *VARIANTS[m]) for m in VARIANTS}
    models = {m: CIPSModel(p, device=args.device, precision="fp16") for m, p in paths.items()}
    reference = CIPSModel(base, device=args.device, precision="fp32")
    provider = models["sum"].provider
    print(f"provider {provider}, {args.preset}", flush=True)
    if args.device == "cuda" and provider != CUDA:
        raise SystemExit(f"CUDA was asked for but {provider} runs: refusing to report CPU numbers as GPU")
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    style_dim = models["sum"].style_dim
    z16 = np.stack([latent_for_seed(s, style_dim) for s in range(16)])
    side = 1024 if args.device == "cuda" else 64
    small = 256 if args.device == "cuda" else 16
    cases = {
        f"{side}^2": lambda m: render_image(m, z16[0], side, side),
        f"{side}^2 uint8": lambda m: render_image(m, z16[0], side, side, uint8=True),
        f"{small}^2 b16": lambda m: render_images(m, z16, small, small),
    }
    times = {m: {c: [] for c in cases} for m in models}
    for r in range(args.rounds):
        for case, fn in cases.items():
            for mode, model in models.items():
                times[mode][case].append(median_ms(lambda: fn(model), sync, args.reps))
        print(f"round {r + 1}: " + ", ".join(f"{m} {statistics.median(times[m][f'{side}^2']):.2f} ms" for m in models), flush=True)

    ref = render_points(reference, z16[0], region_grid(-1, -1, 1, 1, side, side))[0].reshape(side, side, 3)
    deep_ref = render_points(reference, z16[0], region_grid(*DEEP_ZOOM, 256, 256))[0].reshape(256, 256, 3)
    chunk = models["sum"].grid_chunk
    result = {"preset": args.preset, "device": args.device, "provider": provider,
              "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
              "rounds": args.rounds, "reps": args.reps, "grid_chunk": chunk, "modes": {}}
    for mode, model in models.items():
        start = time.perf_counter()
        render_image(model, z16[0], args.big, args.big, uint8=True)
        sync()
        big_ms = (time.perf_counter() - start) * 1000
        grid = onnx.load_from_string(model.info.grid_graphs["fp16"])
        peaks = {f"{chunk // w}x{w}": round(static_peak(grid, chunk // w, w)[0] / 2**30, 3) for w in (side, small)}
        row = {case: round(statistics.median(v), 3) for case, v in times[mode].items()}
        row.update({
            f"{args.big}^2 uint8 once": round(big_ms, 1),
            "psnr_vs_fp32_db": round(psnr(render_image(model, z16[0], side, side), ref), 2),
            "deep_zoom_psnr_vs_fp32_db": round(psnr(render_image(model, z16[0], 256, 256, region=DEEP_ZOOM), deep_ref), 2),
            "static_peak_gib_per_call": peaks,  # rows x columns of one call
        })
        result["modes"][mode] = row
    for mode, row in result["modes"].items():
        row["vs_sum"] = {c: round(row[c] / result["modes"]["sum"][c], 3) for c in cases}
        print(mode, json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
