"""Render speed, side by side in one process: eager PyTorch written like the original code (whole image
in one batch, benchmarks/original_style.py) against cips-edge's ONNX Runtime renderer on every provider
and precision this machine has, on the same weights. Writes benchmarks/results/render-<machine>.json
and prints a Markdown table.

    python benchmarks/render.py                        # GPU machine: paper-256, CUDA (+TensorRT) and CPU
    python benchmarks/render.py --quick                # any machine: edge-64, CPU only, small sizes

Per case: ms per image (median of the timed runs after one warm-up), Mpixel/s, achieved TFLOP/s (the
per-pixel matmul work of the config, 2 x macs_per_pixel) and its share of the matmul peak measured here
in the same run (torch, dense 8192^3 on the GPU, 2048^3 on the CPU), peak GPU memory (torch's peak for
eager; for ONNX Runtime the device's used memory above what it was before the session, sampled) and
peak host memory (resident set above the case's start, sampled). PSNR of fp16 and int8 against fp32.

Weights: random init made "trained-like" (trained_like below): biases drawn instead of zeros, and the
ToRGB weights scaled so that the output has the spread of real images (std ~0.5) rather than the
init's ~2.5 (which would exaggerate float16's absolute error).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from cips_edge.core.config import preset
from cips_edge.model import CIPSGenerator
from cips_edge.runtime import CIPSModel, available_providers, latent_for_seed, pixel_grid, psnr, render_image, render_images

sys.path.insert(0, str(Path(__file__).resolve().parent))
from original_style import render_original_style  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CUDA, TRT = "CUDAExecutionProvider", "TensorrtExecutionProvider"
FULL_CASES = [(256, 1), (256, 16), (1024, 1), (4096, 1)]  # (side, batch)
QUICK_CASES = [(64, 1), (64, 4), (128, 1), (256, 1)]
CPU_CASES_ON_GPU_MACHINE = [(256, 1)]  # the CPU renders the paper config at ~1 s per 256^2


# -- weights ---------------------------------------------------------------------------------------
@torch.no_grad()
def trained_like(g: CIPSGenerator, seed: int = 0, rgb_std: float = 0.5) -> dict:
    """Random init with drawn biases (N(0, 0.2) for the modulated layers, N(0, 0.05) for ToRGB) and the
    ToRGB weights scaled so that the output's std over a grid of 8 latents is rgb_std."""
    gen = torch.Generator().manual_seed(seed)
    for m in [g.input_layer, *g.layers]:
        m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
    for t in g.to_rgbs:
        t.fc.bias.copy_(0.05 * torch.randn(3, generator=gen))
    z = torch.randn(8, g.config.style_dim, generator=gen)
    coords = pixel_grid(32, 32)
    before = float(g(torch.from_numpy(coords)[None].expand(8, -1, -1), z).std())
    for t in g.to_rgbs:
        t.fc.weight.mul_(rgb_std / before)
    after = float(g(torch.from_numpy(coords)[None].expand(8, -1, -1), z).std())
    return {"rgb_std_init": round(before, 3), "rgb_std": round(after, 3)}


# -- measuring -------------------------------------------------------------------------------------
class PeakMemory:
    """Samples resident host memory (and the GPU's used memory) in a thread; peaks above the start."""

    def __init__(self, gpu: bool, interval: float = 0.01):
        self.gpu, self.interval = gpu, interval

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def gpu_used(self) -> int:
        free, total = torch.cuda.mem_get_info()
        return total - free

    def __enter__(self):
        self.host0, self.host = self.rss(), 0
        self.gpu0 = self.gpu_used() if self.gpu else 0
        self.gpu_peak = self.gpu0
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def _loop(self):
        while self.running:
            self.host = max(self.host, self.rss())
            if self.gpu:
                self.gpu_peak = max(self.gpu_peak, self.gpu_used())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()

    def result(self, gpu_base: int | None = None) -> dict:
        out = {"peak_host_gib": round(max(0, self.host - self.host0) / 2**30, 3)}
        if self.gpu:
            base = self.gpu0 if gpu_base is None else gpu_base
            out["peak_gpu_gib"] = round((self.gpu_peak - base) / 2**30, 3)
            out["peak_gpu_device_used_gib"] = round(self.gpu_peak / 2**30, 3)
        return out


