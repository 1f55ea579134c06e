"""Where a CUDA render's time goes: GPU kernel times of ONNX Runtime's fp16 grid and pixel graphs, and
the same folded chain written in PyTorch as a floor to compare with, in one process on one GPU.

    python benchmarks/render_profile.py --out benchmarks/results/render-profile-h200.json

Parts (each prints a line and lands in the JSON):
- ort: cips-edge's renderer (CIPSModel, CUDA, fp16, I/O binding) on a 1024^2 image (the grid graph),
  and the same image's points through the pixel graph; the kernels they
  launch are recorded with torch.profiler (CUPTI sees every kernel of the process, ONNX Runtime's
  cuBLAS and its own kernels included) and summed per kernel name.
- batch (--batch B): B latents at --side through render_images (the runtime's one grid call per latent),
  its kernels' sum against the wall time: the GPU's idle share, which fewer, larger calls could win;
- torch: the same per-pixel computation from the same style outputs, in PyTorch fp16 (features in
  float32, the chain in float16, the last GEMM in float32), eager: the same kernels ONNX Runtime could
  pick; and the GEMMs alone (no activation): what cuBLAS does for this shape chain.
- compile (--compile): the torch chain through torch.compile, which may fuse the LeakyReLU into GEMM
  epilogues (max-autotune templates).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from cips_edge.core.config import preset
from cips_edge.export import export_generator
from cips_edge.export.style import fp16_name, weight_names
from cips_edge.model import CIPSGenerator, LRELU_SLOPE
from cips_edge.runtime import CIPSModel, latent_for_seed, pixel_grid, render_image, render_images, render_points
from cips_edge.runtime.coords import grid_chunks
from cips_edge.runtime.model import CUDA_OPTIONS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from render import trained_like  # noqa: E402

DEVICE = "cuda"


def cuda_timed(fn, runs: int = 10) -> float:
    """Median ms of fn() after a warm-up, synchronised."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 3)


def kernel_table(fn, runs: int = 3, top: int = 25) -> list[dict]:
    """GPU time per kernel name over `runs` calls of fn, per call, largest first (the top ones)."""
    return kernel_times(fn, runs)[:top]


def kernel_times(fn, runs: int = 3) -> list[dict]:
    """GPU time per kernel name over `runs` calls of fn, per call, largest first: every kernel."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(runs):
            fn()
        torch.cuda.synchronize()
    totals: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            entry = totals.setdefault(event.name, [0.0, 0])
            entry[0] += event.device_time / 1000  # us -> ms
            entry[1] += 1
    rows = [{"kernel": name[:120], "ms_per_call": round(ms / runs, 3), "launches_per_call": n // runs}
            for name, (ms, n) in totals.items()]
    rows.sort(key=lambda r: -r["ms_per_call"])
    return rows


def print_kernels(rows: list[dict], top: int) -> None:
    """The first `top` rows of a kernel table, one line each."""
    for k in rows[:top]:
        print(f"  {k['ms_per_call']:8.3f} ms  x{k['launches_per_call']:<4} {k['kernel']}", flush=True)


def pixel_constants(model: CIPSModel) -> dict[str, np.ndarray]:
    """The fp16 pixel graph's constants: its own initializers, and (format 3) the per-point weights it
    reads from the file's graph by name."""
    graphs = [onnx.load(model.path).graph, onnx.load_from_string(model.info.pixel_graphs["fp16"]).graph]
    return {t.name: numpy_helper.to_array(t) for graph in graphs for t in graph.initializer}


