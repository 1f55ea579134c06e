"""The render benchmark's baseline (the original code's way of computing) is the same function as
our generator: otherwise its timings would compare different models."""
from __future__ import annotations

import torch

from benchmark_scripts import load
from cips_edge.core.config import preset
from cips_edge.coords import pixel_grid
from cips_edge.model import CIPSGenerator

original_style = load("original_style")


def test_original_style_baseline_matches_generator():
    torch.manual_seed(0)
    g = CIPSGenerator(preset("tiny")).eval()
    for p in g.parameters():  # move biases off their initial values so misplaced ones show
        p.data += 0.1 * torch.randn_like(p)
    z = torch.randn(2, g.config.style_dim)
    h, w = 12, 20
    with torch.no_grad():
        ours = g(pixel_grid(h, w)[None].expand(2, -1, -1), z)
    ref = original_style.render_original_style(g, z, h, w)  # [B, 3, H, W]
    ref = ref.permute(0, 2, 3, 1).reshape(2, -1, 3)
    assert float((ours - ref).norm() / ref.norm()) < 1e-5
