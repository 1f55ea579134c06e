"""Where a training step's GPU time goes (issue 9): kernel times per phase (D step, R1, G step,
optimizers + EMA) for one or more benchmark paths, grouped into GEMMs, convolutions, compiled (Triton)
kernels, eager elementwise/reduction kernels, optimizer kernels and copies, with the largest kernels and
the operators (with their input shapes) that launched the most kernel time.

    python benchmarks/train_profile.py --preset paper-256 --batch 16 --paths fast,fast+compile \\
        --out benchmarks/results/train-profile-paper-256-h200.json

torch.profiler (CUPTI) records every kernel; each phase runs `--reps` times inside the profile after
the path's warm-up steps (compilation, cuDNN autotuning) and one call of every phase (the compiled R1
compiles on its second call), and the tables are per phase call.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import add_trainer_args, build_trainer, sync  # noqa: E402

from cips_edge.core.config import PRESETS  # noqa: E402
from cips_edge.train.loop import resolve_device  # noqa: E402

# First match wins; names are CUDA kernel names as CUPTI reports them. Convolutions first: cuDNN's
# implicit-GEMM convolution kernels have "gemm" in their names. (The session-4 JSONs in
# benchmarks/results were written with gemm first, so their "gemm" includes those convolutions; their
# top_kernels name each one.)
CATEGORIES = [
    ("conv", r"conv|cudnn|implicit|wgrad|dgrad|fprop|depthwise|tensortransform"),
    ("gemm", r"nvjet|gemm|cutlass|xmma|triton_tem|mm_"),
    ("optimizer", r"adam|multi_tensor|foreach|lerp"),
    ("compiled", r"^triton_"),
    ("reduction", r"reduce|norm|softmax|sum|mean|var"),
    ("copy", r"memcpy|memset|copy|cat|transpose|permute|gather|index"),
    ("elementwise", r"elementwise|vectorized|unrolled|leaky|where|mul|add|sin|pow"),
]


def category(name: str) -> str:
    low = name.lower()
    for label, pattern in CATEGORIES:
        if re.search(pattern, low):
            return label
    return "other"


def ops_by_shape(prof, reps: int, device: torch.device, top: int = 30) -> list[dict]:
    """The operators that launched the most kernel time (CPU time on the CPU), per phase call, each with its
    input shapes: which GEMM or convolution a kernel name stands for. Self time, so that an operator and
    the ones inside it (aten::matmul around aten::mm) do not count the same kernels twice; the kernels'
    own rows (device events, which the operators' device time already holds) are left out."""
    cuda = device.type == "cuda"
    rows = []
    for event in prof.key_averages(group_by_input_shape=True):
        if event.device_type != torch.autograd.DeviceType.CPU:
            continue
        ms = (event.self_device_time_total if cuda else event.self_cpu_time_total) / 1000 / reps
        if ms > 0:
            rows.append({"op": event.key, "shapes": str(event.input_shapes)[:240], "ms": round(ms, 3),
                         "calls": event.count // reps})
    return sorted(rows, key=lambda row: -row["ms"])[:top]


def kernels(events, kind: torch.autograd.DeviceType, reps: int) -> dict[str, list[float]]:
    """Time (ms per phase call) and launches of each kernel among a profile's events: the device's (on the
    CPU, the top-level operators), leaving out the annotation ranges the profiler also reports as device
    events ("## Call CompiledFxGraph ##", "Optimizer.step#Adam.step"), which enclose kernels counted already."""
    per_kernel: dict[str, list[float]] = {}
    for event in events:
        if event.device_type != kind or (kind == torch.autograd.DeviceType.CPU and event.cpu_parent is not None):
            continue
        if getattr(event, "is_user_annotation", False):
            continue
        ms = (event.device_time if kind == torch.autograd.DeviceType.CUDA else event.cpu_time) / 1000
        entry = per_kernel.setdefault(event.name, [0.0, 0])
        entry[0] += ms / reps
        entry[1] += 1
    return per_kernel


def kernel_times(fn, reps: int, device: torch.device) -> dict:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    kind = torch.autograd.DeviceType.CUDA if device.type == "cuda" else torch.autograd.DeviceType.CPU
    sync(device)
    start = time.perf_counter()
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(reps):
            fn()
        sync(device)
    wall = (time.perf_counter() - start) * 1000 / reps
    per_kernel = kernels(prof.events(), kind, reps)
    groups: dict[str, float] = {}
    for name, (ms, _) in per_kernel.items():
        groups[category(name)] = groups.get(category(name), 0.0) + ms
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1][0])[:40]
    return {
        "wall_ms_profiled": round(wall, 3),
        "kernel_ms": round(sum(groups.values()), 3),
        "by_category_ms": {k: round(v, 3) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
        "top_kernels": [{"kernel": name[:110], "ms": round(ms, 3), "launches": n // reps} for name, (ms, n) in top],
        "ops_by_shape": ops_by_shape(prof, reps, device),
    }


def profile_path(path: str, args, device: torch.device) -> dict:
    trainer = build_trainer(path, args, device)
    step = 0
    for _ in range(args.warmup):
        trainer.train_step(step)
        step += 1
    sync(device)
    reals = trainer.real_batch()

    def d_phase():
        trainer.d_backward(reals)
        trainer.d_optimizer_step()

    def r1_phase():
        trainer.r1_backward(reals)
        trainer.d_optimizer_step()

    def g_phase():
        trainer.g_backward()
        trainer.g_optimizer_step()

    phases = {"D step (G fwd no-grad, D fwd+bwd, Adam)": d_phase, "R1 step (every r1_every steps)": r1_phase,
              "G step (G fwd+bwd, D fwd+bwd to the images, Adam)": g_phase, "EMA": trainer.update_ema}
    for fn in phases.values():  # each phase once outside the profile: the compiled R1 compiles on its second call
        fn()
    out = {}
    for name, fn in phases.items():
        out[name] = kernel_times(fn, args.reps, device)
        row = out[name]
        print(f"{path} | {name}: {row['kernel_ms']} ms kernels, {row['wall_ms_profiled']} ms wall; "
              f"{row['by_category_ms']}", flush=True)
        for k in row["top_kernels"][:6]:
            print(f"    {k['ms']:8.3f} ms x{k['launches']:<4} {k['kernel']}", flush=True)
    if device.type == "cuda":
        out["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_trainer_args(parser, preset="paper-256", batch=16, warmup=3)
    parser.add_argument("--reps", type=int, default=3, help="profiled calls of each phase")
    parser.add_argument("--paths", default="fast", help="comma list of benchmarks/train.py paths")
    parser.add_argument("--out", type=Path, required=True, help="JSON file")
    args = parser.parse_args()
    device = resolve_device(args.device)
    report = {"benchmark": "train-profile", "preset": args.preset, "size": args.size or PRESETS[args.preset].size,
              "widths": args.widths, "batch": args.batch, "reps": args.reps, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "categories": {label: pattern for label, pattern in CATEGORIES},
              "paths": {path: profile_path(path, args, device) for path in args.paths.split(",")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