def torch_chain(path: Path, side: int):
    """The fp16 pixel graph's computation in torch, from the CPU style run of seed 0: returns
    (full(coords) -> rgb, gemms_only(x16) -> last activation, x16 example input)."""
    cpu = CIPSModel(path, device="cpu", precision="fp16")
    z = latent_for_seed(0, cpu.style_dim)[None]
    style = cpu.engine.styles(z, np.ones(1, np.float32))[0]
    consts = pixel_constants(cpu)
    dev = DEVICE
    w = {n: torch.from_numpy(np.ascontiguousarray(style[n])).to(dev) for n in cpu.engine.weight_names}
    # grid_sample wants [1, H, rows, columns]: the fp16 graph's table as it is, or older files' texel rows
    table = cpu.engine.table.astype(np.float32)
    if table.ndim == 2:  # [rows * columns, H]
        table = table.T.reshape(1, table.shape[1], cpu.config.size, -1)
    table = torch.from_numpy(np.ascontiguousarray(table)).to(dev)
    fw = torch.from_numpy(consts["fourier_weight"]).to(dev)
    fb = torch.from_numpy(consts["fourier_bias"]).to(dev)
    folded = weight_names(cpu.config)  # w0_fo, w0_co, w1 ... w{L-1}, rgb_weight
    w0_fo, w0_co = w[fp16_name(folded[0])], w[fp16_name(folded[1])]
    chain = [w[fp16_name(n)] for n in folded[2:-1]]
    rgb = w[folded[-1]]
    h = table.shape[1]

    def full(coords: torch.Tensor) -> torch.Tensor:
        fo = torch.sin(torch.addmm(fb, coords, fw)).half()
        co = F.grid_sample(table, coords.view(1, 1, -1, 2), mode="bilinear", padding_mode="border",
                           align_corners=True).view(h, -1).half()
        x = F.leaky_relu(fo @ w0_fo + co.t() @ w0_co, LRELU_SLOPE)
        for weight in chain:
            x = F.leaky_relu(x @ weight, LRELU_SLOPE)
        return x.float() @ rgb

    def gemms(x: torch.Tensor) -> torch.Tensor:
        for weight in chain:
            x = x @ weight
        return x

    x16 = torch.randn(side * side, chain[0].shape[0], device=dev, dtype=torch.half)
    return full, gemms, x16


