"""Does cips_edge::modulated_fc's CUDA kernel (cips_edge/train/cuda_ops/, built by its build.sh) compute G's
layer, and how much faster is it than the layer as the compiled training step runs it? On one GPU:

- values: the op against the same function in float32 (product accumulated in float32, rounded once),
  and against the unfused layer as training computes it under bf16 autocast (bf16 product, then bias,
  leaky ReLU and gain), largest difference relative to max |Y|;
- gradients: x, weight and bias through the op's backward against autograd of the layer in float32
  (norm of the difference relative to the reference's; the unfused layer's beside them), and at the
  hidden layers cips_edge::modulated_fc_grad_input (the backward into the layer before, with that layer's
  activation derivative in the GEMM's epilogue) against float32 and the two-pass unfused form;
- layouts: at the hidden layers, the op and the backward into the layer before reading their input in the
  layout the shared input layer writes (the batch side by side, [M, B, K]), against a contiguous copy;
- a ToRGB group's boundary (fused_fc.groups): the backward into the layer before writing rows with a ToRGB's
  gradient beside, against the narrow rows, and reading a product whose inner dimension carries it;
- the whole generator (--generator): G's gradients from one fixed gradient at its images, each bf16 path
  (unfused, fused layers, fused layers and group backward) against float32, per parameter;
- times: the forward alone (the D step's G forward runs it without grad) and forward + backward, the
  op (its backward compiled by torch.compile, as in the training step) against the unfused layer compiled
  by torch.compile (Inductor's GEMM and its fused bias + leaky ReLU + gain pass), medians of synchronised
  calls, at the shapes of paper-256's hidden layers and its input layer (one table of features for every
  sample) at 256^2 batch 16 and at 64^2 batch 128, and at edge-64's layers at 64^2 batch 64 (--shapes picks).

    bash benchmarks/on_gpu.sh benchmarks/fused_fc_check.py --out "$OUT/fused-fc-check-h200.json"

Exits 1 when a difference is out of bounds or the op fails.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from cips_edge.model import LRELU_GAIN, LRELU_SLOPE
from cips_edge.train import fused_fc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from render import timed  # noqa: E402

# The op rounds once where the unfused layer rounds twice (after the product, after the activation):
# bf16 keeps 8 bits, so a value may move by one step of the product's rounding, 2^-8 of its size.
VALUE_BOUND = 2 ** -7
# Gradients against the float32 layer's, as the norm of the difference relative to the reference's norm:
# bf16 operands, products summed in another order. Their largest difference measures something else:
# where a pre-activation lies within rounding of zero (bf16's for the unfused path, float32 summation
# order for the op), two computations take different slopes of the leaky ReLU, and one such element moves
# a gradient of x by up to (1 - slope) * its largest weight, a few percent of max |grad|.
GRAD_BOUND = 1e-2
# The whole generator: a fused path's gradient of a parameter may differ from float32's by at most this
# many times the unfused bf16 path's difference (plus 1e-3); both round in bf16, the fused one less often.
GENERATOR_SLACK = 2.0
# (samples, rows of x: the batch or one shared table, M, K, N): paper-256's hidden and input layers, and
# edge-64's (the emoji recipe's preset) at its batch, whose widths are not multiples of the kernels' tiles
SHAPES = {"paper-256 at 256^2, batch 16": (16, 16, 256 * 256, 512, 512),
          "paper-256 at 256^2, batch 16, input layer": (16, 1, 256 * 256, 1024, 512),
          "paper-256 at 64^2, batch 128": (128, 128, 64 * 64, 512, 512),
          "paper-256 at 64^2, batch 128, input layer": (128, 1, 64 * 64, 1024, 512),
          "edge-64 at 64^2, batch 64, input layer": (64, 1, 64 * 64, 256, 256),
          "edge-64 at 64^2, batch 64, 256 to 192": (64, 64, 64 * 64, 256, 192),
          "edge-64 at 64^2, batch 64, 192 to 128": (64, 64, 64 * 64, 192, 128),
          "edge-64 at 64^2, batch 64, 128 to 128": (64, 64, 64 * 64, 128, 128)}


def unfused(x, weight, bias):
    with torch.autocast("cuda", torch.bfloat16):
        out = torch.matmul(x, weight)
        return F.leaky_relu(out + bias.to(out.dtype), LRELU_SLOPE) * LRELU_GAIN


def float32(x, weight, bias):
    """The layer in float32 from the bf16-rounded inputs both paths start from: the gradients' reference."""
    out = torch.matmul(x.float(), weight.to(torch.bfloat16).float())
    return F.leaky_relu(out + bias, LRELU_SLOPE) * LRELU_GAIN


