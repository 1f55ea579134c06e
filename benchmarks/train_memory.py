"""Peak GPU memory of a training step, per phase, against the authors' code at the same batch (issue 23).

    bash benchmarks/train_memory.sh --quick      # on the GPU machine: both configs, four settings
    python benchmarks/train_memory.py --configs paper-64 --processes compiled,cudnn-benchmark

Each (configuration, process setting) runs in its own subprocess, so no peak, cuDNN algorithm cache or
allocator state carries over; compiled graphs do (Inductor's on-disk cache), so only the first process
of a configuration pays the full compile. In each process: one first step (step 0: D, R1, G, EMA; it
compiles and lets cuDNN autotune), then per variant (Speed switches set on the same trainer through
Trainer.set_speed, which compiles afresh for those that shape the graphs; no-NAME turns a default switch
off) each phase alone with its own peak: data, D step (G forward without grad, D forward and backward,
Adam), R1 step, G step (G and D forward, backward to G, Adam), EMA; then free-running steps for images/s
(R1 amortised over its interval from the R1 phase's time). Writes benchmarks/results/train-memory-<gpu>.json
after every process (a run cut short by --time-limit keeps what finished, a process stopped at --timeout
the variants it finished) and prints a table. GB are 1e9 bytes, as the authors' figures were given.

Where the memory goes (from the code and the H200 numbers in benchmarks/results/train-*-cuda.json;
A = paper-256 at 256^2 batch 16, authors 39.8 GB; B = paper-256 widths at 64^2 batch 128, authors
26.2 GB; 1 GiB = 1.074 GB):

1. cuDNN autotuning (cudnn.benchmark): on the first call of each convolution shape PyTorch times every
   cuDNN plan, after allocating the largest workspace any plan asks for, bounded only by the memory that
   is free (it halves the request on out-of-memory, so it never fails because of it). The peak of the
   first steps is therefore elastic, and it is the whole excess over the authors: the same compiled step
   peaked at 22.0 GiB (A) and 24.3 GiB (B) in processes whose algorithms were already chosen, and at
   44.0 / 57.0 GiB in the process that chose them; edge-64 at batch 32 went from 5.1 GiB (plain, no
   autotuning) to 39.0 GiB (fast). Estimate of the excess: ~22 GiB (A), ~33 GiB (B), on a 141 GB card;
   on a smaller card, less. Fixes measured here: cudnn.benchmark off (cuDNN's heuristics, no trials:
   no such peak, about 1% fewer images/s; `cips train`'s default, `--cudnn-benchmark` turns the trials
   on), `CUDNN_CONV_WSCAP_DBG` (cuDNN's own
   workspace cap, in MiB), and, in `cips train` by default, handing the borrowed workspace back to the
   driver after the first step (torch.cuda.empty_cache) so the reserved memory drops to the step's own.
2. G's saved activations: every per-pixel layer keeps at least its [B*S*S, width] input for the backward
   (compiled, bias + leaky ReLU fused, about one bf16 tensor per layer): 15 layers, 12.5 GiB (A) and
   6.3 GiB (B). Eager, autograd's own leaky ReLU would keep its input beside its output, two tensors per
   layer: 25 / 12.5 GiB in bf16, ~46 / 23 GiB on the plain float32 path (the plain path with it measured
   58.2 GiB at A, benchmarks/results/train-paper-256-256-b16-cuda.json). model.scaled_leaky_relu keeps
   only its output, the next layer's input, as the authors' FusedLeakyReLU does (the same values bit for
   bit): about one tensor per layer. `--recompute-g` (activation checkpointing per ToRGB group) keeps
   about half of that and runs G's forward twice in the G step; Speed.activation_budget lets Inductor
   choose what to recompute instead.
3. R1's double backward (create_graph, eager, float32; torch.compile has no double backward): D's forward
   activations and the first backward's tensors stay alive for the second. D's widest level is
   [B, 128, 256, 256] (A: 0.5 GiB fp32 per tensor) and [B, 512, 64, 64] (B: 1.0 GiB per tensor): about
   six forward tensors per top level plus as many from the first backward, so ~7-9 GiB (A) and ~13-15
   GiB (B), likely B's largest phase. Two tensors per level would be kept only for their shape or twice:
   the blur's padded input (1.1 GiB per blur at B's top level, two blurs; its backward keeps the shape
   alone: 2.8 GiB at B, 1.3 at A) and each activation's input (kept beside its output by autograd's
   leaky ReLU; the output alone: 2.6 GiB at B, 1.6 at A). R1 under bf16 halves the rest (rounding
   changes; R1 runs every 16 steps). `cips train`'s R1 is compiled, with D's input gradient formed
   explicitly and under bf16: one R1 call peaks at 7.1 GB at B against autograd's 15.6 GB in float32
   (benchmarks/r1_time.py, r1-time-64-h100.json).
4. D's step: the fakes come from G under no_grad (no G graph is kept across D's step); D's graphs for
   the real and the fake batch, bf16: ~1-2 GiB (A), ~5-6 GiB (B).
5. Weights and optimizer state: G 44.3M / 12.9M parameters (A / B: the embedding table is 33.6M at
   256), D 28.9M / 26.5M; weights, gradients, two Adam moments and the EMA copy: 1.26 GiB (A), 0.63 GiB
   (B). bf16 copies of weights: none kept (the modulated weights are per-sample activations; D's
   weights are scaled, then cast per call).
6. The data set on the GPU: up to 25% of the card for real data sets (FFHQ-256: 13.8 GB as uint8);
   here random data of a few MB. `--batch auto` moves it to host memory before it shrinks the batch.
7. Not in our code: path-length regularisation (CIPS trains without it), a second G graph during D's
   step, an fp32 master copy beside bf16 weights (autocast computes in bf16 from the fp32 weights).
8. Allocator fragmentation: reserved minus allocated; `PYTORCH_ALLOC_CONF=expandable_segments:True`
   maps memory in growing segments instead of fixed blocks (no math change).

Which switches change rounding: r1_bf16 and activation_budget (recomputed values may be fused
differently); cudnn_benchmark may pick other algorithms (float rounding of convolutions); recompute_g,
expandable segments, the workspace cap and empty_cache change nothing.

The process `authors-cap` answers the question behind the first-step peak directly: `cips train`'s
default settings in a process whose allocator may hold no more than the authors' peak (39.8 / 26.2 GB).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
GB = 1e9

# name: (preset, size, batch, the authors' images/s and peak GB on the H200, docs/speed.md and issue 23)
CONFIGS = {
    "paper-256": ("paper-256", 256, 16, 23.44, 39.8),
    "paper-64": ("paper-256", 64, 128, 249.1, 26.2),
    # the authors' CIPSskip at size 64 has ten 512-wide layers (five ToRGB groups), where the paper-256
    # preset at 64 keeps its fourteen (down to 128 wide): their model, for a like-for-like ratio
    "authors-64": ("paper-256", 64, 128, 249.1, 26.2),
    "smoke": ("tiny", 16, 4, 0.0, 0.0),  # --device cpu: checks the script runs (no authors' figures)
}
WIDTHS = {"authors-64": (512,) * 10}  # synthesis widths other than the preset's
AUTOTUNE_ENV = {"TORCHINDUCTOR_MAX_AUTOTUNE_GEMM_BACKENDS": "ATEN,TRITON",
                "TORCHINDUCTOR_MAX_AUTOTUNE_CONV_BACKENDS": "ATEN", "TORCHINDUCTOR_COMPILE_THREADS": "16"}
# Process settings: the path (as benchmarks/train.py names them), Speed overrides, environment, and the
# variants measured on the same trainer after the first step.
PROCESSES = {
    # `cips train`'s step (base: R1 compiled, its input gradient explicit, under bf16), R1 in float32, R1 eager
    # in float32 (autograd's double backward), G recomputed
    "compiled": ("fast+compile", {}, {}, ["base", "no-r1_bf16", "no-r1_compile+no-r1_bf16", "recompute_g"]),
    # R1's question only: R1 compiled (the default) and eager, both in float32
    "r1-compile": ("fast+compile", {}, {}, ["no-r1_bf16", "no-r1_compile+no-r1_bf16"]),
    "r1-bf16": ("fast+compile", {}, {}, ["no-r1_bf16", "base"]),  # the compiled R1 in float32 and under bf16
    # the compiled R1 through autograd's input gradient and explicitly (Speed.r1_explicit), in float32 and
    # under bf16 (the last is the default)
    "r1-explicit": ("fast+compile", {}, {}, ["no-r1_explicit+no-r1_bf16", "no-r1_bf16", "no-r1_explicit", "base"]),
    # compile's max-autotune: Triton GEMM templates beside cuBLAS, which can take G's bias + leaky ReLU (+ cast)
    # into their epilogue; convolutions stay cuDNN's (Triton's convolution templates would add tuning time)
    "autotune": ("fast+compile", {"autotune": "gd"}, AUTOTUNE_ENV, ["base"]),
    "autotune-g": ("fast+compile", {"autotune": "g"}, AUTOTUNE_ENV, ["base"]),  # G's graph alone: fewer GEMMs to tune
    # G's modulated layers as one CUTLASS kernel each, then with each ToRGB group's backward fused too
    # (needs cips_edge/train/cuda_ops/build.sh's library)
    "fused-fc": ("fast+compile", {}, {}, ["base", "fused_fc", "fused_fc+fused_stack"]),
    "fused-layers": ("fast+compile", {}, {}, ["base", "fused_fc+fused_stack"]),  # `cips train` and --fused-layers
    # --fused-layers without D's compiled forms (--no-d-forms), with the blurs as sixteen shifted terms alone
    # (Speed.blur_shifts), with from_rgb as three multiply-adds alone (Speed.from_rgb_fma), with both (the
    # default); each recompiles the graphs in the same process
    "d-forms": ("fast+compile", {}, {}, ["fused_fc+fused_stack+no-blur_shifts+no-from_rgb_fma",
                                         "fused_fc+fused_stack+no-from_rgb_fma", "fused_fc+fused_stack+no-blur_shifts",
                                         "fused_fc+fused_stack"]),
    # `cips train --no-d-forms`, then with --fused-layers (its own process: no recompiles in between)
    "no-d-forms": ("fast+compile", {"blur_shifts": False, "from_rgb_fma": False}, {}, ["base", "fused_fc+fused_stack"]),
    # --fused-layers, then with all ToRGB groups together (Speed.fused_groups: the backward across each group
    # boundary in one grad-input kernel); recompiles G's graphs in the same process
    "fused-groups": ("fast+compile", {}, {}, ["fused_fc+fused_stack", "fused_fc+fused_stack+fused_groups"]),
    # --fused-layers, then with each D block's first bias, activation and blur as one Triton kernel
    # (Speed.act_blur); recompiles D's graphs in the same process
    "act-blur": ("fast+compile", {}, {}, ["fused_fc+fused_stack", "fused_fc+fused_stack+act_blur"]),
    # --fused-layers with R1 through autograd's input gradient in float32, then with the explicit one
    # (Speed.r1_explicit) in float32, then under bf16 (the default)
    "fused-r1x": ("fast+compile", {}, {}, ["fused_fc+fused_stack+no-r1_explicit+no-r1_bf16",
                                           "fused_fc+fused_stack+no-r1_bf16", "fused_fc+fused_stack"]),
    # `cips train` without each ToRGB's gradient into its input inside the pass that reads it (rgb_grad), without
    # the D step's reals and fakes in one D call (d_pair), without both; then with --fused-layers
    "levers": ("fast+compile", {}, {}, ["base", "no-rgb_grad", "no-d_pair", "no-rgb_grad+no-d_pair",
                                        "fused_fc+fused_stack"]),
    "cudnn-benchmark": ("fast+compile", {"cudnn_benchmark": True}, {}, ["no-r1_bf16", "base"]),
    "cudnn-benchmark-fused": ("fast+compile", {"cudnn_benchmark": True}, {}, ["fused_fc+fused_stack"]),
    "expandable": ("fast+compile", {}, {"PYTORCH_ALLOC_CONF": "expandable_segments:True"}, ["base"]),
    "plain": ("plain", {}, {}, ["base"]),
    "wscap-256": ("fast+compile", {}, {"CUDNN_CONV_WSCAP_DBG": "256"}, ["base"]),
    "budget-0.5": ("fast+compile", {"activation_budget": 0.5}, {}, ["base"]),
    "eager": ("fast", {}, {}, ["base", "r1_bf16", "recompute_g"]),
    "eager-cudnn-benchmark": ("fast", {"cudnn_benchmark": True}, {}, ["base"]),
    "best": ("fast+compile", {}, {"PYTORCH_ALLOC_CONF": "expandable_segments:True"},
             ["base", "recompute_g"]),
    # `cips train` as it is, on a card no larger than the authors' peak (see CAPPED)
    "authors-cap": ("fast+compile", {}, {}, ["base"]),
}
# Processes whose PyTorch allocator is capped at the configuration's authors' peak GB
# (torch.cuda.set_per_process_memory_fraction): the caching allocator raises out-of-memory above it, as a
# card of that size would, and cuDNN's autotuning skips the plans whose workspace does not fit. Their
# images/s beside the uncapped process's say what a card with the authors' memory costs in speed.
CAPPED = {"authors-cap"}
# The cold compile of each configuration dominates; the later processes hit the cache. plain last: a run
# cut short by train_memory.sh's LIMIT loses it first.
QUICK = ["compiled", "cudnn-benchmark", "expandable", "plain"]
MIN_PROCESS_S = 30  # under --time-limit, a process needs at least this long to measure anything


# -- the child: one process setting of one configuration ---------------------------------------------
class _NoCuda:
    """torch.cuda's memory calls on a CPU smoke run: nothing to synchronise, nothing counted."""

    def __getattr__(self, name):
        if name == "get_device_name":
            return lambda device=None: "cpu"
        if name == "get_device_properties":
            return lambda device=None: type("Props", (), {"total_memory": 0})()
        return lambda *args, **kwargs: 0


