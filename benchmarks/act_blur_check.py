"""act_blur's Triton kernels (Speed.act_blur) on the GPU, at D's shapes, against the plain ops they replace:
the forward's output against the float32 reference (within one bf16 step) and its signs exactly, the
backward's gradient likewise and its bias gradient to float32; then each kernel's time beside the same
function in plain ops compiled by Inductor (the passes the D step runs without it), with the kernels' bytes
per second. Writes JSON.

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


def plain_grad(grad_out: torch.Tensor, positive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The backward in plain ops: y's gradient and the bias's."""
    grad = ab._reference_grad(grad_out, positive, PAD)
    return grad.to(grad_out.dtype), grad.sum(dim=(0, 2, 3))


def check(batch: int, channels: int, size: int, reps: int, configs: list[tuple[int, int]]) -> dict:
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
    grad_out = torch.randn_like(got)
    want_grad = ab._reference_grad(grad_out, want_positive, PAD)
    grad, sums = ab._cuda_grad(grad_out, want_positive, PAD)
    bias_grad = sums.view(batch, size, channels).sum(dim=(0, 1))
    grad_over = (grad.float() - want_grad).abs() > 2 * (want_grad.abs() * 2.0 ** -8 + 1e-6)
    want_bias_grad = want_grad.sum(dim=(0, 2, 3))
    bias_err = ((bias_grad - want_bias_grad).abs().max() / want_bias_grad.abs().max()).item()
    compiled_grad = torch.compile(plain_grad)
    grad_kernel_ms = timed(lambda: ab._cuda_grad(grad_out, want_positive, PAD), reps)
    grad_compiled_ms = timed(lambda: compiled_grad(grad_out, want_positive), reps)
    grad_bytes = grad_out.numel() * 2 + positive.numel() + grad.numel() * 2
    # the kernels' time at other (block, warps) settings: the same outputs, only the work per program differs
    sweep = {f"{block}x{warps}": {"ms": round(timed(lambda b=block, w=warps: ab._cuda(y, bias, PAD, b, w), reps), 4),
                                  "grad_ms": round(timed(lambda b=block, w=warps: ab._cuda_grad(
                                      grad_out, want_positive, PAD, b, w), reps), 4)}
             for block, warps in configs}
    ok = (not over.any().item() and torch.equal(positive, want_positive) and not grad_over.any().item()
          and bias_err < 1e-5)
    return {"shape": [batch, channels, size, size], "ok": ok,
            "grad_outside_one_bf16_step": int(grad_over.sum().item()), "bias_grad_rel_err": bias_err,
            "grad_kernel_ms": round(grad_kernel_ms, 4), "grad_compiled_plain_ms": round(grad_compiled_ms, 4),
            "grad_speedup": round(grad_compiled_ms / grad_kernel_ms, 3),
            "grad_kernel_gb_per_s": round(grad_bytes / grad_kernel_ms / 1e6, 1),
            "outside_one_bf16_step": int(over.sum().item()),
            "max_abs_vs_float32": (got.float() - want_float).abs().max().item(),
            "max_abs_vs_reference": (got.float() - want.float()).abs().max().item(),
            "signs_equal": torch.equal(positive, want_positive),
            "kernel_ms": round(kernel_ms, 4), "compiled_plain_ms": round(compiled_ms, 4),
            "speedup": round(compiled_ms / kernel_ms, 3),
            "kernel_gb_per_s": round(nbytes / kernel_ms / 1e6, 1), "block_x_warps": sweep}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="256x512x64,128x512x64,256x512x32,256x512x16",
                        help="comma list of BxCxS (batch, channels, size); default: the authors-64 D step's "
                             "blocks (256 images), the G step's (128)")
    parser.add_argument("--reps", type=int, default=20, help="timed calls per shape (median)")
    parser.add_argument("--configs", default="512x4,1024x8,2048x8,4096x8",
                        help="comma list of BLOCKxWARPS the kernels are also timed at (default: %(default)s; the "
                             f"op runs {ab.BLOCK}x{ab.WARPS})")
    parser.add_argument("--out", type=Path, required=True, help="JSON file")
    args = parser.parse_args()
    if not torch.cuda.is_available() or ab.triton is None:
        raise SystemExit("act_blur_check needs a CUDA GPU and triton")
    configs = [tuple(int(n) for n in c.split("x")) for c in args.configs.split(",") if c]
    rows = []
    for spec in args.shapes.split(","):
        batch, channels, size = (int(n) for n in spec.split("x"))
        rows.append(check(batch, channels, size, args.reps, configs))
        print(json.dumps(rows[-1]), flush=True)
    report = {"benchmark": "act-blur-check", "device_name": torch.cuda.get_device_name(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv[1:]),
              "block": ab.BLOCK, "warps": ab.WARPS, "rows": rows, "ok": all(r["ok"] for r in rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("ok" if report["ok"] else "FAILED", flush=True)


if __name__ == "__main__":
    main()
