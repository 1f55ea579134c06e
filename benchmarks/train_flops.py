"""The training step's arithmetic against the card's: the multiply-add work of each phase of a step (D step,
lazy R1, G step), counted with torch's FLOP formulas on the real Trainer (matmuls and convolutions; on
the CPU, a small batch, scaled per image), joined with the phase times a train-memory run measured on a
GPU (benchmarks/train_memory.sh), to give each phase's TFLOP/s and the rate a target images/s needs.
No GPU needed. Writes benchmarks/results/train-flops-<config>.json.

    python benchmarks/train_flops.py --config paper-64 --times benchmarks/results/train-memory-h200-defaults64.json
    python benchmarks/train_flops.py --config paper-256 --times benchmarks/results/train-memory-h200-defaults256.json
    python benchmarks/train_flops.py --config paper-64 --times benchmarks/results/train-memory-levers-64-h100.json \
        --variant fused_fc+fused_stack+rgb_grad+d_pair --out ...       # another variant of the same run

--gemm-tflops is the card's dense bf16 GEMM rate to compare with (default 790: what
../shared/design/CIPS.md reports for the H200; 8192^3, the best case any kernel of the step can reach).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import build_trainer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# The configs of issue 23's table: preset, training size, batch, D's width cap (the paper's D: 512).
CONFIGS = {"paper-256": ("paper-256", 256, 16), "paper-64": ("paper-256", 64, 128)}
PHASES = ("D step", "R1 step", "G step")


class FlopCount(TorchDispatchMode):
    """FLOP of every operator torch has a formula for (flop_counter's registry: matmuls, convolutions and
    their backwards). FlopCounterMode itself tracks modules with hooks that R1's double backward
    (autograd.grad of autograd.grad) refuses."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def phase_flops(preset: str, size: int, batch: int, r1_every: int) -> dict[str, float]:
    """FLOP per image of each phase, as the Trainer runs it (float32, eager, no augmentation, as
    train_memory.py measures it), counted on `batch` images."""
    args = argparse.Namespace(preset=preset, size=size, batch=batch, r1_every=r1_every, augment=False,
                              d_channel_max=512)  # the paper's D widths, whatever the preset
    trainer = build_trainer("plain", args, torch.device("cpu"))  # benchmarks/train.py's, on random images
    trainer.reseed(0)
    reals = torch.rand(batch, 3, size, size) * 2 - 1
    out = {}
    for name, phase in zip(PHASES, (lambda: trainer.d_backward(reals), lambda: trainer.r1_backward(reals),
                                    trainer.g_backward)):
        with FlopCount() as counter:
            phase()
        out[name] = counter.total / batch
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=list(CONFIGS), required=True)
    p.add_argument("--times", type=Path, required=True, help="a train-memory results file with this config's run")
    p.add_argument("--variant", default="base", help="which of the run's variants to take the times of (default base)")
    p.add_argument("--count-batch", type=int, default=2, help="images per counted step on the CPU (default 2)")
    p.add_argument("--targets", default="5,6", help="speed-ups over the authors' images/s to price (default 5,6)")
    p.add_argument("--gemm-tflops", type=float, default=790.0, help="the card's dense bf16 GEMM rate (default 790)")
    p.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/train-flops-<config>.json)")
    args = p.parse_args(argv)
    preset, size, batch = CONFIGS[args.config]
    measured = json.loads(args.times.read_text())
    run = next((v for k, v in measured["runs"].items() if k.startswith(args.config + "/")), None)
    if run is None:
        raise SystemExit(f"{args.times}: no run of {args.config}")
    timed = run["variants"].get(args.variant)
    if timed is None or "phases" not in timed:
        raise SystemExit(f"{args.times}: {args.config} has no measured variant {args.variant!r} "
                         f"(it has {', '.join(run['variants'])})")
    r1_every = measured.get("r1_every", 16)
    started = time.perf_counter()
    flops = phase_flops(preset, size, args.count_batch, r1_every)
    steps_per = {name: r1_every if name == "R1 step" else 1 for name in PHASES}  # R1 runs once in r1_every steps
    per_image = {name: flops[name] / steps_per[name] for name in PHASES}
    total = sum(per_image.values())
    phases = {}
    for name in PHASES:
        ms = timed["phases"][name]["ms"]
        rate = flops[name] * batch / (ms / 1000) / 1e12
        phases[name] = {"gflop_per_image": round(flops[name] / 1e9, 2), "ms": ms, "tflops": round(rate, 1),
                        "of_gemm_rate": round(rate / args.gemm_tflops, 3),
                        "share_of_step": round(ms / steps_per[name] / timed["step_ms"], 3)}
    step_rate = total * timed["images_per_s"] / 1e12
    authors = measured["authors"][args.config]["images_per_s"]
    targets = {}
    for x in (float(t) for t in args.targets.split(",")):
        need = total * authors * x / 1e12
        targets[f"{x:g}x"] = {"images_per_s": round(authors * x, 1), "tflops": round(need, 1),
                              "of_gemm_rate": round(need / args.gemm_tflops, 3),
                              "step_ms": round(1000 * batch / (authors * x), 1)}
    result = {
        "benchmark": "train-flops", "config": args.config, "preset": preset, "size": size, "batch": batch,
        "counted": f"torch's FLOP formulas (matmuls and convolutions) on the CPU, batch {args.count_batch}, "
                   f"float32 eager Trainer without augmentation; R1 every {r1_every} steps",
        "times_from": args.times.name, "variant": args.variant, "device_name": run.get("device_name"),
        "gemm_tflops": args.gemm_tflops,
        "gflop_per_image": round(total / 1e9, 1),
        "measured": {"images_per_s": timed["images_per_s"], "step_ms": timed["step_ms"],
                     "tflops": round(step_rate, 1), "of_gemm_rate": round(step_rate / args.gemm_tflops, 3)},
        "phases": phases, "authors_images_per_s": authors, "targets": targets,
        "count_s": round(time.perf_counter() - started, 1), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(json.dumps(result, indent=1))
    out = args.out or RESULTS / f"train-flops-{args.config}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
