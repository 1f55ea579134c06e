"""Training throughput on random data (no data folder needed): images/s, a step-time breakdown (D, R1,
G, optimizers, EMA) and peak GPU memory, for the plain fp32 path and the fast path in the same process.
Writes JSON to benchmarks/results/.

    python benchmarks/train.py --preset paper-256 --batch 32 --device cuda             # on a GPU
    python benchmarks/train.py --preset tiny --batch 8 --device cpu --steps 4 --warmup 1  # smoke check

Paths: plain = eager fp32, NCHW, TF32 matmuls off, no cuDNN autotuning, for-loop Adam (the original
code's settings); fast = bf16 autocast for G's per-pixel layers and D's forward, channels-last D, cuDNN's
heuristics (no autotuning), TF32, fused Adam; fast+compile = fast with torch.compile, R1 eager (ask with
--paths); +fold = G's sqrt(2) activation gains folded into the next layer's weights (one elementwise pass
fewer per layer; H200: +6% eager, nothing compiled, so not in `cips train`); +autotune = compile in
max-autotune mode (Triton GEMM templates that can take the bias and leaky ReLU into their epilogue; on
paper-256 it was still tuning after 9 minutes), +autotuneg the same for G's graph alone; +r1c = R1
compiled as well; +rgbgrad = each ToRGB's gradient into its input fused into the pass that reads it
(Speed.rgb_grad); +dpair = the D step's reals and fakes in one D call (Speed.d_pair):
fast+compile+r1c+rgbgrad+dpair+r1x+r1bf16+bshift+rgbfma is `cips train` on CUDA; +fused = G's layers as
one CUTLASS kernel each (Speed.fused_fc, needs cips_edge/train/cuda_ops/build.sh's library), +stack = with
+fused, each ToRGB group's backward fused too (Speed.fused_stack); +r1bf16 = R1 under bf16 autocast (Speed.r1_bf16); +r1x =
with +r1c, D's input gradient in R1 formed layer by layer, convolutions' as transposed convolutions
(Speed.r1_explicit); +bshift = D's blurs under compile as sixteen shifted terms (Speed.blur_shifts);
+rgbfma = D's from_rgb under compile as three multiply-adds (Speed.from_rgb_fma); +groups = with +stack, all
ToRGB groups together, the backward across each group boundary in one kernel (Speed.fused_groups); +ablur =
with +compile, each D block's first bias, leaky ReLU and blur as one Triton kernel (Speed.act_blur).
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from cips_edge.core.config import PRESETS
from cips_edge.train.data import ImageBank
from cips_edge.train.discriminator import DiscriminatorConfig
from cips_edge.train.loop import TINY_D_CHANNELS, resolve_device
from cips_edge.train.trainer import Recipe, Speed, Trainer

RESULTS = Path(__file__).resolve().parent / "results"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def speed_for(path: str, device: torch.device) -> Speed:
    if path == "plain":
        return Speed()
    parts = path.split("+")
    if parts[0] == "fast" and set(parts[1:]) <= {"compile", "fold", "autotune", "autotuneg", "r1c", "fused", "stack",
                                                 "rgbgrad", "dpair", "r1bf16", "r1x", "bshift", "rgbfma",
                                                 "groups", "ablur"}:
        autotune = "gd" if "autotune" in parts else "g" if "autotuneg" in parts else ""
        speed = Speed.for_device(device, bf16=True, compile="compile" in parts or bool(autotune),
                                 fused_fc="fused" in parts, fused_stack="stack" in parts)
        r1_compile = "r1c" in parts and speed.compile
        return dataclasses.replace(speed, fold_gain="fold" in parts, autotune=autotune, r1_compile=r1_compile,
                                   rgb_grad="rgbgrad" in parts, d_pair="dpair" in parts, r1_bf16="r1bf16" in parts,
                                   r1_explicit="r1x" in parts and r1_compile, blur_shifts="bshift" in parts,
                                   from_rgb_fma="rgbfma" in parts, fused_groups="groups" in parts,
                                   act_blur="ablur" in parts)
    raise SystemExit(f"unknown path {path!r}: use plain or fast with any of +compile, +fold, +autotune, +autotuneg, "
                     "+r1c, +fused, +stack, +rgbgrad, +dpair, +r1bf16, +r1x, +bshift, +rgbfma, +groups, +ablur")


def build_trainer(path: str, args, device: torch.device) -> Trainer:
    """A trainer for `path` on random images (args: preset, size, widths, batch, r1_every, augment,
    d_channel_max)."""
    speed = speed_for(path, device)
    speed.apply_backend_flags(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = speed.cudnn_benchmark
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    g_config = dataclasses.replace(PRESETS[args.preset], size=args.size or PRESETS[args.preset].size)
    if getattr(args, "widths", None):
        g_config = dataclasses.replace(g_config, synthesis_widths=tuple(args.widths))
    d_max = args.d_channel_max or (TINY_D_CHANNELS if args.preset == "tiny" else 512)
    d_config = DiscriminatorConfig(g_config.size, 2, d_max)
    recipe = Recipe(batch=args.batch, lr=0.002, r1_gamma=10.0, r1_every=args.r1_every, ema_half_life_kimg=10.0,
                    global_batch=args.batch, augment=args.augment, xflip=True, g_lazy_correction=True, seed=0)
    trainer = Trainer(g_config, d_config, recipe, device, speed=speed)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (max(256, 4 * args.batch), g_config.size, g_config.size, 3), dtype=np.uint8)
    trainer.use_bank(ImageBank(images, device))
    return trainer


def measure(path: str, args, device: torch.device) -> dict:
    trainer = build_trainer(path, args, device)
    speed = trainer.speed

    step = 0
    for _ in range(args.warmup):  # step 0 includes R1, so its kernels are warm too
        trainer.train_step(step)
        step += 1
    sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")  # every host sync inside a step becomes a warning
        t0 = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step(step)
            step += 1
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
        sync(device)
        wall = time.perf_counter() - t0
    host_syncs = sorted({str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)})

    # Per-phase times, each phase synchronised (so they add up to a little more than a free-running step).
    phases = {"data": [], "d_fwd_bwd": [], "d_optim": [], "r1_fwd_bwd": [], "r1_optim": [], "g_fwd_bwd": [],
              "g_optim": [], "ema": []}

    def timed(name, fn, *a):
        sync(device)
        t = time.perf_counter()
        out = fn(*a)
        sync(device)
        phases[name].append((time.perf_counter() - t) * 1000)
        return out

    for _ in range(args.phase_reps):
        trainer.reseed(step)
        reals = timed("data", trainer.real_batch)
        timed("d_fwd_bwd", trainer.d_backward, reals)
        timed("d_optim", trainer.d_optimizer_step)
        timed("r1_fwd_bwd", trainer.r1_backward, reals)
        timed("r1_optim", trainer.d_optimizer_step)
        timed("g_fwd_bwd", trainer.g_backward)
        timed("g_optim", trainer.g_optimizer_step)
        timed("ema", trainer.update_ema)
        step += 1
    ms = {k: round(statistics.median(v), 3) for k, v in phases.items()}
    r1_amortized = (ms["r1_fwd_bwd"] + ms["r1_optim"]) / args.r1_every
    result = {
        "images_per_s": round(args.steps * args.batch / wall, 2),
        "step_ms": round(wall / args.steps * 1000, 3),
        "phase_ms": ms,
        "breakdown_ms": {"G step (fwd+bwd)": ms["g_fwd_bwd"], "D step (G fwd, D fwd+bwd)": ms["d_fwd_bwd"],
                         "R1 step amortized": round(r1_amortized, 3),
                         "EMA + optimizers": round(ms["ema"] + ms["g_optim"] + ms["d_optim"], 3),
                         "data": ms["data"]},
        "speed": dataclasses.asdict(speed),
        "same_settings_as_plain": speed == Speed(),
        "host_syncs_in_timed_steps": host_syncs if device.type == "cuda" else "not checked on CPU",  # e.g. "fast" on CPU, where bf16 etc. do not apply
    }
    if device.type == "cuda":
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 3)
    del trainer
    gc.collect()
    return result


def add_trainer_args(parser: argparse.ArgumentParser, preset: str, batch: int, warmup: int) -> None:
    """The options build_trainer reads, and --device (shared with train_profile.py)."""
    parser.add_argument("--preset", default=preset, choices=list(PRESETS))
    parser.add_argument("--size", type=int, default=None, help="override the preset's training size")
    parser.add_argument("--widths", type=lambda text: [int(w) for w in text.split(",")], default=None,
                        help="G's synthesis widths, comma-separated, instead of the preset's: ten of 512 are the "
                             "authors' model at 64x64 (train_memory.py's authors-64)")
    parser.add_argument("--batch", type=int, default=batch, help="batch on this one device")
    parser.add_argument("--warmup", type=int, default=warmup, help="whole steps before measuring")
    parser.add_argument("--r1-every", type=int, default=16)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--d-channel-max", type=int, default=None)
    parser.add_argument("--device", default="auto")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_trainer_args(parser, preset="edge-64", batch=32, warmup=5)
    parser.add_argument("--steps", type=int, default=32, help="timed steps (a multiple of --r1-every "
                                                              "amortises R1 as training does)")
    parser.add_argument("--phase-reps", type=int, default=3, help="repetitions of the per-phase timing")
    parser.add_argument("--paths", default="plain,fast",
                        help="comma list of plain, or fast with any of +compile, +fold, +autotune, +autotuneg, "
                             "+r1c, +fused, +stack, +rgbgrad, +dpair, +r1bf16, +r1x, +bshift, +rgbfma, +groups "
                             "(the module's docstring says what each turns on; "
                             "fast+compile+r1c+rgbgrad+dpair+r1x+r1bf16+bshift+rgbfma is cips train's step)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/results/...)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    size = args.size or PRESETS[args.preset].size
    report = {
        "benchmark": "train", "preset": args.preset, "size": size, "batch": args.batch, "steps": args.steps,
        "r1_every": args.r1_every, "augment": args.augment, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        or platform.machine(),
        "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "paths": {},
    }
    for path in args.paths.split(","):
        try:
            report["paths"][path] = measure(path, args, device)
        except torch.OutOfMemoryError as e:
            report["paths"][path] = {"error": f"out of memory: {str(e).splitlines()[0]}"}
            torch.cuda.empty_cache()
        print(path, json.dumps(report["paths"][path]))
    paths = report["paths"]
    if "images_per_s" in paths.get("plain", {}) and "images_per_s" in paths.get("fast", {}):
        report["fast_over_plain"] = round(paths["fast"]["images_per_s"] / paths["plain"]["images_per_s"], 3)
    out = args.out or RESULTS / f"train-{args.preset}-{size}-b{args.batch}-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
