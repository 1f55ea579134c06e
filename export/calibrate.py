"""How many of the int8 pixel graph's leading hidden layers stay float32: the fewest that keep 8-bit
renders of the calibration seeds within INT8_TARGET_DB (PSNR) of float32, measured on the model
being written.

The int8 graph quantizes each layer's input to 8 bits with one scale per call; an error made early
passes through every later layer, so the first layers cost the most quality and the last ones the
least (on the packaged emoji model, 128x128, seeds 0-15: worst seed 32.1 dB with every hidden layer
in int8, 40.3 dB with the first four of eight in float32: benchmarks/int8_headroom.py). The search
renders with the pixel graph and style weights the file will hold, in ONNX Runtime on the CPU, in
the CPU's chunks, so what it measures is what `--precision int8` renders.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import torch

from cips_edge.core.format import COORDS, EMBEDDING, RGB
from cips_edge.model import CIPSGenerator
from cips_edge.runtime.chunks import CPU_CHUNK
from cips_edge.runtime.coords import pixel_grid
from cips_edge.runtime.image import psnr_uint8, to_uint8
from cips_edge.runtime.latents import latent_for_seed

from .errors import ExportError
from .pixels import pixel_graph, shared_weights
from .style import FastStyle, StyleGraph, bias_names, biases

# the worst seed at CALIBRATION_SIDE, 1 dB above the 38 dB asked of 1024x1024 renders (the worst seed's
# PSNR moves by about half a dB between 64x64 and 1024x1024 renders of the packaged model)
INT8_TARGET_DB = 39.0
CALIBRATION_SEEDS = tuple(range(16))
CALIBRATION_SIDE = 64


def calibrate_int8(generator: CIPSGenerator, w_avg: torch.Tensor, target_db: float = INT8_TARGET_DB,
                   seeds: tuple[int, ...] = CALIBRATION_SEEDS, side: int = CALIBRATION_SIDE) -> tuple[int, float]:
    """(k, worst PSNR in dB): the fewest leading hidden layers in float32 for which the int8 pixel
    graph's 8-bit side x side renders of `seeds` (psi 1) are all within target_db of the float32
    generator's; every hidden layer when no smaller k is (then the int8 graph has no 8-bit layer).
    Searched by bisection: the worst seed improves with k (see the module docstring)."""
    config = generator.config
    shared = shared_weights(generator)
    style = StyleGraph(generator, w_avg)
    bias = biases(generator)
    extra = [bias[name] for name in bias_names(config)] + [torch.from_numpy(shared[EMBEDDING])]
    points = pixel_grid(side, side)
    with torch.no_grad():
        plains, references = [], []
        for seed in seeds:
            z = torch.from_numpy(latent_for_seed(seed, config.style_dim))[None]
            plains.append(style(z, torch.ones(1)))
            references.append(to_uint8(generator(torch.from_numpy(points)[None], z)[0].numpy()))

    def worst(k: int) -> float:
        fast = FastStyle(config, ("int8",), k)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(pixel_graph(config, shared, "int8", k).SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        fixed = {name: value for name, value in shared.items() if name in wanted}
        scores = []
        with torch.no_grad():
            for plain, reference in zip(plains, references):
                weights = dict(zip(fast.output_names(), (t[0].numpy() for t in fast(*plain, *extra))))
                feeds = {**fixed, **{name: value for name, value in weights.items() if name in wanted}}
                rgb = np.concatenate([session.run([RGB], {**feeds, COORDS: points[a:a + CPU_CHUNK]})[0]
                                      for a in range(0, len(points), CPU_CHUNK)])
                scores.append(psnr_uint8(to_uint8(rgb).reshape(reference.shape), reference))
        return min(scores)

    lo, hi = 0, len(config.layer_shapes) - 1  # the answer lies in [lo, hi]; hi = every hidden layer
    found = {}
    while lo < hi:
        mid = (lo + hi) // 2
        found[mid] = worst(mid)
        if found[mid] >= target_db:
            hi = mid
        else:
            lo = mid + 1
    return lo, found[lo] if lo in found else worst(lo)


def int8_facts(generator: CIPSGenerator, w_avg: torch.Tensor, float_layers: int | None,
               say: Callable[[str], None] = lambda line: None) -> dict:
    """What a file records of its int8 graph: the leading hidden layers it keeps in float32, calibrated
    unless given, with the worst seed's PSNR that chose them."""
    hidden = len(generator.config.layer_shapes) - 1
    if float_layers is not None:
        if not 0 <= float_layers <= hidden:
            raise ExportError(f"int8_float_layers must be in 0..{hidden} (the hidden layers), got {float_layers}")
        return {"float_layers": float_layers, "hidden_layers": hidden, "chosen": "given"}
    say(f"int8 pixel graph: finding how many of the {hidden} hidden layers stay float32 (seeds "
        f"{CALIBRATION_SEEDS[0]}-{CALIBRATION_SEEDS[-1]} at {CALIBRATION_SIDE}x{CALIBRATION_SIDE}, a few seconds to a minute)")
    k, worst = calibrate_int8(generator, w_avg)
    return {"float_layers": k, "hidden_layers": hidden,
            "chosen": f"fewest with every seed of {CALIBRATION_SEEDS[0]}-{CALIBRATION_SEEDS[-1]} at "
                      f"{CALIBRATION_SIDE}x{CALIBRATION_SIDE} within {INT8_TARGET_DB:g} dB of float32",
            "worst_psnr_db": round(worst, 2)}
