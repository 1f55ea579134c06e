"""The baseline the render benchmarks compare against: the same CIPSskip weights, computed the way
the paper authors' code does it (NCHW, whole image in one batch, per-layer modulation, grouped 1x1
convolutions, per-pixel noise injection with a zero weight, bias + leaky ReLU as separate passes).

Written for the benchmark only; cips-edge never renders this way.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cips_edge.model import CIPSGenerator, ModulatedFC


def _modulated_conv(m: ModulatedFC, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    batch, in_ch, height, width = x.shape
    style = m.modulation(w).view(batch, 1, in_ch, 1, 1)
    weight = m.scale * m.weight.view(1, -1, in_ch, 1, 1) * style  # [B, out, in, 1, 1]
    if m.demodulate:
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4], keepdim=True) + 1e-8)
    out_ch = weight.shape[1]
    out = F.conv2d(x.reshape(1, batch * in_ch, height, width), weight.view(batch * out_ch, in_ch, 1, 1),
                   groups=batch)
    return out.view(batch, out_ch, height, width)


def _styled_conv(m: ModulatedFC, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    out = _modulated_conv(m, x, w)
    noise = out.new_empty(out.shape[0], 1, out.shape[2], out.shape[3]).normal_()
    out = out + 0.0 * noise  # the original adds weight * noise; deterministic weights are zero
    return F.leaky_relu(out + m.bias.view(1, -1, 1, 1), 0.2) * math.sqrt(2)


@torch.no_grad()
def render_original_style(g: CIPSGenerator, z: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """z [B, S] -> raw RGB [B, 3, H, W], the original code's eval path (align_corners fixed to True)."""
    batch = z.shape[0]
    w = g.mapping(z)
    device = z.device
    xs = torch.linspace(-1, 1, width, device=device)
    ys = torch.linspace(-1, 1, height, device=device)
    coords = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), 0).unsqueeze(0).expand(batch, -1, -1, -1)
    lin = g.fourier.linear
    e_fo = torch.sin(F.conv2d(coords, lin.weight.view(-1, 2, 1, 1), lin.bias))
    table = g.embedding.table.unsqueeze(0).expand(batch, -1, -1, -1)
    e_co = F.grid_sample(table, coords.permute(0, 2, 3, 1).contiguous(), mode="bilinear",
                         padding_mode="border", align_corners=True)
    x = _styled_conv(g.input_layer, torch.cat([e_fo, e_co], 1), w)
    rgb = 0
    every = g.config.to_rgb_every
    for i, layer in enumerate(g.layers):
        x = _styled_conv(layer, x, w)
        if (i + 1) % every == 0:
            fc = g.to_rgbs[(i + 1) // every - 1].fc
            rgb = _modulated_conv(fc, x, w) + fc.bias.view(1, 3, 1, 1) + rgb
    return rgb
