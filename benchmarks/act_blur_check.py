"""act_blur's Triton kernel (Speed.act_blur) on the GPU, at D's shapes, against the plain ops it replaces:
its output against the float32 reference (within one bf16 step) and its signs exactly, then its time beside
the same function in plain ops compiled by Inductor (the passes the D step runs without it), with each one's
bytes per second. Writes JSON.

    bash benchmarks/on_gpu.sh benchmarks/act_blur_check.py --out "$OUT/act-blur-check-h100.json"
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from cips_edge.model import plain_scaled_leaky_relu
from cips_edge.train import act_blur as ab

PAD = (2, 2)  # D's main blur


def timed(fn, reps: int) -> float:
    """Median ms of fn() on the GPU over reps calls (after two warm-up calls)."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def plain(y: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The function in plain ops, as D writes it under compile (Blur.taps' sixteen shifts)."""
    v = y + bias[:, None, None].to(y.dtype)
    return ab.shifted_taps(plain_scaled_leaky_relu(v), PAD), v > 0


def check(batch: int, channels: int, size: int, reps: int) -> dict:
    torch.manual_seed(0)
    y = torch.randn(batch, channels, size, size, device="cuda", dtype=torch.bfloat16)
    y = y.contiguous(memory_format=torch.channels_last)
    bias = torch.randn(channels, device="cuda") * 0.1
    want, want_positive = ab._reference(y, bias, PAD)
    want_float = ab.shifted_taps(plain_scaled_leaky_relu(y.float() + bias[:, None, None]), PAD)
    got, positive = ab._cuda(y, bias, PAD)
    step = want_float.abs() * 2.0 ** -8 + 1e-6  # half a bf16 step: the kernel rounds once
    over = (got.float() - want_float).abs() > 2 * step
    compiled = torch.compile(plain)
    kernel_ms = timed(lambda: ab._cuda(y, bias, PAD), reps)
    compiled_ms = timed(lambda: compiled(y, bias), reps)
    nbytes = y.numel() * 2 + got.numel() * 2 + positive.numel()  # read y; write the output and the signs
    ok = not over.any().item() and torch.equal(positive, want_positive)
    return {"shape": [batch, channels, size, size], "ok": ok,
            "outside_one_bf16_step": int(over.sum().item()),
            "max_abs_vs_float32": (got.float() - want_float).abs().max().item(),
            "max_abs_vs_reference": (got.float() - want.float()).abs().max().item(),
            "signs_equal": torch.equal(positive, want_positive),
            "kernel_ms": round(kernel_ms, 4), "compiled_plain_ms": round(compiled_ms, 4),
            "speedup": round(compiled_ms / kernel_ms, 3),
            "kernel_gb_per_s": round(nbytes / kernel_ms / 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="256x512x64,128x512x64,256x512x32,256x512x16",
                        help="comma list of BxCxS (batch, channels, size); default: the authors-64 D step's "
                             "blocks (256 images), the G step's (128)")
    parser.add_argument("--reps", type=int, default=20, help="timed calls per shape (median)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file")
    args = parser.parse_args()
    if not torch.cuda.is_available() or ab.triton is None:
        raise SystemExit("act_blur_check needs a CUDA GPU and triton")
    rows = []
    for spec in args.shapes.split(","):
        batch, channels, size = (int(n) for n in spec.split("x"))
        rows.append(check(batch, channels, size, args.reps))
        print(json.dumps(rows[-1]), flush=True)
    report = {"benchmark": "act-blur-check", "device_name": torch.cuda.get_device_name(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv[1:]),
              "block": ab.BLOCK, "warps": ab.WARPS, "rows": rows, "ok": all(r["ok"] for r in rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("ok" if report["ok"] else "FAILED", flush=True)


if __name__ == "__main__":
    main()