def cuda_ops_record() -> dict:
    """The cips.fast library CUDA sessions load ($CIPS_CUDA_OPS) and the ops they fuse ($CIPS_CUDA_OPS_FUSE),
    both None without it. runtime/model.py refuses to open a session that cannot load the library, so a
    result that names it rendered with those ops."""
    from cips_edge.runtime.model import cuda_ops

    chosen = cuda_ops()
    return {"cuda_ops_library": chosen[0] if chosen else None, "cuda_ops_fused": list(chosen[1]) if chosen else None}


def timed(fn, sync=lambda: None, budget_s: float = 2.0, max_runs: int = 10) -> list[float]:
    """One warm-up, then runs until budget_s is spent (at least 2, at most max_runs); seconds each."""
    fn()
    sync()
    times: list[float] = []
    while len(times) < 2 or (sum(times) < budget_s and len(times) < max_runs):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def matmul_peak(device: str) -> dict:
    """Dense matmul TFLOP/s measured with torch: fp16 and fp32 (TF32 off) on the GPU, fp32 on the CPU."""
    out = {}
    if device == "cuda":
        n = 8192
        for name, dtype, tf32 in (("fp16", torch.float16, False), ("fp32", torch.float32, False),
                                  ("tf32", torch.float32, True)):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            a, b = (torch.randn(n, n, device="cuda", dtype=dtype) for _ in range(2))
            times = timed(lambda: a @ b, torch.cuda.synchronize, budget_s=1.0, max_runs=20)
            out[name] = round(2 * n**3 / min(times) / 1e12, 1)
        torch.backends.cuda.matmul.allow_tf32 = False
        del a, b
        torch.cuda.empty_cache()
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    out["cpu_fp32"] = round(2 * n**3 / min(timed(lambda: a @ b, budget_s=1.0)) / 1e12, 3)
    return out


def figure(x: float) -> float:
    """Four significant digits."""
    return float(f"{x:.4g}")


def report(name: str, side: int, batch: int, times: list[float], mflop_per_pixel: float, peak: float | None,
           memory: dict, **extra) -> dict:
    ms = statistics.median(times) * 1000 / batch
    pixels = side * side
    tflops = mflop_per_pixel * 1e6 * pixels / (ms / 1000) / 1e12
    row = {"case": f"{side}x{side} b{batch}", "side": side, "batch": batch, "ms_per_image": figure(ms),
           "mpixel_per_s": figure(pixels / (ms / 1000) / 1e6), "achieved_tflops": figure(tflops),
           "share_of_peak": figure(tflops / peak) if peak else None, "runs": len(times), **memory, **extra}
    print(f"  {name:<28} {row['case']:<14} {ms:10.2f} ms/image {row['mpixel_per_s']:9.2f} Mpx/s "
          f"{tflops:8.3f} TFLOP/s" + (f" ({100 * row['share_of_peak']:.0f}% of peak)" if peak else ""), flush=True)
    return row