def fused(x, weight, bias):
    return torch.ops.cips_edge.modulated_fc(x, weight.to(torch.bfloat16), bias, LRELU_GAIN, LRELU_SLOPE)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30))


def relative_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def median_ms(fn, reps: int) -> float:
    """Median of `reps` synchronised calls after a warm-up (render.py's timer, run a fixed number of times)."""
    return round(statistics.median(timed(fn, torch.cuda.synchronize, budget_s=math.inf, max_runs=reps)) * 1000, 3)


def check(batch: int, rows: int, m: int, k: int, n: int, reps: int) -> dict:
    gen = torch.Generator(device="cuda").manual_seed(0)
    # activations as a trained layer sees them (unit scale), weights already demodulated (1/sqrt(k))
    x = torch.randn(rows, m, k, device="cuda", generator=gen).to(torch.bfloat16)
    weight = torch.randn(batch, k, n, device="cuda", generator=gen) / k ** 0.5
    bias = torch.randn(n, device="cuda", generator=gen) * 0.1
    row = {"batch": batch, "x_rows": rows, "m": m, "k": k, "n": n}
    with torch.no_grad():
        got = fused(x, weight, bias)
        exact = fused_fc._reference(x, weight.to(torch.bfloat16), bias, LRELU_GAIN, LRELU_SLOPE)
        plain = unfused(x, weight, bias)
    row["vs_float32_once"] = relative(got, exact)
    row["vs_unfused"] = relative(got, plain)
    row["unfused_vs_float32_once"] = relative(plain, exact)

    grads = {}
    for name, fn in (("fused", fused), ("unfused", unfused), ("float32", float32)):
        xs, ws, bs = (t.detach().clone().requires_grad_(True) for t in (x, weight, bias))
        out = fn(xs, ws, bs)
        out.backward(torch.ones_like(out) / out.numel() ** 0.5)
        grads[name] = (xs.grad, ws.grad, bs.grad)
    names = ("x", "weight", "bias")
    for path in ("fused", "unfused"):
        pairs = list(zip(names, grads[path], grads["float32"]))
        row[f"{path}_grad_rms_vs_float32"] = {n: relative_rms(a, b) for n, a, b in pairs}
        row[f"{path}_grad_max_vs_float32"] = {n: relative(a, b) for n, a, b in pairs}

    # both compiled, as the training step runs them: the op's backward is torch operations Inductor fuses
    for name, fn in (("fused", torch.compile(fused)), ("unfused_compiled", torch.compile(unfused))):
        with torch.no_grad():
            row[f"{name}_forward_ms"] = median_ms(lambda: fn(x, weight, bias), reps)
        xs, ws, bs = (t.detach().clone().requires_grad_(True) for t in (x, weight, bias))

        def step():
            out = fn(xs, ws, bs)
            out.backward(torch.ones_like(out))
        row[f"{name}_forward_backward_ms"] = median_ms(step, reps)
    flop = 2 * batch * m * k * n
    row["fused_forward_tflops"] = round(flop / row["fused_forward_ms"] / 1e9, 1)
    row["unfused_forward_ms_ratio"] = round(row["unfused_compiled_forward_ms"] / row["fused_forward_ms"], 3)
    # the model hands its weights over as transposed views of [B, out, in] (ModulatedFC.modulated_weight)
    transposed = weight.transpose(1, 2).contiguous().transpose(1, 2)
    with torch.no_grad():
        row["weight_transposed_vs_contiguous"] = relative(fused(x, transposed, bias), got)
    row["ok"] = (row["vs_float32_once"] <= VALUE_BOUND and row["vs_unfused"] <= 2 * VALUE_BOUND
                 and max(row["fused_grad_rms_vs_float32"].values()) <= GRAD_BOUND
                 and row["weight_transposed_vs_contiguous"] == 0.0)
    if rows == batch:  # a hidden layer: also the backward into the layer before it
        row["grad_input"] = check_grad_input(x, weight.to(torch.bfloat16), reps)
        row["ok"] = row["ok"] and row["grad_input"]["ok"]
        row["side_by_side"] = check_side_by_side(x, weight.to(torch.bfloat16), bias)
        row["ok"] = row["ok"] and row["side_by_side"]["ok"]
        row["torgb_beside"] = check_side(x, weight.to(torch.bfloat16))
        row["ok"] = row["ok"] and row["torgb_beside"]["ok"]
    return row