def child(spec: dict) -> dict:
    import numpy as np
    import torch

    from cips_edge.core.config import PRESETS
    from cips_edge.train.data import ImageBank
    from cips_edge.train.discriminator import DiscriminatorConfig
    from cips_edge.train.trainer import Recipe, Speed, Trainer

    device = torch.device(spec.get("device", "cuda"))
    cuda = device.type == "cuda"  # CPU: a smoke run of the code path (memory figures 0)
    if cuda and device.index is None:  # torch.cuda.set_device wants a numbered device
        device = torch.device("cuda", torch.cuda.current_device())
    if cuda:
        torch.cuda.set_device(device)
    mem = torch.cuda if cuda else _NoCuda()
    cap_gb = spec.get("memory_cap_gb")
    if cap_gb and cuda:
        total = mem.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb * GB / total), device)
    preset, size, batch = spec["preset"], spec["size"], spec["batch"]
    path, overrides = spec["path"], spec["overrides"]
    if path == "plain":
        speed = Speed(**overrides)
    else:
        speed = Speed.for_device(device, bf16=True, compile="compile" in path, **overrides)
    speed.apply_backend_flags(device)
    if not cuda:
        speed = dataclasses.replace(speed, compile=False)
    g_config = dataclasses.replace(PRESETS[preset], size=size)
    if spec.get("widths"):
        g_config = dataclasses.replace(g_config, synthesis_widths=tuple(spec["widths"]))
    recipe = Recipe(batch=batch, lr=0.002, r1_gamma=10.0, r1_every=spec["r1_every"], ema_half_life_kimg=10.0,
                    global_batch=batch, augment=False, xflip=True, g_lazy_correction=True, seed=0)
    trainer = Trainer(g_config, DiscriminatorConfig(size, 2, 512 if cuda else 32), recipe, device, speed=speed)
    images = np.random.default_rng(0).integers(0, 256, (max(256, 4 * batch), size, size, 3), dtype=np.uint8)
    trainer.use_bank(ImageBank(images, device))
    sync = lambda: mem.synchronize(device)  # noqa: E731
    if spec.get("snapshot") and cuda:
        torch.cuda.memory._record_memory_history(max_entries=200_000)

    def peak(fn) -> dict:
        sync()
        mem.reset_peak_memory_stats(device)
        before = mem.memory_allocated(device)
        t = time.perf_counter()
        fn()
        sync()
        return {"ms": (time.perf_counter() - t) * 1000, "before_gb": before / GB,
                "peak_allocated_gb": mem.max_memory_allocated(device) / GB,
                "peak_reserved_gb": mem.max_memory_reserved(device) / GB}

    out = {"device_name": mem.get_device_name(device), "torch": torch.__version__,
           "total_memory_gb": mem.get_device_properties(device).total_memory / GB,
           "synthesis_widths": list(g_config.synthesis_widths),
           "speed": dataclasses.asdict(speed), "env": spec["env"], "memory_cap_gb": cap_gb if cuda else None,
           "idle_before_first_step_gb": mem.memory_allocated(device) / GB}
    out["first_step"] = peak(lambda: trainer.train_step(0))  # compiles, autotunes, creates Adam's moments
    out["idle_after_first_step_gb"] = mem.memory_allocated(device) / GB
    out["reserved_after_first_step_gb"] = mem.memory_reserved(device) / GB
    mem.empty_cache()  # as `cips train` does after its first step
    step = 1
    variants = {}
    for variant in spec["variants"]:
        switches = {} if variant == "base" else {name.removeprefix("no-"): not name.startswith("no-")
                                                 for name in variant.split("+")}
        trainer.set_speed(dataclasses.replace(speed, **switches))
        try:
            # Compiles / autotunes what the variant changes. R1 twice: with r1_compile the first call is
            # eager (it finds the parameters R1 reaches) and the second compiles.
            warm = peak(lambda: (trainer.train_step(step), trainer.r1_backward(trainer.real_batch()),
                                 trainer.r1_backward(trainer.real_batch()), trainer.d_optimizer_step()))
            step += 1
            mem.empty_cache()
            phases = {"data": [], "D step": [], "R1 step": [], "G step": [], "EMA": []}
            for _ in range(spec["phase_reps"]):
                trainer.reseed(step)
                reals = None

                def data():
                    nonlocal reals
                    reals = trainer.real_batch()
                phases["data"].append(peak(data))
                phases["D step"].append(peak(lambda: (trainer.d_backward(reals), trainer.d_optimizer_step())))
                phases["R1 step"].append(peak(lambda: (trainer.r1_backward(reals), trainer.d_optimizer_step())))
                phases["G step"].append(peak(lambda: (trainer.g_backward(), trainer.g_optimizer_step())))
                phases["EMA"].append(peak(trainer.update_ema))
                del reals
                step += 1
            summary = {name: {"ms": round(statistics.median(r["ms"] for r in runs), 3),
                              "peak_allocated_gb": round(max(r["peak_allocated_gb"] for r in runs), 3),
                              "peak_reserved_gb": round(max(r["peak_reserved_gb"] for r in runs), 3),
                              "allocated_before_gb": round(runs[-1]["before_gb"], 3)}
                       for name, runs in phases.items()}
            # Free-running steps without R1 (steps 1..r1_every-1 of an interval), then R1 amortised.
            n = 0
            sync()
            mem.reset_peak_memory_stats(device)
            t = time.perf_counter()
            while n < spec["steps"]:
                if step % recipe.r1_every == 0:
                    step += 1
                trainer.train_step(step)
                step += 1
                n += 1
            sync()
            free_ms = (time.perf_counter() - t) * 1000 / n
            r1_ms = summary["R1 step"]["ms"]
            step_ms = free_ms + r1_ms / recipe.r1_every
            variants[variant] = {
                "images_per_s": round(batch / step_ms * 1000, 2), "step_ms": round(step_ms, 3),
                "step_ms_without_r1": round(free_ms, 3), "phases": summary,
                "steady_peak_allocated_gb": round(max(max(p["peak_allocated_gb"] for p in summary.values()),
                                                      mem.max_memory_allocated(device) / GB), 3),
                "steady_peak_reserved_gb": round(max(max(p["peak_reserved_gb"] for p in summary.values()),
                                                     mem.max_memory_reserved(device) / GB), 3),
                "largest_phase": max(summary, key=lambda k: summary[k]["peak_allocated_gb"]),
                "warm_up": {k: round(v, 3) for k, v in warm.items()}}
        except torch.OutOfMemoryError as e:
            variants[variant] = {"error": f"out of memory: {str(e).splitlines()[0]}"}
        except Exception as e:  # noqa: BLE001 (a variant that fails to compile must not lose the others)
            variants[variant] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        mem.empty_cache()
        print(json.dumps(result_so_far(out, variants)), flush=True)  # what a process stopped later keeps
    if spec.get("snapshot") and cuda:
        torch.cuda.memory._dump_snapshot(spec["snapshot"])
        torch.cuda.memory._record_memory_history(enabled=None)
    return result_so_far(out, variants)


