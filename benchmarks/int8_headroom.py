"""How far an 8-bit pixel path could go on a trained model, and which half limits it: renders of a
training checkpoint's EMA generator with the per-pixel layers fake-quantized in PyTorch, as PSNR of the
8-bit images against float32, per seed.

Schemes (the input layer and ToRGB stay float, as in the int8 graph; weights int8 symmetric per column
after the channel equalization that docs/onnx-format.md describes, unless "float weights"):
  runtime         activations uint8 with one scale per chunk of --chunk points (DynamicQuantizeMatMul)
  per-pixel       activations uint8 with one scale per pixel
  float weights   the two above with float weights: what 8-bit activations alone cost
  float acts      int8 weights, float activations: what 8-bit weights alone cost
  first K float   "runtime" with the first K hidden layers left in float (--float-layers K,...): how
                  much a mixed path, 8 bits only where the error does not build up, would keep
  calibrated      "runtime" with each layer's input channels equalized by measured activation ranges
                  too (--calibrated A/B,...): channel k is divided by s_k = act_k^A / wmax_k^B and
                  row k of the weights multiplied by it (exact in float), act_k the largest |input|
                  of channel k over renders of --calibration-seeds, wmax_k the row's largest |weight|
                  per latent; 0/0.5 is the file's own equalization, A/B pairs trade 8-bit error
                  between activations and weights (static per-channel activation scales folded
                  into the weights, as SmoothQuant does)
With --model, the file's own int8 path renders the same seeds in ONNX Runtime too, which checks that
"runtime" simulates it. The source may be the model file itself (its generator, read back).

    python benchmarks/int8_headroom.py RUN_OR_CHECKPOINT --model cips_edge/models/default.onnx
    python benchmarks/int8_headroom.py cips_edge/models/default.onnx --size 64 --float-layers 1,2,3,4
    python benchmarks/int8_headroom.py cips_edge/models/default.onnx --calibrated 0/0.5,0.5/0.3 --float-layers 3,4
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from cips_edge import model as cips_model
from cips_edge.checkpoint import load_generator, resolve_checkpoint_path
from cips_edge.export import generator_from_onnx
from cips_edge.runtime import CIPSModel, region_grid, render_points
from cips_edge.runtime.coords import FULL_FRAME
from cips_edge.runtime.image import psnr_uint8, to_uint8
from cips_edge.runtime.latents import latent_for_seed, parse_seeds

RESULTS = Path(__file__).resolve().parent / "results"
SCHEMES = {  # name: (activations, weights)
    "runtime": ("chunk", "int8"), "per-pixel": ("pixel", "int8"), "float weights, runtime acts": ("chunk", "float"),
    "float weights, per-pixel acts": ("pixel", "float"), "float acts": ("float", "int8"),
}


def fake_uint8(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """x through asymmetric uint8 with the range [lo, hi] widened to hold 0 (DynamicQuantizeLinear)."""
    lo, hi = torch.clamp(lo, max=0), torch.clamp(hi, min=0)
    scale = torch.clamp((hi - lo) / 255, min=1e-12)
    zero = torch.round(-lo / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale


def fake_activations(x: torch.Tensor, how: str, chunk: int) -> torch.Tensor:  # x [B, N, C]
    if how == "float":
        return x
    if how == "pixel":
        return fake_uint8(x, x.amin(-1, keepdim=True), x.amax(-1, keepdim=True))
    return torch.cat([fake_uint8(a, a.min(), a.max()) for a in x.split(chunk, dim=1)], dim=1)


def fake_int8_columns(weight: torch.Tensor) -> torch.Tensor:  # [B, in, out], one scale per output column
    scale = torch.clamp(weight.abs().amax(1, keepdim=True) / 127, min=1e-12)
    return torch.clamp(torch.round(weight / scale), -127, 127) * scale


class FakeQuant:
    """While active, ModulatedFC layers other than the input layer (and the first `float_layers` hidden
    layers) multiply fake-quantized operands. With `calibrating` set, layers run in float and record
    the largest |input| per channel instead (`act_max`, by hidden layer); `smooth` = (A, B) equalizes
    with those (see the module docstring)."""

    def __init__(self, generator: cips_model.CIPSGenerator, chunk: int):
        self.generator, self.chunk, self.scheme, self.float_layers = generator, chunk, None, 0
        self.calibrating, self.act_max, self.smooth = False, {}, None
        self.plain = cips_model.ModulatedFC.apply_weight
        fake = self
        position = {id(h): i for i, h in enumerate(generator.layers)}  # hidden layer -> its index

        def apply_weight(layer, x, weight, gain=True):
            if fake.calibrating and layer is not fake.generator.input_layer:
                i, seen = position[id(layer)], x.abs().amax(dim=(0, 1))
                fake.act_max[i] = torch.maximum(fake.act_max.get(i, seen), seen)
            kept = fake.generator.layers[:fake.float_layers]
            if fake.scheme is None or layer is fake.generator.input_layer or any(layer is k for k in kept):
                return fake.plain(layer, x, weight, gain)
            acts, weights = SCHEMES[fake.scheme]
            row_max = weight.abs().amax(2, keepdim=True).clamp_min(1e-12)  # [B, in, 1]
            if fake.smooth is None:
                g = torch.sqrt(row_max)  # equalize input channel k by g_k
            else:
                a, b = fake.smooth
                g = row_max ** b / fake.act_max[position[id(layer)]].clamp_min(1e-6)[None, :, None] ** a
            weight, x = weight / g, x * g.transpose(1, 2)
            if weights == "int8":
                weight = fake_int8_columns(weight)
            return fake.plain(layer, fake_activations(x, acts, fake.chunk), weight, gain)

        cips_model.ModulatedFC.apply_weight = apply_weight

    def restore(self) -> None:
        cips_model.ModulatedFC.apply_weight = self.plain


def psnr(raw: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of the 8-bit colours (what a PNG gets) of two raw renders."""
    return round(psnr_uint8(to_uint8(raw), to_uint8(reference)), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="training run folder or checkpoint (its EMA generator), or a model file")
    parser.add_argument("--model", type=Path, help="the same weights as an ONNX file: its int8 path as a check")
    parser.add_argument("--seeds", default="0-15")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("--chunk", type=int, default=1024, help="points per activation scale, as the CPU renders")
    parser.add_argument("--float-layers", default="",
                        help="comma-separated K: also the runtime scheme with the first K hidden layers in float")
    parser.add_argument("--calibrated", default="",
                        help="comma-separated A/B: also the runtime scheme equalized by calibrated activation ranges")
    parser.add_argument("--calibration-seeds", default="100-131",
                        help="seeds whose renders measure the activation ranges (default 100-131, apart from --seeds)")
    parser.add_argument("--out", type=Path, default=RESULTS / "int8-headroom.json")
    args = parser.parse_args()

    if Path(args.checkpoint).suffix == ".onnx":
        g, info = generator_from_onnx(args.checkpoint)
        source, images_seen = Path(args.checkpoint).name, info["images_seen"]
    else:
        loaded = load_generator(args.checkpoint)
        g, images_seen = loaded.generator, loaded.images_seen
        source = resolve_checkpoint_path(args.checkpoint).name
    mixed = {f"runtime, first {k} float": int(k) for k in args.float_layers.split(",") if k}
    smooth, calibrated = {}, {}  # name: (A, B); name: leading hidden layers left in float
    for ab in filter(None, args.calibrated.split(",")):
        for k in (0, *mixed.values()):
            name = f"runtime, calibrated {ab}" + (f", first {k} float" if k else "")
            smooth[name], calibrated[name] = tuple(float(v) for v in ab.split("/")), k
    schemes = {**{name: 0 for name in SCHEMES}, **mixed, **calibrated}  # name: leading hidden layers left in float
    points = region_grid(*FULL_FRAME, args.size, args.size)  # the pixel centres a render uses
    coords = torch.from_numpy(points)[None]
    seeds = parse_seeds([args.seeds])
    onnx_int8 = None
    if args.model is not None:
        fp32, int8 = CIPSModel(args.model, device="cpu"), CIPSModel(args.model, device="cpu", precision="int8")
        onnx_int8 = []
    fake = FakeQuant(g, args.chunk)
    per_seed = {name: [] for name in schemes}
    try:
        with torch.no_grad():
            if smooth:
                fake.calibrating = True
                for seed in parse_seeds([args.calibration_seeds]):
                    g(coords, torch.from_numpy(latent_for_seed(seed, g.config.style_dim))[None])
                fake.calibrating = False
            for seed in seeds:
                z = latent_for_seed(seed, g.config.style_dim)

                def render(scheme: str | None) -> np.ndarray:
                    fake.scheme = None if scheme is None else scheme if scheme in SCHEMES else "runtime"
                    fake.float_layers = schemes.get(scheme, 0)
                    fake.smooth = smooth.get(scheme)
                    return g(coords, torch.from_numpy(z)[None])[0].numpy()

                reference = render(None)
                for name in schemes:
                    per_seed[name].append(psnr(render(name), reference))
                fake.scheme = None
                if onnx_int8 is not None:
                    onnx_int8.append(psnr(render_points(int8, z, points, chunk=args.chunk)[0],
                                          render_points(fp32, z, points, chunk=args.chunk)[0]))
                print(seed, {name: v[-1] for name, v in per_seed.items()},
                      "" if onnx_int8 is None else f"onnx int8 {onnx_int8[-1]}", flush=True)
    finally:
        fake.restore()
    summary = {name: {"min": min(v), "median": float(np.median(v)), "per_seed": v} for name, v in per_seed.items()}
    if onnx_int8 is not None:
        summary[f"onnx int8 (the file's own path, {int8.provider})"] = {
            "min": min(onnx_int8), "median": float(np.median(onnx_int8)), "per_seed": onnx_int8}
    result = {"benchmark": "int8 headroom: PSNR (dB) of 8-bit renders against float32, fake-quantized in PyTorch",
              "checkpoint": source, "images_seen": images_seen, "hidden_layers": len(g.layers),
              "model": None if args.model is None else args.model.name, "seeds": args.seeds, "size": args.size,
              "chunk": args.chunk, "calibration_seeds": args.calibration_seeds if smooth else None,
              # per hidden layer: its input channels' largest |value| over the calibration renders, the
              # largest channel's against the median channel's (how unequal the channels are)
              "calibrated_range_ratio": {i: round(float(a.max() / a.median()), 2)
                                         for i, a in sorted(fake.act_max.items())},
              "schemes": summary}
    for name, s in summary.items():
        print(f"{name}: min {s['min']} dB, median {s['median']:.2f} dB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