def check_side_by_side(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> dict:
    """The layer after the shared input layer reads its input where that layer wrote it: the batch laid
    out [M, B, K] (fused_fc._side_by_side). The op, and the backward into the layer before with z so laid
    out, must give what they give on a contiguous copy, bit for bit."""
    wide = fused_fc._side_by_side(x)
    gen = torch.Generator(device="cuda").manual_seed(2)
    grad = torch.randn(*x.shape[:-1], weight.shape[-1], device="cuda", generator=gen).to(torch.bfloat16)
    with torch.no_grad():
        forward = relative(fused(wide, weight, bias), fused(x, weight, bias))
        op = torch.ops.cips_edge.modulated_fc_grad_input
        backward = relative(op(grad, weight, wide, LRELU_GAIN, LRELU_SLOPE), op(grad, weight, x, LRELU_GAIN, LRELU_SLOPE))
    return {"x_strides": list(wide.stride()), "forward_vs_contiguous": forward, "grad_input_vs_contiguous": backward,
            "ok": forward == 0.0 and backward == 0.0}


def check_side(z: torch.Tensor, weight: torch.Tensor) -> dict:
    """fused_fc.groups' two uses of modulated_fc_grad_input: rows with a ToRGB's gradient beside (the kernel
    writes its columns of rows SIDE wider: bit for bit those of the narrow rows), and a product whose inner
    dimension carries the ToRGB's gradient and weights beside (against the same in float32)."""
    gen = torch.Generator(device="cuda").manual_seed(3)
    batch, m, n = z.shape
    k = weight.shape[-1]
    grad = torch.randn(batch, m, k, device="cuda", generator=gen).to(torch.bfloat16)
    side = torch.randn(batch, m, 3, device="cuda", generator=gen).to(torch.bfloat16)
    rgb = (torch.randn(batch, n, 3, device="cuda", generator=gen) / n ** 0.5).to(torch.bfloat16)
    op = torch.ops.cips_edge.modulated_fc_grad_input
    with torch.no_grad():
        narrow = op(grad, weight, z, LRELU_GAIN, LRELU_SLOPE)
        wide = op(grad, weight, z, LRELU_GAIN, LRELU_SLOPE, side)
        beside = fused_fc._beside(grad, side)
        table = fused_fc._with_rgb(weight, rgb)
        boundary = op(beside, table, z, LRELU_GAIN, LRELU_SLOPE)
        exact = fused_fc._grad_input_reference(beside.float(), table, z, LRELU_GAIN, LRELU_SLOPE)
    out = {"wide_rows_vs_narrow": relative(wide[..., :n], narrow),
           "side_columns_equal": bool(torch.equal(wide[..., n:n + 3], side) and not wide[..., n + 3:].any()),
           "boundary_vs_float32_once": relative(boundary, exact)}
    out["ok"] = (out["wide_rows_vs_narrow"] == 0.0 and out["side_columns_equal"]
                 and out["boundary_vs_float32_once"] <= VALUE_BOUND)
    return out


def unfused_grad_input(grad, weight, z):
    """The layer by layer backward: the gradient at the previous layer's output (bf16 product), then its
    pre-activation's (a pass that reads it and z)."""
    d = torch.matmul(grad, weight.transpose(-1, -2)).float() * LRELU_GAIN
    return torch.where(z > 0, d, d * LRELU_SLOPE).to(grad.dtype)


def check_grad_input(z: torch.Tensor, weight: torch.Tensor, reps: int) -> dict:
    """modulated_fc_grad_input with z the layer's input, weight its [in, out] weights and a gradient at its
    pre-activation of unit scale."""
    gen = torch.Generator(device="cuda").manual_seed(1)
    grad = torch.randn(z.shape[0], z.shape[1], weight.shape[-1], device="cuda", generator=gen).to(torch.bfloat16)
    op = torch.ops.cips_edge.modulated_fc_grad_input
    got = op(grad, weight, z, LRELU_GAIN, LRELU_SLOPE)
    exact = fused_fc._grad_input_reference(grad.float(), weight, z, LRELU_GAIN, LRELU_SLOPE)
    compiled = torch.compile(unfused_grad_input)
    out = {"vs_float32_once": relative(got, exact), "vs_unfused": relative(got, unfused_grad_input(grad, weight, z)),
           "fused_ms": median_ms(lambda: op(grad, weight, z, LRELU_GAIN, LRELU_SLOPE), reps),
           "unfused_compiled_ms": median_ms(lambda: compiled(grad, weight, z), reps)}
    out["ok"] = out["vs_float32_once"] <= VALUE_BOUND and out["vs_unfused"] <= 2 * VALUE_BOUND
    return out


def check_generator(preset_name: str, size: int, batch: int, device: str = "cuda") -> dict:
    """G's forward as the training step runs it (eager, and compiled as `cips train` runs it) from the same
    weights and latents, and its backward from one fixed random gradient at the images (D's gradient
    would round differently on each path and hide G's own differences): G's gradients of each bf16 path
    against the float32 path's, per parameter (norm of the difference relative to float32's). The fused
    paths may not stray further than the unfused bf16 paths do, with room for rounding
    (GENERATOR_SLACK), on any parameter, nor on the images, with gradients on and off (D's step draws its
    fakes without)."""
    import dataclasses

    from cips_edge.core.config import preset
    from cips_edge.train.discriminator import DiscriminatorConfig
    from cips_edge.train.trainer import Recipe, Speed, Trainer

    device = torch.device(device)
    recipe = Recipe(batch=batch, lr=0.002, r1_gamma=10.0, r1_every=16, ema_half_life_kimg=10.0, global_batch=batch,
                    augment=False, xflip=False, g_lazy_correction=True, seed=0)
    g_config = dataclasses.replace(preset(preset_name), size=size)
    d_config = DiscriminatorConfig(size, channel_max=32)
    torch.manual_seed(0)
    state = Trainer(g_config, d_config, recipe, device, speed=Speed(channels_last=True)).state_dict()
    gen = torch.Generator(device=device).manual_seed(3)
    z = torch.randn(batch, g_config.style_dim, device=device, generator=gen)
    cotangent = torch.randn(batch, 3, size, size, device=device, generator=gen)

    def speed(bf16: bool, compile: bool = False, **choices) -> Speed:  # the training step's switches
        return Speed.for_device(device, bf16=bf16, compile=compile, **choices)
    paths = {"float32": speed(False), "bf16": speed(True), "fused_fc": speed(True, fused_fc=True),
             "fused_fc+fused_stack": speed(True, fused_fc=True, fused_stack=True),
             "fused_fc+fused_stack+fused_groups": speed(True, fused_fc=True, fused_stack=True, fused_groups=True),
             "bf16 compiled": speed(True, compile=True),
             "fused_fc+fused_stack compiled": speed(True, compile=True, fused_fc=True, fused_stack=True),
             "fused_fc+fused_stack+fused_groups compiled": speed(True, compile=True, fused_fc=True, fused_stack=True,
                                                                 fused_groups=True)}
    fused_paths = tuple(name for name in paths if name.startswith("fused_fc"))
    grads, images_out, images_no_grad = {}, {}, {}
    for name, switches in paths.items():
        trainer = Trainer(g_config, d_config, recipe, device, speed=switches)
        trainer.load_weights(state)  # copies the values in
        img = trainer.generate(z)
        (img * cotangent).sum().backward()
        images_out[name] = img.detach().float()
        with torch.no_grad():  # D's step draws its fakes so: another compiled graph, without the backward
            images_no_grad[name] = trainer.generate(z).float()
        grads[name] = {n: p.grad.float().clone() for n, p in trainer.G.named_parameters() if p.grad is not None}
    ref = grads["float32"]
    rel = {name: {n: relative_rms(grads[name][n], g) for n, g in ref.items() if n in grads[name]}
           for name in paths if name != "float32"}
    unfused = {n: max(rel["bf16"].get(n, 0.0), rel["bf16 compiled"].get(n, 0.0)) for n in ref}
    unfused_image = max(relative(images_out[name], images_out["float32"]) for name in ("bf16", "bf16 compiled"))
    out = {"preset": preset_name, "size": size, "batch": batch, "paths": {}}
    for name, errors in rel.items():
        path = out["paths"][name] = {
            "image_vs_float32": relative(images_out[name], images_out["float32"]),
            "image_no_grad_vs_float32": relative(images_no_grad[name], images_out["float32"]),
            "worst_grads_vs_float32": dict(sorted(errors.items(), key=lambda item: -item[1])[:6]),
            "missing_grads": sorted(set(ref) ^ set(grads[name]))}
        if name in fused_paths:
            over = {n: r for n, r in errors.items() if r > GENERATOR_SLACK * unfused[n] + 1e-3}
            for key in ("image_vs_float32", "image_no_grad_vs_float32"):
                if path[key] > GENERATOR_SLACK * unfused_image + 1e-3:
                    over[key] = path[key]
            path.update(over_unfused=over, ok=not over and not path["missing_grads"])
    out["ok"] = all(out["paths"][name]["ok"] for name in fused_paths)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--shapes", default="paper-256,edge-64",
                        help="comma list of the rows to check, each a start of their names: a preset for all its "
                             "rows, or e.g. 'paper-256 at 64^2' (default: paper-256,edge-64)")
    parser.add_argument("--generator", default="edge-64:64:8",
                        help="PRESET:SIZE:BATCH of the whole-generator gradient check (default edge-64:64:8, "
                             "the emoji recipe's preset); "
                             "'none' skips it")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: fused_fc_check.py needs a CUDA GPU")
    report = {"benchmark": "fused-fc-check", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "device_name": torch.cuda.get_device_name(), "torch": torch.__version__,
              "library": str(fused_fc.library_path()), "value_bound": VALUE_BOUND, "grad_bound": GRAD_BOUND,
              "rows": {}}
    ok = True
    presets = args.shapes.split(",")
    for name, (batch, rows, m, k, n) in SHAPES.items():
        if not any(name.startswith(prefix) for prefix in presets):
            continue
        try:
            row = check(batch, rows, m, k, n, args.reps)
        except Exception as e:  # noqa: BLE001 (a failing op is this row's one-line error)
            row = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", "ok": False}
        report["rows"][name] = row
        ok &= row["ok"]
        print(name, json.dumps(row), flush=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.generator != "none":
        name, size, batch = args.generator.split(":")
        try:
            report["generator"] = check_generator(name, int(size), int(batch))
        except Exception as e:  # noqa: BLE001 (as a row: one line)
            report["generator"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                                   "ok": False}
        ok &= report["generator"]["ok"]
        print("generator", json.dumps(report["generator"]), flush=True)
    report["ok"] = ok
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}" + ("" if ok else "; ERRORS OR DIFFERENCES OUT OF BOUNDS"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