def result_so_far(out: dict, variants: dict) -> dict:
    first = {k: round(v, 3) for k, v in out["first_step"].items()}
    peaks = [first["peak_allocated_gb"]] + [v.get("steady_peak_allocated_gb", 0) for v in variants.values()]
    return {**out, "first_step": first, "variants": dict(variants), "process_peak_allocated_gb": round(max(peaks), 3)}


# -- the parent: one subprocess per (config, process setting) ----------------------------------------
def run_group(command: list[str], env: dict, timeout: float) -> tuple[int | None, str, str]:
    """(exit code, stdout, stderr) of command; the exit code None for one stopped at the timeout, with the
    output it wrote until then. It runs in its own process group, and the whole group is stopped:
    Inductor's compile workers too, which would otherwise hold the CPUs through the next process's
    compile."""
    proc = subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return None, stdout, stderr
    return proc.returncode, stdout, stderr


def run_child(spec: dict, timeout: float) -> dict:
    """One process's result; a process stopped at the timeout keeps the variants it finished, with a
    `stopped` line that says where it was."""
    env = {**os.environ, **spec["env"], "TORCHINDUCTOR_FX_GRAPH_CACHE": "1", "TORCHINDUCTOR_AUTOGRAD_CACHE": "1"}
    t = time.perf_counter()
    returncode, stdout, stderr = run_group([sys.executable, __file__, "--child", json.dumps(spec)], env, timeout)
    wall = round(time.perf_counter() - t, 1)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if returncode is None:
        last = [line for line in stderr.splitlines() if line.strip()][-1:]
        stopped = f"did not finish in {timeout:.0f} s" + (f" (last output: {last[0][:200]})" if last else "")
        return {**json.loads(lines[-1]), "stopped": stopped, "wall_s": wall} if lines else {"error": stopped}
    if returncode or not lines:
        tail = "\n".join((stderr or stdout).strip().splitlines()[-6:])
        return {"error": f"exit {returncode}: {tail}", "wall_s": wall}
    return {**json.loads(lines[-1]), "wall_s": wall}


