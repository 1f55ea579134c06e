"""The seed rule: a seed means the same latent z on every machine, provider and stage (rendering,
evaluation, training's sample grids).

z = numpy.random.default_rng(seed).standard_normal(style_dim), cast to float32. NumPy keeps
default_rng's stream (PCG64) stable across versions and platforms, and the draw happens in numpy on
the host, so no device or provider changes it.
"""
from __future__ import annotations

import numpy as np

from .errors import UserError


def latent_for_seed(seed: int, style_dim: int) -> np.ndarray:
    """The latent of a seed: [style_dim] float32."""
    if seed < 0:
        raise UserError(f"seeds must be non-negative integers, got {seed}", params="seeds")
    return np.random.default_rng(seed).standard_normal(style_dim).astype(np.float32)


def latents_for_seeds(seeds, style_dim: int) -> np.ndarray:
    """The latents of several seeds, one row each: [len(seeds), style_dim] float32."""
    return np.stack([latent_for_seed(int(s), style_dim) for s in seeds]).reshape(-1, style_dim)