# -- the two ways of rendering ---------------------------------------------------------------------
def eager_cases(g: CIPSGenerator, cases, device: str, peak: float, mflop: float) -> list[dict]:
    """The original code's way: fp32 eager, whole images in one batch; torch's default backend flags
    (cuDNN may use TF32, as the original code did), recorded in the result."""
    rows = []
    gd = g.to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for side, batch in cases:
        z = torch.from_numpy(np.stack([latent_for_seed(s, g.config.style_dim) for s in range(batch)])).to(device)
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            need = 13.1 * 2**30 * batch * side * side / 2**20  # the original code's ~13 GB per Mpixel (CIPS.md)
            if need > 0.9 * torch.cuda.mem_get_info()[0]:
                rows.append({"case": f"{side}x{side} b{batch}", "side": side, "batch": batch,
                             "skipped": f"needs ~{need / 2**30:.0f} GiB in one batch"})
                print(f"  eager torch fp32            {side}x{side} b{batch}: skipped ({rows[-1]['skipped']})")
                continue
        with PeakMemory(gpu=False) as mem:
            times = timed(lambda: render_original_style(gd, z, side, side), sync)
        memory = mem.result()
        if device == "cuda":
            memory["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        rows.append(report("eager torch fp32", side, batch, times, mflop, peak, memory))
    g.cpu()
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def runtime_cases(path: Path, device: str, precision: str, cases, peak: float, mflop: float,
                  chunk: int | None = None, budget_s: float = 2.0) -> dict:
    """cips-edge's renderer: one CIPSModel, the cases in order (the session's GPU memory only grows)."""
    gpu = device != "cpu"
    base = PeakMemory(gpu).gpu_used() if gpu else None
    model = CIPSModel(path, device=device, precision=precision)
    if device == "cuda" and model.provider != CUDA:
        raise SystemExit(f"CUDA was asked for but {model.provider} runs: refusing to report CPU numbers as GPU")
    name = f"ort {model.provider.replace('ExecutionProvider', '')} {model.precision}"
    out = {"provider": model.provider, "providers": model.providers, "precision": model.precision,
           "chunk": chunk or model.default_chunk, "cases": []}
    for side, batch in cases:
        z = np.stack([latent_for_seed(s, model.style_dim) for s in range(batch)])
        render = ((lambda: render_image(model, z[0], side, side, chunk=chunk)) if batch == 1
                  else (lambda: render_images(model, z, side, side, chunk=chunk)))
        with PeakMemory(gpu) as mem:
            times = timed(render, budget_s=budget_s)
        out["cases"].append(report(name, side, batch, times, mflop, peak, mem.result(base)))
    del model
    return out


def tensorrt_child(path: Path, precision: str, cases, peak: float, mflop: float, timeout: int) -> dict:
    """TensorRT in a child process: its engine build may take minutes or crash; the run goes on."""
    args = [sys.executable, __file__, "--child-tensorrt", str(path), "--precision", precision,
            "--child-args", json.dumps({"cases": cases, "peak": peak, "mflop": mflop})]
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout} s (engine build?)"}
    lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
    if r.returncode != 0 or not lines:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {r.returncode}: {tail[:300]}"}
    return json.loads(lines[-1])


def quality(path: Path, device: str, side: int, cpu_side: int) -> dict:
    """PSNR against fp32 on the same provider, seed 0: fp16 on the GPU (or the CPU without one), int8 on
    the CPU (cpu_side: the paper config is slow there)."""
    z, out = latent_for_seed(0, CIPSModel(path, device="cpu").style_dim), {}
    runs = [("fp16", device, side), ("int8", "cpu", cpu_side)]
    for precision, dev, n in runs:
        ref = render_image(CIPSModel(path, device=dev, precision="fp32"), z, n, n)
        model = CIPSModel(path, device=dev, precision=precision)
        out[f"{precision}_vs_fp32_db"] = round(psnr(render_image(model, z, n, n), ref), 2)
        out[f"{precision}_on"] = f"{model.provider} {n}x{n}"
    return out


# -- the run ---------------------------------------------------------------------------------------
def machine_name(device: str) -> str:
    if device == "cuda":
        name = torch.cuda.get_device_name().lower()
        for short in ("h200", "h100", "a100", "l40s", "l4"):
            if short in name:
                return short
        return name.split()[-1]
    return f"cpu{os.cpu_count()}"