def table(report: dict) -> str:
    rows = [("config", "process", "variant", "first-step peak GB", "steady peak GB (phase)", "reserved GB",
             "img/s", "authors: img/s, GB")]
    for key, entry in report["runs"].items():
        config, process = key.split("/")
        authors = CONFIGS[config]
        if "error" in entry:
            rows.append((config, process, "-", "error", entry["error"].splitlines()[0][:60], "", "", ""))
            continue
        for variant, v in entry["variants"].items():
            if "error" in v:
                rows.append((config, process, variant, "", v["error"][:60], "", "", ""))
                continue
            rows.append((config, process, variant, f"{entry['first_step']['peak_allocated_gb']:.1f}",
                         f"{v['steady_peak_allocated_gb']:.1f} ({v['largest_phase']})",
                         f"{v['steady_peak_reserved_gb']:.1f}", f"{v['images_per_s']:.1f}",
                         f"{authors[3]}, {authors[4]}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help=f"processes {','.join(QUICK)} only")
    parser.add_argument("--configs", default="paper-64,paper-256", help=f"comma list of {', '.join(CONFIGS)}")
    parser.add_argument("--processes", default=None, help=f"comma list of {', '.join(PROCESSES)} (default: all, "
                                                          "or --quick's)")
    parser.add_argument("--steps", type=int, default=6, help="free-running steps timed per variant")
    parser.add_argument("--phase-reps", type=int, default=2, help="measurements of each phase per variant")
    parser.add_argument("--r1-every", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=300, help="seconds per process")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds for the whole run: no process starts or runs past it (the JSON keeps the rest)")
    parser.add_argument("--snapshot", action="store_true", help="also dump a torch.cuda.memory snapshot (pickle) "
                                                               "of each process next to the JSON")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default results/train-memory-<gpu>.json)")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke run (--configs smoke)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return
    processes = (args.processes.split(",") if args.processes else QUICK if args.quick else list(PROCESSES))
    configs = args.configs.split(",")
    unknown = [p for p in processes if p not in PROCESSES] + [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown process or config: {', '.join(unknown)}")
    report = {"benchmark": "train-memory", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "r1_every": args.r1_every,
              "authors": {c: {"images_per_s": v[3], "peak_gb": v[4], "preset": v[0], "size": v[1], "batch": v[2]}
                          for c, v in CONFIGS.items()},
              "processes": {p: {"path": PROCESSES[p][0], "speed": PROCESSES[p][1], "env": PROCESSES[p][2],
                                "variants": PROCESSES[p][3]} for p in processes},
              "runs": {}}
    out = args.out
    started = time.perf_counter()
    # Process by process, the configurations side by side: a run cut short still has both baselines.
    for process in processes:
        for config in configs:
            preset, size, batch, _, _ = CONFIGS[config]
            path, overrides, env, variants = PROCESSES[process]
            spec = {"preset": preset, "size": size, "batch": batch, "path": path, "overrides": overrides, "env": env,
                    "variants": variants, "steps": args.steps, "phase_reps": args.phase_reps,
                    "r1_every": args.r1_every, "device": args.device, "widths": WIDTHS.get(config)}
            if process in CAPPED:
                spec["memory_cap_gb"] = CONFIGS[config][4]
            if args.snapshot:
                spec["snapshot"] = str(RESULTS / f"train-memory-{config}-{process}.pickle")
            left = math.inf if args.time_limit is None else args.time_limit - (time.perf_counter() - started)
            if left < MIN_PROCESS_S:
                result = {"error": f"not run: the --time-limit of {args.time_limit:g} s was used up"}
            else:
                result = run_child(spec, min(args.timeout, left))
            report["runs"][f"{config}/{process}"] = result
            if out is None and "device_name" in result:
                gpu = re.sub(r"[^a-z0-9]+", "-", result["device_name"].lower().replace("nvidia", "")).strip("-")
                out = RESULTS / f"train-memory-{gpu}.json"
            print(f"{config}/{process}: {json.dumps(result)[:400]}", flush=True)
            target = out or RESULTS / "train-memory-unknown.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"wrote {out or RESULTS / 'train-memory-unknown.json'}")


if __name__ == "__main__":
    main()