def batch_profile(model: CIPSModel, side: int, batch: int) -> dict:
    """render_images of `batch` latents at side x side (the runtime's one grid call per latent): its wall
    time, every kernel's GPU time and their sum, and the GPU's idle share of the wall time (launches, host
    work and copies between the kernels): what fewer, larger calls could win."""
    zs = np.stack([latent_for_seed(seed, model.style_dim) for seed in range(batch)])
    render = lambda: render_images(model, zs, side, side)  # noqa: E731
    ms = cuda_timed(render, runs=5)
    kernels = kernel_times(render)
    busy = round(sum(k["ms_per_call"] for k in kernels), 3)
    out = {"latents": batch, "ms": ms, "mpixel_per_s": round(batch * side * side / ms / 1000, 2),
           "kernel_ms_sum": busy, "idle_share": round(max(0.0, 1 - busy / ms), 3), "kernels": kernels[:25]}
    print(f"ort fp16 {batch} x {side}^2: {ms} ms ({out['mpixel_per_s']} Mpixel/s), kernels {busy} ms, GPU idle "
          f"{100 * out['idle_share']:.0f}% of the wall time; kernels:", flush=True)
    print_kernels(kernels, 12)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", type=int, default=1024, help="image side in pixels (default 1024)")
    p.add_argument("--batch", type=int, default=1, help="also profile a batch of this many latents at --side "
                                                        "(render_images; default 1: no batch)")
    p.add_argument("--preset", default="paper-256", help="generator preset (default paper-256)")
    p.add_argument("--compile", action="store_true", help="also torch.compile the chain (minutes)")
    p.add_argument("--out", type=Path, required=True, help="JSON file")
    p.add_argument("--save-model", type=Path, help="keep the exported model here")
    p.add_argument("--variants", nargs="+", default=[""],
                   help="CUDA provider options to compare, each 'key=value,...' ('' = the defaults)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    g = CIPSGenerator(preset(args.preset)).eval().requires_grad_(False)
    trained_like(g)
    path = args.save_model or Path(tempfile.mkdtemp(prefix="cips-profile-")) / "model.onnx"
    export_generator(g, path, precision="fp16", include=("fp16",))
    side = args.side
    flop = 2 * g.config.macs_per_pixel * side * side
    result = {"benchmark": "render-profile", "preset": args.preset, "side": side,
              "device_name": torch.cuda.get_device_name(), "torch": torch.__version__}

    z = latent_for_seed(0, CIPSModel(path, device="cpu").style_dim)
    result["ort"] = {}
    for variant in args.variants:
        options = dict(item.split("=", 1) for item in variant.split(",") if item)
        saved = dict(CUDA_OPTIONS)
        CUDA_OPTIONS.update(options)
        model = CIPSModel(path, device="cuda", precision="fp16")
        CUDA_OPTIONS.clear()
        CUDA_OPTIONS.update(saved)
        result["onnxruntime"] = model.ort.__version__
        render = lambda: render_image(model, z, side, side)  # noqa: E731
        row = {"cuda_options": options, "ms": cuda_timed(render, runs=5), "kernels": kernel_table(render)}
        # the phases of one render: the style run, the host's coordinates, the pixel band on the GPU
        engine, psi = model.engine, np.ones(1, np.float32)
        style = engine.styles(z[None], psi)[0]
        coords = np.concatenate([c for _, c in grid_chunks(side, side, 1 << 22)])
        row["style_kernels"] = kernel_table(lambda: engine.styles(z[None], psi))
        row["phases_ms"] = {
            "style": cuda_timed(lambda: engine.styles(z[None], psi)),
            "coordinates_host": cuda_timed(lambda: list(grid_chunks(side, side, 1 << 22))),
            "pixels_band": cuda_timed(lambda: engine.render_band(style, coords, model.default_chunk)),
        }
        # the same image as arbitrary points (the pixel graph: GridSample, per-point Fourier features)
        grid = pixel_grid(side, side)
        points = lambda: render_points(model, z, grid)  # noqa: E731
        row["points"] = {"ms": cuda_timed(points, runs=5), "kernels": kernel_table(points)}
        if args.batch > 1:
            row["batch"] = batch_profile(model, side, args.batch)
        result["ort"][variant or "default"] = row
        print(f"ort fp16 {side}^2 {options or ''}: {row['ms']} ms; phases {row['phases_ms']}; kernels:", flush=True)
        print_kernels(row["kernels"], 12)
        print(f"ort fp16 {side}^2 as points: {row['points']['ms']} ms; the style run's kernels:", flush=True)
        print_kernels(row["style_kernels"], 8)
        del model

    full, gemms, x16 = torch_chain(path, side)
    coords = torch.from_numpy(pixel_grid(side, side)).cuda()
    with torch.no_grad():
        ort_rgb = render_image(CIPSModel(path, device="cuda", precision="fp16"), z, side, side).reshape(-1, 3)
        result["torch_vs_ort_max_abs"] = float(np.abs(full(coords).cpu().numpy() - ort_rgb).max())
        result["torch_eager_ms"] = cuda_timed(lambda: full(coords))
        result["torch_gemms_only_ms"] = cuda_timed(lambda: gemms(x16))
        result["torch_kernels"] = kernel_table(lambda: full(coords))
        print(f"torch eager fp16 chain: {result['torch_eager_ms']} ms; GEMMs alone {result['torch_gemms_only_ms']} ms; "
              f"max |torch - ort| {result['torch_vs_ort_max_abs']:.4f}",
              flush=True)
        print_kernels(result["torch_kernels"], 10)
        if args.compile:
            start = time.perf_counter()
            compiled = torch.compile(full, mode="max-autotune-no-cudagraphs")
            compiled(coords)
            result["compile_s"] = round(time.perf_counter() - start, 1)
            result["torch_compiled_ms"] = cuda_timed(lambda: compiled(coords))
            result["torch_compiled_kernels"] = kernel_table(lambda: compiled(coords))
            print(f"torch.compile chain: {result['torch_compiled_ms']} ms (compiled in {result['compile_s']} s)",
                  flush=True)
    result["tflop_per_image"] = round(flop / 1e12, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