def run(args) -> dict:
    have = available_providers()
    cuda = args.device == "cuda" or (args.device == "auto" and CUDA in have and torch.cuda.is_available())
    if args.device == "cuda" and not (CUDA in have and torch.cuda.is_available()):
        raise SystemExit(f"--device cuda: onnxruntime providers {have}, torch.cuda {torch.cuda.is_available()}")
    device = "cuda" if cuda else "cpu"
    cases = [tuple(c) for c in (args.cases or (QUICK_CASES if args.quick else FULL_CASES))]
    config = preset(args.preset or ("edge-64" if args.quick else "paper-256"))
    mflop = 2 * config.macs_per_pixel / 1e6
    torch.manual_seed(0)
    g = CIPSGenerator(config).eval().requires_grad_(False)
    weights = trained_like(g)
    result = {"benchmark": "render", "preset": args.preset or ("edge-64" if args.quick else "paper-256"),
              "mflop_per_pixel": round(mflop, 3), "weights": weights, "machine": machine_name(device),
              "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
              "cpu_threads": os.cpu_count(), "torch": torch.__version__, "providers_available": have,
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "torch_flags": {
                  "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                  "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}}
    import onnxruntime

    result["onnxruntime"] = onnxruntime.__version__
    result.update(cuda_ops_record())
    print(f"render benchmark: {result['preset']} ({mflop:.2f} MFLOP/pixel) on {result['device_name']}", flush=True)
    start = time.perf_counter()
    result["matmul_peak_tflops"] = peaks = matmul_peak(device)
    print(f"  matmul peak (torch): {peaks}", flush=True)

    from cips_edge.export import export_generator

    path = args.save_model or Path(tempfile.mkdtemp(prefix="cips-render-bench-")) / "model.onnx"
    t = time.perf_counter()
    precision = "fp16" if cuda else "fp32"
    exported = export_generator(g, path, precision=precision, include=("fp16", "int8"))
    result["export"] = {"seconds": round(time.perf_counter() - t, 1), "mb": round(exported.bytes / 1e6, 1),
                        "fp32_rel_error": exported.rel_error, "int8": exported.int8}
    print(f"  exported {path} in {result['export']['seconds']} s", flush=True)

    result["eager"] = {}
    cpu_cases = cases if not cuda else CPU_CASES_ON_GPU_MACHINE
    if cuda:
        result["eager"]["cuda"] = eager_cases(g, cases, "cuda", peaks["tf32"], mflop)
    result["eager"]["cpu"] = eager_cases(g, cpu_cases, "cpu", peaks["cpu_fp32"], mflop)

    result["runtime"] = []
    if cuda:
        for precision in ("fp32", "fp16"):
            result["runtime"].append(runtime_cases(path, "cuda", precision, cases, peaks[precision], mflop))
        if TRT in have and not args.no_tensorrt:
            trt = tensorrt_child(path, "fp16", cases[:3], peaks["fp16"], mflop, args.tensorrt_timeout)
            result["runtime"].append({"provider": TRT, "precision": "fp16", **trt})
            print(f"  TensorRT: {trt.get('error', 'ran')}", flush=True)
        result["chunk_sweep_1024_fp16"] = chunk_sweep(path, peaks["fp16"], mflop)
    for precision in ("fp32", "int8"):
        result["runtime"].append(runtime_cases(path, "cpu", precision, cpu_cases, peaks["cpu_fp32"], mflop))
    largest = max(s for s, _ in cases)
    result["psnr"] = quality(path, device, min(largest, 1024), 256 if cuda else largest)
    print(f"  PSNR: {result['psnr']}", flush=True)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def chunk_sweep(path: Path, peak: float, mflop: float) -> list[dict]:
    """CUDA fp16, 1024^2: ms per image for power-of-two chunks (what the automatic chunk should be)."""
    model = CIPSModel(path, device="cuda", precision="fp16")
    z = latent_for_seed(0, model.style_dim)
    rows = []
    for chunk in (1 << 15, 1 << 16, 1 << 17, 1 << 18, 1 << 19, 1 << 20):
        times = timed(lambda: render_image(model, z, 1024, 1024, chunk=chunk), budget_s=0.5)
        rows.append({"chunk": chunk, "ms_per_image": round(statistics.median(times) * 1000, 3)})
    # what a PNG render asks for: the 8-bit colours, converted on the GPU, at the automatic chunk
    times = timed(lambda: render_image(model, z, 1024, 1024, uint8=True), budget_s=0.5)
    rows.append({"chunk": "auto", "uint8": True, "ms_per_image": round(statistics.median(times) * 1000, 3)})
    print(f"  chunk sweep (CUDA fp16 1024^2, auto {model.grid_chunk if model.grid_ready else model.default_chunk}): "
          f"{rows}", flush=True)
    return rows


