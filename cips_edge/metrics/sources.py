"""Sample sources for evaluate(): seeds -> uint8 images, from an ONNX model (torch-free) or a torch
generator. Both use the core's seed -> latent rule and the runtime's pixel grid and 8-bit conversion,
so one seed gives the same image from a checkpoint and from its export."""
from __future__ import annotations

import math

import numpy as np

from cips_edge.core.seeds import latent_for_seed, latents_for_seeds
from cips_edge.runtime import CIPSModel, render_image, to_uint8

from .errors import MetricsError
from .evaluation import SampleSource

POINTS_PER_CALL = 65_536  # torch source: points per generator call over the whole batch (bounds memory)


def _check_truncation(truncation: float) -> float:
    if not math.isfinite(truncation):
        raise MetricsError(f"truncation must be a finite number, got {truncation}")
    return float(truncation)


def onnx_source(model: CIPSModel, size: int, truncation: float = 1.0, chunk: int | None = None) -> SampleSource:
    """Images of size x size pixels from a cips-edge ONNX model, one render_image call per seed."""
    truncation = _check_truncation(truncation)

    def source(seeds: np.ndarray) -> np.ndarray:  # int [B] -> uint8 [B, size, size, 3]
        return np.stack([to_uint8(render_image(model, latent_for_seed(int(s), model.style_dim), size, size,
                                               truncation=truncation, chunk=chunk)) for s in seeds])
    return source


def generator_source(generator, size: int, truncation: float = 1.0,
                     points_per_call: int = POINTS_PER_CALL) -> SampleSource:
    """Images of size x size pixels from a CIPSGenerator (torch; on the generator's device).

    Truncation uses the mean w over 4,096 latents of seed 0 (generator.mean_w's default), which is
    the w_avg that `cips export` stores: a checkpoint and its ONNX export agree at any psi."""
    import torch

    from cips_edge.coords import pixel_grid

    truncation = _check_truncation(truncation)
    device = next(generator.parameters()).device
    style_dim = generator.config.style_dim
    coords = pixel_grid(size, size, device)  # [N, 2], the runtime's grid (tests check the twins agree)
    w_avg = generator.mean_w() if truncation != 1.0 else None

    @torch.no_grad()
    def source(seeds: np.ndarray) -> np.ndarray:  # int [B] -> uint8 [B, size, size, 3]
        z = torch.from_numpy(latents_for_seeds(seeds, style_dim)).to(device)  # [B, S]
        rgb = np.empty((len(seeds), size * size, 3), np.float32)
        step = max(1, points_per_call // len(seeds))
        for start in range(0, size * size, step):
            piece = coords[start:start + step].expand(len(seeds), -1, -1)  # [B, n, 2]
            rgb[:, start:start + step] = generator(piece, z, truncation=truncation, w_avg=w_avg).float().cpu().numpy()
        return to_uint8(rgb).reshape(len(seeds), size, size, 3)
    return source