def single(args) -> None:
    """One render in a fresh process, for whole-process timers: eager torch on the benchmark's weights
    (--preset, seed 0, trained-like), or the runtime on a model file (--single ort --model M.onnx)."""
    side = args.side
    if args.single == "eager":
        torch.manual_seed(0)
        g = CIPSGenerator(preset(args.preset or "edge-64")).eval().requires_grad_(False)
        trained_like(g)
        z = torch.from_numpy(latent_for_seed(0, g.config.style_dim))[None]
        rgb = render_original_style(g, z, side, side)[0].permute(1, 2, 0).numpy()
    else:
        model = CIPSModel(args.model, device="cpu", precision=args.precision if args.precision != "auto" else None)
        rgb = render_image(model, latent_for_seed(0, model.style_dim), side, side)
    print(f"{args.single}: {side}x{side}, mean {float(rgb.mean()):.4f}")


def child_tensorrt(args) -> None:
    spec = json.loads(args.child_args)
    out = runtime_cases(Path(args.child_tensorrt), "tensorrt", args.precision, [tuple(c) for c in spec["cases"]],
                        spec["peak"], spec["mflop"])
    print(json.dumps(out))


def table(result: dict) -> str:
    """Markdown rows: one per (renderer, case)."""
    lines = ["| renderer | case | ms/image | Mpixel/s | TFLOP/s (share of peak) | peak GPU GiB | peak host GiB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    blocks = [(f"eager torch fp32 ({dev})", rows) for dev, rows in result["eager"].items()]
    blocks += [(f"ort {r['provider'].replace('ExecutionProvider', '')} {r['precision']}",
                r.get("cases") or [{"case": "-", "skipped": r.get("error", "no result")}]) for r in result["runtime"]]
    for name, rows in blocks:
        for row in rows:
            if "skipped" in row:
                lines.append(f"| {name} | {row['case']} | skipped: {row['skipped']} | | | | |")
                continue
            share = f" ({100 * row['share_of_peak']:.0f}%)" if row.get("share_of_peak") else ""
            lines.append(f"| {name} | {row['case']} | {row['ms_per_image']:.2f} | {row['mpixel_per_s']:.2f} | "
                         f"{row['achieved_tflops']:.3f}{share} | {row.get('peak_gpu_gib', '')} | {row['peak_host_gib']} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="edge-64 and small sizes (64-256 px): a few minutes on a CPU")
    p.add_argument("--preset", help="generator preset (default: paper-256; edge-64 with --quick)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"),
                   help="cuda: fail unless CUDA runs; auto: CUDA where onnxruntime and torch have it")
    p.add_argument("--cases", type=json.loads, help='JSON list of [side, batch], e.g. "[[256, 1], [1024, 1]]"')
    p.add_argument("--no-tensorrt", action="store_true", help="skip the TensorRT provider")
    p.add_argument("--tensorrt-timeout", type=int, default=120, help="seconds for the TensorRT child (default 120)")
    p.add_argument("--out", type=Path, help="JSON file (default: benchmarks/results/render-<machine>.json)")
    p.add_argument("--save-model", type=Path, help="keep the exported model (fp32, fp16 and int8 pixel graphs) here")
    p.add_argument("--single", choices=("eager", "ort"), help="one render of --side pixels in this process, nothing "
                   "written: for whole-process timers (eager: --preset's benchmark weights; ort: --model)")
    p.add_argument("--side", type=int, default=256, help="--single: image side in pixels (default 256)")
    p.add_argument("--model", type=Path, help="--single ort: the model file")
    p.add_argument("--child-tensorrt", help=argparse.SUPPRESS)
    p.add_argument("--child-args", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="auto", help="--single ort: fp32, fp16, int8 (default: the file's own)")
    args = p.parse_args(argv)
    if args.child_tensorrt:
        return child_tensorrt(args)
    if args.single:
        return single(args)
    result = run(args)
    out = args.out or RESULTS / f"render-{result['machine']}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    print(f"wrote {out} ({result['wall_s']} s)")


if __name__ == "__main__":
    main()
